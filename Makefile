# wavae-edge: the front door. CI calls the same targets a person types.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
WAVAE   := $(VENV)/bin/wavae
STAMP   := $(VENV)/.installed
APT_PKGS := gcc libasound2-dev alsa-utils libsndfile1 fluidsynth fluid-soundfont-gm \
            espeak-ng flite sox jackd2 libasound2-plugins systemd chromium
# what the device itself needs: a compiler and the ALSA headers for pyalsaaudio, aplay/arecord -L (named in
# the audio errors), libsndfile, venv, systemd
DEVICE_APT_PKGS := gcc libasound2-dev alsa-utils libsndfile1 python3-venv systemd
DATA    ?= data/corpus
RUN     ?= runs/demo

.PHONY: help install apt test data demo bench clean install-device

help:
	@echo "make install   create .venv, install wavae with its dependencies (and apt packages as root)"
	@echo "make test      install what is missing, then run the test suite"
	@echo "make data      build the offline training corpus in $(DATA)"
	@echo "make demo      corpus -> train -> export -> run the instrument over a file"
	@echo "make bench     run the benchmarks in benchmarks/"
	@echo "make install-device [DESTDIR=dir] [JETSON=1]"
	@echo "               the instrument as a systemd service: venv in $(PREFIX) (no torch), unit, user,"
	@echo "               udev rules, $(SYSCONFDIR)/wavae/device.toml; enabled when run as root on a systemd host"

# System packages: installed when root, otherwise the exact command is printed.
apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing system packages: $$missing"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
	  echo "missing system packages; run:  sudo apt-get install -y $$missing" >&2; exit 1; \
	fi

$(STAMP): pyproject.toml | apt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch is pinned to the CPU build; torchaudio/torchvision are never installed
	$(VPY) -m pip install -q -e '.[train,test,alsa]'
	touch $(STAMP)

install: apt $(STAMP)

# pytest exit code 5 means no test ran: a failure, never a silent pass
test: install
	@$(VPY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

data: install
	$(WAVAE) data --out $(DATA)

demo: install
	$(VPY) -m wavae.demo --data $(DATA) --run $(RUN)

bench: install
	$(VPY) benchmarks/run_all.py

# ----------------------------------------------------------------------------
# install-device: the instrument as an unattended systemd service (systemd/).
# GNU conventions: DESTDIR stages the whole tree into a folder (packaging, tests);
# the paths inside the installed files are always the final ones (PREFIX, ...).
# ----------------------------------------------------------------------------
DESTDIR      ?=
PREFIX       ?= /opt/wavae
SYSCONFDIR   ?= /etc
STATEDIR     ?= /var/lib/wavae
LIBDIR       ?= /usr/lib
UNITDIR      ?= $(LIBDIR)/systemd/system
SYSUSERSDIR  ?= $(LIBDIR)/sysusers.d
TMPFILESDIR  ?= $(LIBDIR)/tmpfiles.d
UDEVRULESDIR ?= $(LIBDIR)/udev/rules.d
# `wavae status` from any shell: a link to the venv's console script
BINDIR       ?= /usr/local/bin
JETSON       ?=
DEVICE_CONFIG ?= $(if $(JETSON),jetson-orin-nano,pi4-usb)
# Extra pip flags for the device venv.  --no-deps installs the project alone:
# a staging test checks the layout and the unit in seconds, not the wheels.
PIP_DEVICE_FLAGS ?=
# DEVICE_VENV=no skips the venv altogether (tests of the system files alone)
DEVICE_VENV  ?= yes
# On a Jetson, TensorRT and pycuda come from JetPack's apt packages, outside any venv
DEVICE_VENV_FLAGS ?= $(if $(JETSON),--system-site-packages,)
# alsa: pyalsaaudio; panel: gpiod, spidev, python-osc, mido, python-rtmidi, which the example configs'
# [panel], [osc] and [midi] sections need ([osc] refuses to start without python-osc)
DEVICE_EXTRAS ?= alsa,panel
VENV_DEST    := $(DESTDIR)$(PREFIX)

install-device:
	@$(MAKE) --no-print-directory apt APT_PKGS="$(DEVICE_APT_PKGS)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "install-device writes to $(PREFIX), $(SYSCONFDIR) and $(LIBDIR): run it as root, or stage with DESTDIR=dir" >&2; exit 1; fi
	# the code: a venv with the device side only (no torch, no training extras)
	@if [ "$(DEVICE_VENV)" != no ]; then set -ex; \
	  test -x $(VENV_DEST)/bin/python || $(PY) -m venv $(DEVICE_VENV_FLAGS) $(VENV_DEST); \
	  $(VENV_DEST)/bin/python -m pip install -q --disable-pip-version-check $(PIP_DEVICE_FLAGS) '.[$(DEVICE_EXTRAS)]'; \
	fi
	# staged: the scripts' #! lines name the staging folder; make them name the final one
	@if [ -n "$(DESTDIR)" ] && [ -d $(VENV_DEST)/bin ]; then \
	  grep -lIr -- '$(VENV_DEST)' $(VENV_DEST)/bin | xargs -r sed -i 's|$(VENV_DEST)|$(PREFIX)|g'; fi
	@if [ "$(DEVICE_VENV)" != no ]; then set -ex; \
	  install -d $(DESTDIR)$(BINDIR); ln -sfn $(PREFIX)/bin/wavae $(DESTDIR)$(BINDIR)/wavae; fi
	# the units and system integration; paths rewritten when PREFIX/SYSCONFDIR differ from the defaults
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/opt/wavae|$(PREFIX)|g' -e 's|/etc/wavae|$(SYSCONFDIR)/wavae|g' systemd/wavae.service \
	  > $(DESTDIR)$(UNITDIR)/wavae.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/wavae.service
	@if [ -n "$(JETSON)" ]; then \
	  install -D -m 0644 systemd/wavae.service.d/jetson.conf $(DESTDIR)$(UNITDIR)/wavae.service.d/jetson.conf; fi
	install -D -m 0644 systemd/wavae.sysusers $(DESTDIR)$(SYSUSERSDIR)/wavae.conf
	install -D -m 0644 systemd/wavae.tmpfiles $(DESTDIR)$(TMPFILESDIR)/wavae.conf
	install -D -m 0644 systemd/60-wavae.rules $(DESTDIR)$(UDEVRULESDIR)/60-wavae.rules
	# the config is the technician's: an existing one is never overwritten
	install -d $(DESTDIR)$(SYSCONFDIR)/wavae
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/wavae/device.toml ]; then \
	  echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/wavae/device.toml"; \
	else install -m 0644 device/configs/$(DEVICE_CONFIG).toml $(DESTDIR)$(SYSCONFDIR)/wavae/device.toml; fi
	install -d -m 0750 $(DESTDIR)$(STATEDIR)
	# for real, as root, on a host whose PID 1 is systemd (sd_booted: /run/systemd/system): create the user,
	# the state dir and the device permissions now, and enable the unit for the next boot
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && [ -d /run/systemd/system ]; then \
	  set -e; \
	  systemd-sysusers $(SYSUSERSDIR)/wavae.conf; \
	  systemd-tmpfiles --create $(TMPFILESDIR)/wavae.conf; \
	  udevadm control --reload-rules && udevadm trigger --subsystem-match=gpio --subsystem-match=spidev || true; \
	  systemctl daemon-reload; \
	  systemctl enable wavae.service; \
	  systemctl try-restart wavae.service; \
	  echo "wavae.service enabled (an upgrade restarted it): put a bundle where $(SYSCONFDIR)/wavae/device.toml says, then: systemctl start wavae"; \
	else \
	  echo "staged or not a systemd host: wavae.service not enabled (run as root without DESTDIR on the device)"; \
	fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
