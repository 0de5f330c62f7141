# wavae-edge: the front door. CI calls the same targets a person types.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
WAVAE   := $(VENV)/bin/wavae
STAMP   := $(VENV)/.installed
APT_PKGS := gcc libasound2-dev alsa-utils libsndfile1 fluidsynth fluid-soundfont-gm \
            espeak-ng sox jackd2 libasound2-plugins chromium
DATA    ?= data/corpus
RUN     ?= runs/demo

.PHONY: help install apt test data demo bench clean

help:
	@echo "make install   create .venv, install wavae with its dependencies (and apt packages as root)"
	@echo "make test      install what is missing, then run the test suite"
	@echo "make data      build the offline training corpus in $(DATA)"
	@echo "make demo      corpus -> train -> export -> run the instrument over a file"
	@echo "make bench     run the benchmarks in benchmarks/"

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

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
