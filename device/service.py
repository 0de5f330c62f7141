"""The service thread: systemd notifications, the watchdog, the status file and SIGHUP reloads.

The live loop runs exactly as from a shell; ``Service`` watches it from one
ordinary thread (SCHED_OTHER, even when the audio thread is realtime) that
only reads the loop's counters:

- ``is_ready()`` turns true once the first model block has been played:
  then ``READY=1`` (``wavae.device.notify``), and the watchdog starts.
- ``progress()`` is a counter the audio loop moves (periods written, device
  reopen attempts); the watchdog pings only when it moved.
- ``facts()`` gives the loop's counters for the status file and ``STATUS=``.
- SIGHUP sets a flag (the handler does nothing else); the thread sends
  ``RELOADING=1``, calls ``reload()`` (``wavae.device.reload``: config,
  mapping file and bundle, applied while the audio plays), logs what it did
  or why the new config was refused (the old one keeps running), and sends
  ``READY=1``.  While a reload waits for a bundle switch (``pause``), the
  thread keeps feeding the watchdog: the audio goes on meanwhile.
- ``stop()`` sends ``STOPPING=1``, writes the final status and joins.

Cadence: the thread wakes every ``TICK_S`` until READY=1, then every
``IDLE_TICK_S``; the status file is rewritten every
``STATUS_FILE_EVERY_S`` and ``STATUS=`` sent every ``STATUS_NOTIFY_EVERY_S``.
Nothing here runs on the audio path or takes a lock the audio path takes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from wavae.errors import WavaeError

from .notify import Notifier, Watchdog, watchdog_interval
from .realtime import ordinary_priority
from .reload import ConfigReloader
from .status import (
    STATUS_NAME,
    STATUS_VERSION,
    ProcessProbe,
    StatusWriter,
    count_start,
    process_started_at,
    runtime_dir,
)

log = logging.getLogger("wavae.device.service")

TICK_S = 0.02  # until READY=1: it is sent at most this late
IDLE_TICK_S = 0.25  # then: how late a SIGHUP or a watchdog check may be seen (each wake takes the GIL)
STATUS_FILE_EVERY_S = 1.0
STATUS_NOTIFY_EVERY_S = 5.0


def status_line(s: Mapping[str, Any]) -> str:
    """One line for ``systemctl status``: model, preset, xruns, latency."""
    return (
        f"{s.get('state')}: {s.get('model')} ({s.get('preset')}); {s.get('periods')} periods; "
        f"xruns {s.get('xruns')} ({s.get('xruns_unrecovered')} unrecovered); "
        f"latency {s.get('latency_ms')} ms; cpu {s.get('cpu_percent')} %"
    )


class Service:
    """Watches a running loop for systemd and the technician (see the module docstring).

    ``info``: what does not change during the run (backend, config, threading, ...); ``facts()``
    what does (counters, and the model, which a bundle switch changes).
    ``status_dir``: where ``status.json`` goes; None picks ``runtime_dir()``
    (``$RUNTIME_DIRECTORY``, set by systemd), False writes none.
    """

    def __init__(
        self,
        *,
        progress: Callable[[], int],
        is_ready: Callable[[], bool],
        facts: Callable[[], dict[str, Any]],
        info: dict[str, Any],
        reload: Callable[[], str] | None = None,
        notifier: Notifier | None = None,
        status_dir: Path | None | bool = None,
        environ: Mapping[str, str] | None = None,
    ):
        env = os.environ if environ is None else environ
        self.progress, self.is_ready, self.facts, self.info = progress, is_ready, facts, dict(info)
        self.reload_fn = reload
        self.notifier = notifier if notifier is not None else Notifier(environ=env)
        self.watchdog_s = watchdog_interval(env)
        self.watchdog: Watchdog | None = None
        folder = runtime_dir(env) if status_dir is None else (None if status_dir is False else Path(status_dir))
        self.status_writer = StatusWriter(folder / STATUS_NAME) if folder is not None else None
        self.restarts = 0
        if folder is not None:
            try:
                self.restarts = count_start(folder)
            except OSError as e:
                log.warning("cannot count starts in %s: %s", folder, e)
        self.probe = ProcessProbe()
        self.state = "starting"
        self.started_at = process_started_at()
        self.ready_at: float | None = None  # seconds from the process start to READY=1
        self.reloads = 0
        self.last_reload: str | None = None
        self._reload_pending = False  # set by the SIGHUP handler: a plain store, no lock on the audio thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_hup: Any = None

    # -- life cycle (main thread) ---------------------------------------------
    @property
    def active(self) -> bool:
        """Someone to tell: systemd (``NOTIFY_SOCKET``) or a status folder (``RUNTIME_DIRECTORY``)."""
        return self.notifier.enabled or self.status_writer is not None

    def start(self) -> "Service":
        """Start the thread and take SIGHUP, when ``active``; a run from a shell keeps neither:
        no thread shares the GIL with the audio loop, and SIGHUP (the terminal closing) ends it as before."""
        if not self.active:
            return self
        if threading.current_thread() is threading.main_thread() and self.reload_fn is not None:
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_hup)
        self._thread = threading.Thread(target=self._run, name="wavae-service", daemon=True)
        self._thread.start()
        return self

    def _on_hup(self, signum, frame) -> None:  # runs on the main (audio) thread between bytecodes: one store
        self._reload_pending = True

    def stop(self, status: str = "stopping") -> None:
        """STOPPING=1 first (systemd shows "deactivating"), then the last status, then join."""
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        self.state = "stopping"
        self.notifier.stopping(status)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.state = "stopped"
        if self.active:
            self._write_status()
        self.notifier.close()

    # -- the thread -------------------------------------------------------------
    def _run(self) -> None:
        ordinary_priority()  # threads inherit SCHED_FIFO from the audio thread: this one must not keep it
        next_file = next_notify = time.monotonic()
        while not self._stop.wait(TICK_S if self.state == "starting" else IDLE_TICK_S):
            now = time.monotonic()
            if self.state == "starting" and self.is_ready():
                self._became_ready()
            if self.watchdog is not None:
                self.watchdog.poll(now)
            if self._reload_pending:
                self._reload_pending = False  # before reading the file: a SIGHUP from now on reloads again
                self._do_reload()
            if now >= next_file:
                next_file = now + STATUS_FILE_EVERY_S
                status = self._write_status()
                if now >= next_notify:
                    next_notify = now + STATUS_NOTIFY_EVERY_S
                    self.notifier.status(status_line(status))

    def pause(self, seconds: float) -> None:
        """Wait on the service thread while feeding the watchdog (a reload waiting for a bundle switch:
        the audio goes on meanwhile, and the watchdog pings as long as it does)."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self.watchdog is not None:
                self.watchdog.poll(now)
            if now >= end:
                return
            time.sleep(min(TICK_S, end - now))

    def _became_ready(self) -> None:
        self.state = "running"
        self.ready_at = time.time() - self.started_at
        # counters only: the process probe (/proc, /sys reads) waits for the next status write,
        # so the first periods of audio do not share the GIL with it
        self.notifier.ready(status_line({"state": self.state, **self.info, **self.facts()}))
        log.info("ready: first model block played, %.2f s after the process started", self.ready_at)
        if self.watchdog_s is not None:
            self.watchdog = Watchdog(self.notifier, self.watchdog_s, self.progress)

    def _do_reload(self) -> None:
        was = self.state
        self.state = "reloading"
        self.notifier.reloading()
        try:
            what = self.reload_fn() if self.reload_fn is not None else "nothing to reload"
        except WavaeError as e:
            self.last_reload = f"refused: {e}; still running with the previous config"
            log.error("reload refused: %s; still running with the previous config", e)
        except Exception as e:  # a bug or an OS error must not end this thread: the watchdog would starve
            self.last_reload = f"failed: {type(e).__name__}: {e}; the audio plays on (`systemctl restart wavae`)"
            log.exception("reload failed; the audio plays on")
        else:
            self.last_reload = f"done: {what}"
            log.info("reload: %s", what)
        self.reloads += 1
        self.state = was
        if was == "running":
            self.notifier.ready(f"reload {self.last_reload}")
        self._write_status()

    # -- status ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        s: dict[str, Any] = {
            "version": STATUS_VERSION,
            "pid": os.getpid(),
            "state": self.state,
            "written_at": now,
            "started_at": self.started_at,
            "uptime_s": round(now - self.started_at, 1),
            "restarts": self.restarts,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
            "ready_after_s": round(self.ready_at, 3) if self.ready_at is not None else None,
            "watchdog": {"interval_s": self.watchdog_s, "pings": self.watchdog.pings if self.watchdog else 0,
                         "missed": self.watchdog.missed if self.watchdog else 0},
        }
        s.update(self.info)
        s.update(self.facts())
        s.update(self.probe.sample())
        return s

    def _write_status(self) -> dict[str, Any]:
        status = self.snapshot()
        if self.status_writer is not None:
            self.status_writer.write(status)
        return status


def watch_live_loop(
    *,
    cfg,
    load: Callable[[], Any],
    inputs,
    switcher,
    duplex,
    processor,
    engine,
    latency: Mapping[str, Any],
    realtime: bool,
    memory_locked: bool,
) -> Service:
    """A started ``Service`` over the parts of the live loop (``wavae.device.live``).

    Ready: the engine has run a model block and the period that carries its
    first output sample (``signal_delay + worker`` frames into the stream) has
    been written.  Progress: periods written that were not late (a hung
    inference worker leaves only late periods) plus device reopen attempts (a
    lost device is a loop that is alive and retrying).  The model, its preset
    and precision are the bundle playing now (``switcher``: a live switch or a
    reload may change it).  SIGHUP: a ``ConfigReloader`` over ``inputs``
    (``wavae.device.inputs.Inputs``) and ``switcher``.
    """
    period = cfg.audio.period_size
    first_period = int(latency["signal_delay_frames"] + latency["worker_frames"]) // period + 1
    ms_per_frame = 1000.0 / cfg.audio.rate

    def progress() -> int:
        st = duplex.stats
        return st.periods - processor.late_periods + st.reopen_attempts + st.reopens

    def is_ready() -> bool:
        return engine.stats["blocks"] > 0 and duplex.stats.periods >= first_period

    def facts() -> dict[str, Any]:
        st = duplex.stats
        # the engine's and the worker's delays are fixed by construction (for the bundle playing: the
        # switcher redoes the latency report); the I/O share is measured by the loop
        fixed_frames = latency["signal_delay_frames"] + latency["worker_frames"]
        measured = round((fixed_frames + st.io_distance) * ms_per_frame, 3) if st.io_distance else None
        return {
            **bundle_facts(switcher.current.bundle),
            "audio_s": round(st.frames / cfg.audio.rate, 1),
            "periods": st.periods,
            "xruns": st.xruns,
            "xruns_unrecovered": st.xruns_unrecovered,
            "late_periods": processor.late_periods,
            "device_lost": st.device_lost,
            "reopens": st.reopens,
            "nan_resets": engine.stats["nan_resets"],
            "realigns": st.realigns,
            "latency_ms": latency["total_ms"],
            "latency_measured_ms": measured,  # latency_ms with the I/O share as the loop last measured it
        }

    def apply_service(service_cfg) -> None:
        duplex.service = service_cfg  # a frozen dataclass: the loop reads the new one at its next use

    info = {
        "backend": cfg.bundle.backend,
        "config": cfg.source,
        "threading": cfg.audio.threading,
        "realtime": realtime,
        "memory_locked": memory_locked,
    }
    reloader = ConfigReloader(load, cfg, inputs.actions, apply_service, inputs=inputs, switcher=switcher)
    service = Service(progress=progress, is_ready=is_ready, facts=facts, info=info, reload=reloader)
    reloader.pause = service.pause  # waiting for a bundle switch keeps the watchdog fed
    if service.watchdog_s is not None:
        s = cfg.service
        for key, value in (("io_timeout_s", s.io_timeout_s), ("reopen_interval_s", s.reopen_interval_s)):
            if value >= service.watchdog_s:
                log.warning(
                    "service.%s = %g s is not below half the watchdog period (%g s): while the audio device is "
                    "lost the watchdog may restart the service; lower it or raise WatchdogSec=",
                    key, value, service.watchdog_s,
                )
    return service.start()


def bundle_facts(bundle) -> dict[str, Any]:
    """What the status says of a bundle: its name (the model), the training preset, the precision."""
    source = bundle.manifest.get("source") if isinstance(bundle.manifest.get("source"), dict) else {}
    return {"model": bundle.path.name, "preset": source.get("preset"), "precision": bundle.precision}
