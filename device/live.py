"""The live instrument: device config -> instrument -> processing chain -> ALSA duplex.

``wavae run --config device.toml [--bundle B] [--capture NAME] [--playback NAME]
[--seconds S] [--controls script.json]`` calls ``main_live``, in four steps:
open (the config, then the PCMs, so a missing one fails before the model
loads), build (the instrument of ``wavae.device.instrument``, then the chain
between it and the PCMs: control script, fault injection, timing, threading),
run and summarize.  It runs until
``--seconds`` of audio have gone through (device time: frames processed, plus
wall time while the device is lost) or until SIGINT/SIGTERM, then drains the
playback queue, closes the PCMs, logs the xrun and reopen counts and prints
them as one JSON line on stdout (``{"event": "live_summary", ...}``).

Threading (``audio.threading``)
-------------------------------
The engine computes in bursts: it gathers device periods until it holds one
model block (``bundle.block`` samples at the model rate, e.g. 512 at 24 kHz =
1024 frames at 48 kHz = 4 periods of 256), then runs the encoder and decoder on
that block in one go.  The two modes differ in who waits for that burst.

``inline`` (the default): the audio loop reads a period, runs the engine on it
and writes the result, all on one thread.

- Latency: the engine's signal delay + the playback pre-fill
  (``prefill_periods x period_size``); nothing added.  The capture period is
  inside the pre-fill offset, not on top of it (see ``wavae.device.audio_io``).
- Dropout risk: a period that runs a model block takes the whole block's
  compute time, and the slack is what is left of the pre-fill when a captured
  period is complete: ``(prefill_periods - 1) x period_size`` frames, one
  period at the defaults (the JACK dummy backend is one period more lenient
  than a DMA-driven card).  If one block's compute (or any stall) exceeds it, the
  streams xrun: both are restarted with the pre-fill (the latency stays what
  it was), an audible gap of a few periods, counted and logged.  Keep one
  block's compute below ``(prefill_periods - 1) x period_size`` frames, raise
  ``prefill_periods`` (each one adds a period of latency), or raise
  ``period_size`` to the block.

``worker``: like the seed's Pd external, inference runs on its own thread one
model block behind the audio.  The audio thread hands each period to a worker
thread (a non-blocking queue put) and plays the worker's output for the period
``delay`` periods earlier, ``delay`` being one model block rounded up to whole
periods (4 periods of 256 for a 1024-frame block).

- Latency: one extra model block (``delay x period_size`` frames), on top of
  the engine's signal delay and the pre-fill.
- Dropout risk: the audio thread never waits for inference, so compute never
  stalls the ALSA streams; a block's compute may take up to one block of time
  (instead of the pre-fill), only the average real-time factor must stay
  below 1.  An output period that is not ready when due plays silence
  (``late_periods`` counts them): a gap of a few periods instead of an xrun and
  a resync.  The audio thread copies a period in and out, tests a tag and
  does a non-blocking queue put; it never waits on a lock held by the worker.

Both modes share one CPython interpreter with any other thread of the process
(the worker, later the GPIO/OSC/MIDI inputs).  onnxruntime releases the GIL
while it computes; Python and numpy glue do not.  While the loop runs the GIL
switch interval is lowered from 5 ms to 1 ms, so a thread busy in Python holds
the audio thread off for at most about 1 ms at a time instead of about a period.
``[service] realtime_priority`` puts the audio thread under SCHED_FIFO so that
other processes cannot starve it.  ``Instrument.open`` sets it before it makes
the backend, so the threads created after it inherit it: onnxruntime's
intra-op pool (``bundle.threads > 1``) and the worker.

Measured figures for both are in docs/device-live.md.  The controls are read by
the engine as one snapshot per model block (``wavae.device.controls``).  A
control script (``--controls``) is applied by audio frames processed, exactly
as in file mode, so a live run through a test PCM reproduces a file render;
but it never runs on the audio path: ``ScriptSchedule`` replays it once before
the loop (validation, the writers' lock, new snapshots) into a list of ready
snapshots, and the audio path only stores the next one into
``Controls.snapshot`` when its period comes, a reference store: no lock,
nothing built.  While a script plays it owns the controls: a change made by
another writer is replaced at the script's next event (``script_overrides`` in
the summary counts the events that did so).

Fault injection (``[debug]``, off by default; for tests and measurements):
``stall_ms`` / ``stall_at_s`` sleep once inside the processing step once that
much audio has been processed, and again every ``stall_every_s`` of audio after
that when it is set; ``slow_ms`` / ``slow_every`` add a delay to every
Nth period.  In ``inline`` mode that delays the audio loop (xruns); in
``worker`` mode it delays the worker (late periods).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wavae.errors import WavaeError

from .audio_io import AlsaDuplex, IOStats
from .config import DebugConfig, DeviceConfig, DeviceConfigError, load_config, parse_config, with_overrides
from .controls import Controls, parse_set
from .inputs import live_status, start_inputs
from .instrument import Instrument, InstrumentSpec, timing_line
from .profile import write_report
from .realtime import lock_memory
from .report import prepare_dir
from .service import watch_live_loop
from .switch import BundleSwitcher, fade_periods
from .timing import BlockRecorder, TimedStep

log = logging.getLogger("wavae.device.live")

Process = Callable[[np.ndarray], np.ndarray]
SWITCH_INTERVAL_S = 0.001  # the GIL hand-over interval while the loop runs (CPython's default: 5 ms)


class WorkerError(WavaeError, RuntimeError):
    """The inference worker thread failed; the message carries its error."""


# ----------------------------------------------------------------------------
# the processing chain: control script -> fault injection -> engine
# ----------------------------------------------------------------------------
class ScriptSchedule:
    """A control script replayed ahead of time into ready snapshots (see the module docstring).

    ``ControlScript.apply`` is run here, period by period, on a scratch copy of
    ``controls`` that starts from its current snapshot (so ``[controls]`` and
    ``--set`` must be applied first): the snapshot after each period in which
    events applied is kept, with the audio frame of that period.  ``advance``
    installs them on the audio path; it never takes a lock or builds anything.
    """

    def __init__(self, script, controls, rate: int, period: int):
        scratch = Controls(controls.latent_dim)
        scratch.snapshot = controls.snapshot
        frames: list[int] = []
        snaps: list = []
        applied, frame, n_events = 0, 0, len(script.events)
        script.rewind()
        while applied < n_events:
            # jump to a period at or just before the one holding the next event
            due = int(script.events[applied].t * rate) // period * period
            frame = max(frame, due - period)
            n = script.apply(scratch, frame, period, rate)
            if n:
                applied += n
                frames.append(frame)
                snaps.append(scratch.snapshot)
            frame += period
        script.rewind()
        self.controls = controls
        self.frames, self.snapshots = frames, snaps
        self._next = 0
        self._last = controls.snapshot  # what the schedule last installed (or found)
        self.overrides = 0  # events that replaced a change made by another writer

    def advance(self, frame: int) -> None:
        """Install the snapshot due for the period starting at audio frame ``frame`` (audio path).

        ``controls`` is None once a bundle switch brought controls of another latent
        size: the script's snapshots do not fit them, and it stops."""
        i = self._next
        c = self.controls
        if c is not None and i < len(self.frames) and self.frames[i] <= frame:
            if c.snapshot is not self._last:
                self.overrides += 1
            self._last = snap = self.snapshots[i]
            c.snapshot = snap
            self._next = i + 1


class EngineStep:
    """One period through the engine, with the control script applied by frames processed,
    and a live bundle switch crossfaded in at a period boundary.

    A switch (``wavae.device.switch``): the switcher builds and warms up the new
    bundle's engine on its own thread, then hands it over by storing an
    ``Incoming`` in ``incoming``, one reference store.  At the start of the next
    period this step takes it and runs both engines on every period from then
    on: for ``Incoming.prime_periods`` the new one only listens (its output
    FIFO's pre-fill and its fade-in pass, the old one plays alone), then for
    ``fade_periods`` the output is the equal-power crossfade
    ``cos(pi t / 2) old + sin(pi t / 2) new``, ``t`` rising sample by sample
    from 0 to 1.  After the last of them the new engine is ``engine``, the old
    one is left in ``retired`` for the switcher to close, and ``switches``
    counts one more.  The new engine starts from reset state at the period it
    is taken, so from then on its output is exactly what it would give, fresh,
    on the input from that period: the tests check it sample by sample.

    Nothing on this path allocates or waits: the second output buffer and the
    gain curves are made here, the hand-over is attribute loads and stores,
    and no engine is freed here (``retired`` keeps the old one alive until the
    switcher drops it).  ``fade_periods = 0`` (file mode) allows no switching.
    """

    def __init__(self, engine, controls=None, script=None, rate: int = 48000, period: int = 256,
                 fade_periods: int = 0):
        self.engine, self.controls, self.script = engine, controls, script
        self.rate, self.period = rate, period
        self.frame = 0  # audio frames processed so far (the control script's clock)
        self.schedule = ScriptSchedule(script, controls, rate, period) if script is not None else None
        self._out = np.zeros((period, engine.channels_out), np.float32)
        # the bundle switch: written by the switcher (incoming, retired: None), read and written here
        self.incoming = None  # an Incoming handed over by the switcher
        self.retired = None  # the engine the last switch faded out, until the switcher closes it
        self.switches = 0  # switches completed
        self.fade_periods = fade_periods
        self._taken = None  # the Incoming last taken
        self._new = None  # the engine coming in, while a switch runs
        self._k = 0  # periods since it was taken
        self._prime = 0
        self._out_new = np.zeros((period, engine.channels_out), np.float32)
        # per-channel views made once: a ufunc broadcasting a [period, 1] gain over channels buffers a period
        self._chans = [(self._out[:, c], self._out_new[:, c]) for c in range(engine.channels_out)]
        t = (np.arange(1, fade_periods * period + 1, dtype=np.float64) / max(1, fade_periods * period))
        self._gain_in = np.sin(0.5 * np.pi * t).astype(np.float32).reshape(fade_periods, period)
        self._gain_out = np.cos(0.5 * np.pi * t).astype(np.float32).reshape(fade_periods, period)
        if fade_periods:
            self._gain_out[-1, -1] = 0.0  # cos(pi / 2) is 6e-17, not 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.schedule is not None:
            self.schedule.advance(self.frame)
        inc = self.incoming
        if inc is not self._taken and self.fade_periods:
            self._take(inc)
        y = self.engine.process(x, out=self._out)
        new = self._new
        if new is not None:
            new.process(x, out=self._out_new)
            k = self._k - self._prime
            self._k += 1
            if k >= 0:
                g_out, g_in = self._gain_out[k], self._gain_in[k]
                for yc, zc in self._chans:  # y is self._out, z self._out_new: the engines write there
                    np.multiply(yc, g_out, out=yc)
                    np.multiply(zc, g_in, out=zc)
                    yc += zc
                if k + 1 == self.fade_periods:
                    self._finish()
        self.frame += self.period
        return y

    def _take(self, inc) -> None:
        """Start the switch to ``inc.engine`` at this period (the audio path: stores only)."""
        self._taken = inc
        if self._new is not None:  # the switcher hands one over at a time; never lose an engine if not
            self._finish()
        self._new, self._k, self._prime = inc.engine, 0, inc.prime_periods
        if self.schedule is not None:
            self.schedule.controls = inc.script_controls  # None: the script cannot drive this bundle

    def _finish(self) -> None:
        self.retired = self.engine
        self.engine = self._new
        self._new = None
        self.switches += 1

    @property
    def switching(self) -> bool:
        return self._new is not None

    def reset(self) -> None:
        if self._new is not None:  # after a device reopen nothing is left to crossfade: the new one plays
            self._finish()
        self.engine.reset()


class FaultInjector:
    """``[debug]`` delays inside the processing step (see the module docstring)."""

    def __init__(self, step: Process, debug: DebugConfig, rate: int, period: int):
        self.step, self.debug, self.period = step, debug, period
        self._stall_frame = int(round(debug.stall_at_s * rate)) if debug.stall_ms > 0 else None
        self._stall_every = int(round(debug.stall_every_s * rate))  # 0: the stall happens once
        self._frame = 0
        self._n = 0
        self.stalls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        d = self.debug
        if self._stall_frame is not None and self._frame >= self._stall_frame:
            self._stall_frame = self._stall_frame + self._stall_every if self._stall_every else None
            self.stalls += 1
            log.warning("debug: stalling the processing step for %g ms", d.stall_ms)
            time.sleep(d.stall_ms / 1000.0)
        self._n += 1
        if d.slow_every and self._n % d.slow_every == 0:
            time.sleep(d.slow_ms / 1000.0)
        self._frame += self.period
        return self.step(x)

    def reset(self) -> None:
        reset = getattr(self.step, "reset", None)
        if reset is not None:
            reset()


class InlineProcessor:
    """Inference inside the audio loop."""

    extra_latency_frames = 0

    def __init__(self, step: Process):
        self.step = step
        self.late_periods = 0
        self.dropped_periods = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.step(x)

    def reset(self) -> None:
        reset = getattr(self.step, "reset", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        pass


class WorkerProcessor:
    """Inference on a worker thread, one model block behind the audio, like the seed's Pd external.

    The audio thread (``__call__``) copies period k into a ring slot, hands its
    index to the worker (a non-blocking queue put) and plays the worker's output
    for period k - ``delay`` from the output ring.  The worker runs the engine
    period by period, in order; the engine's block compute lands on the period
    that completes a block, and has ``delay`` periods (one model block) to
    finish before its first output period is due.  If that output is not there
    in time, the audio thread plays silence for it (``late_periods`` counts the
    periods) and never waits.  Input slots are taken round-robin per hand-over,
    so none is rewritten while the worker may still read it; when the worker is
    a whole ring behind, new input periods are dropped (``dropped_periods``)
    instead.  Output slots are indexed by period and tagged with the period they
    hold, so a late result is never played in the wrong place.  Every slot has
    one writer at a time and the shared counters are plain attributes, atomic
    under the GIL: no lock.

    ``reset()`` (after a device reopen) starts over from the next period: the
    periods handed over before it are skipped by the worker, their outputs are
    never played (the first ``delay`` periods after it are silence, as at the
    start), and the engine is reset before the first period after it.
    """

    def __init__(self, step: Process, period: int, delay: int, channels_in: int, channels_out: int):
        if delay < 1:
            raise ValueError(f"the worker needs a delay of at least one period, got {delay}")
        self.step, self.period, self.delay = step, period, delay
        self.extra_latency_frames = delay * period  # beyond the engine's own latency
        self._ring = ring = 2 * delay + 2
        self._in = np.zeros((ring, period, channels_in), np.float32)
        self._out = np.zeros((ring, period, channels_out), np.float32)
        self._out_seq = [-1] * ring  # which period each output slot holds (-1: none)
        self._silence = np.zeros((period, channels_out), np.float32)
        self._play = np.zeros((period, channels_out), np.float32)
        self._k = 0  # periods seen by the audio thread
        self._submitted = 0  # periods handed to the worker
        self._finished = 0  # periods the worker has completed (or dropped)
        self._reset_from = 0  # first period after the latest reset() (audio thread writes)
        self._reset_done = 0  # the _reset_from the worker has reset the engine for
        self._error: BaseException | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.late_periods = 0  # periods played as silence because their output was late
        self.dropped_periods = 0  # input periods not handed over (worker a ring behind)
        self._thread = threading.Thread(target=self._loop, name="wavae-inference", daemon=True)
        self._thread.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._error is not None:
            raise WorkerError(f"the inference worker failed: {self._error!r}") from self._error
        k = self._k
        self._k = k + 1
        if self._submitted - self._finished < self._ring - 1:
            slot = self._submitted % self._ring
            self._in[slot] = x
            self._submitted += 1
            self._jobs.put((k, slot))
        else:
            self.dropped_periods += 1
        want = k - self.delay
        if want < self._reset_from:  # the first `delay` periods after the start or a reset
            return self._silence
        wslot = want % self._ring
        if self._out_seq[wslot] == want:
            np.copyto(self._play, self._out[wslot])
            return self._play
        self.late_periods += 1
        return self._silence

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            k, in_slot = job
            try:
                reset_from = self._reset_from
                if k < reset_from:  # handed over before a reset: stale, never played
                    continue
                if reset_from > self._reset_done:
                    self._reset_done = reset_from
                    reset = getattr(self.step, "reset", None)
                    if reset is not None:
                        reset()
                slot = k % self._ring
                self._out_seq[slot] = -1  # being rewritten
                np.copyto(self._out[slot], self.step(self._in[in_slot]))
                self._out_seq[slot] = k
            except BaseException as e:  # handed to the audio thread, which raises it
                self._error = e
                return
            finally:
                self._finished += 1

    def reset(self) -> None:
        """Start over from the next period (audio thread; the engine reset runs on the worker)."""
        self._reset_from = self._k

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the worker has caught up (shutdown and tests; never the audio path)."""
        deadline = time.monotonic() + timeout
        while self._finished < self._submitted and self._error is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        return True

    def close(self) -> None:
        self.wait_idle(5.0)
        self._jobs.put(None)
        self._thread.join(timeout=5.0)


def worker_delay(block: int, model_rate: int, device_rate: int, period: int) -> int:
    """The worker's delay in periods: one model block at the device rate, rounded up to whole periods."""
    block_frames = block * device_rate / model_rate
    return max(1, math.ceil(block_frames / period - 1e-9))


def make_processor(threading_mode: str, step: Process, period: int, delay: int, channels_in: int, channels_out: int):
    """``inline`` runs ``step`` in the audio loop; ``worker`` on a thread, ``delay`` periods behind."""
    if threading_mode == "worker":
        return WorkerProcessor(step, period, delay, channels_in, channels_out)
    return InlineProcessor(step)


# ----------------------------------------------------------------------------
# main: open -> build -> run -> summarize
# ----------------------------------------------------------------------------
@dataclass
class LiveChain:
    """What a live run puts between the PCMs and the instrument's engine.

    ``engine_step`` (the control script by frames processed) -> ``[debug]``
    fault injection -> per-block timing (``--profile``) -> ``processor``
    (inline or on the worker).  ``step`` is the outermost of the first three.
    """

    engine_step: EngineStep
    step: Process
    processor: InlineProcessor | WorkerProcessor
    recorder: Any = None  # the BlockRecorder with --profile
    report_dir: Path | None = None  # where --profile writes its report

    def close(self) -> None:
        self.processor.close()


def _setup_logging(level: str) -> None:
    root = logging.getLogger("wavae")
    root.setLevel(getattr(logging, level.upper()))
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)


def _arg(args: Any, name: str) -> Any:
    return getattr(args, name, None)


def build_config(args: Any) -> DeviceConfig:
    """The device config with the command line's overrides; ``--seconds`` checked."""
    cfg = load_config(args.config) if _arg(args, "config") else parse_config({}, source="the defaults (no --config)")
    cfg = with_overrides(
        cfg,
        bundle=_arg(args, "bundle"),
        capture=_arg(args, "capture"),
        playback=_arg(args, "playback"),
        threads=_arg(args, "threads"),
        backend=_arg(args, "backend"),
    )
    seconds = _arg(args, "seconds")
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise DeviceConfigError(
            f"--seconds: expected a positive, finite number of seconds, got {seconds!r} "
            f"(leave --seconds out to play until stopped)"
        )
    return cfg


def instrument_spec(cfg: DeviceConfig, args: Any) -> InstrumentSpec:
    """The config's instrument, with ``--set``, ``--controls`` and ``--resampler`` from the command line."""
    script = _arg(args, "controls")
    return InstrumentSpec.from_config(
        cfg,
        settings=parse_set(_arg(args, "set_controls") or []),
        script=Path(script) if script else None,
        resampler=_arg(args, "resampler") or "polyphase",
    )


def main_live(args: Any, open_gpio: Callable | None = None, open_adc: Callable | None = None) -> int:
    """Run the live ALSA loop (``wavae run --config``); returns the exit code.

    open (config, PCMs) -> build (instrument, chain) -> run (until ``--seconds``
    or a signal) -> summarize (log, ``--profile`` report, the JSON line).
    ``open_gpio`` / ``open_adc`` replace the panel's hardware (``start_inputs``):
    the soak benchmark drives the real panel code through its fakes.
    """
    cfg = build_config(args)
    spec = instrument_spec(cfg, args)
    _setup_logging(cfg.service.log_level)
    seconds = _arg(args, "seconds")
    max_frames = int(round(seconds * cfg.audio.rate)) if seconds is not None else None
    report = (_arg(args, "report") or "profile-report") if _arg(args, "profile") else None
    with contextlib.ExitStack() as stack:  # closes, last first: the chain, the instruments, the PCMs
        duplex = AlsaDuplex(cfg.audio, cfg.service, source=cfg.source, command_line=cfg.command_line)
        duplex.open()  # a missing PCM fails here, before the model is loaded
        stack.callback(duplex.close, drain=False)
        inst = stack.enter_context(Instrument.open(spec))
        names = cfg.bundle.names()
        # live bundle switching (wavae.device.switch), also with one bundle: a reload may bring others;
        # it closes what it opened, after the chain
        switcher = BundleSwitcher(spec, names, inst)
        stack.callback(switcher.close)
        chain = build_chain(inst, cfg, report)
        stack.callback(chain.close)
        latency = _latency_report(inst.engine, duplex, chain.processor, cfg.audio.rate)
        status = live_status(duplex, chain.processor, lambda: chain.engine_step.engine, latency, switcher.status)
        switcher.worker_frames = chain.processor.extra_latency_frames
        switcher.on_switched = lambda new: latency.update(
            _latency_report(new.engine, duplex, chain.processor, cfg.audio.rate))
        # panel, OSC and MIDI: their own ordinary-priority threads, writing only the controls
        inputs = start_inputs(cfg, inst.controls, inst.bundle.path.name, status, bundles=tuple(names),
                              switch_bundle=switcher.request,
                              mapping_latent=max([inst.bundle.latent_dim, *switcher.latent_dims().values()]),
                              open_gpio=open_gpio, open_adc=open_adc)
        stack.callback(inputs.stop)
        switcher.start(chain.engine_step, inputs.actions)
        stack.callback(switcher.stop)  # before the inputs stop: no switch starts while closing
        # mlockall once everything is loaded; notify, watchdog, status file and SIGHUP on their own thread
        locked = lock_memory() if cfg.service.realtime_priority > 0 else False
        service = watch_live_loop(
            cfg=cfg, load=lambda: build_config(args), inputs=inputs, switcher=switcher,
            duplex=duplex, processor=chain.processor, engine=inst.engine, latency=latency,
            realtime=inst.realtime, memory_locked=locked,
        )
        try:
            stats = run_chain(duplex, chain, cfg, latency, max_frames)
        finally:
            service.stop()  # STOPPING=1 before the drain
        duplex.close(drain=True)
    summary = summarize(cfg, inst, chain, stats, latency)
    summary.update(switcher.status())
    summary["memory_locked"], summary["ready_after_s"] = locked, service.ready_at
    print(json.dumps(summary), flush=True)
    return 0


def build_chain(inst: Instrument, cfg: DeviceConfig, report: str | None = None) -> LiveChain:
    """The processing chain for ``inst`` under ``cfg``; ``report``: profile into this folder."""
    a = cfg.audio
    engine = inst.engine
    fade = fade_periods(cfg.bundle.crossfade_ms, a.rate, a.period_size)
    engine_step = EngineStep(engine, inst.controls, inst.script, a.rate, a.period_size, fade_periods=fade)
    step: Process = engine_step
    d = cfg.debug
    if d.stall_ms > 0 or d.slow_every > 0:
        step = FaultInjector(step, d, a.rate, a.period_size)
    recorder = report_dir = None
    if report is not None:
        report_dir = prepare_dir(report)  # fail now, not at exit
        recorder = BlockRecorder.for_engine(engine)  # deadline: one engine period; ring: the last 10 min
        step = TimedStep(step, recorder)  # O(1), no allocation per call
    delay = worker_delay(inst.bundle.block, inst.bundle.sample_rate, a.rate, a.period_size)
    processor = make_processor(a.threading, step, a.period_size, delay, a.channels_in, a.channels_out)
    return LiveChain(engine_step, step, processor, recorder, report_dir)


def run_chain(duplex: AlsaDuplex, chain: LiveChain, cfg: DeviceConfig, latency: dict[str, Any],
              max_frames: int | None) -> IOStats:
    """Play until ``max_frames`` frames went through or SIGINT/SIGTERM; the GIL hands over every 1 ms meanwhile."""
    a = cfg.audio
    log.info(
        "live: %s -> %s at %d Hz, period %d x %d (%s), threading %s; latency %.1f ms",
        a.capture, a.playback, a.rate, a.period_size, a.periods, a.format, a.threading,
        latency["total_ms"],
    )
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    previous = _install_signal_handlers(duplex)
    try:
        return duplex.run(chain.processor, max_frames=max_frames, on_reopen=chain.processor.reset)
    finally:
        _restore_signal_handlers(previous)
        sys.setswitchinterval(switch)


def summarize(cfg: DeviceConfig, inst: Instrument, chain: LiveChain, stats: IOStats,
              latency: dict[str, Any]) -> dict[str, Any]:
    """Log how the run went and return the summary; with ``--profile``, write the report and add its path."""
    a, engine, processor = cfg.audio, chain.engine_step.engine, chain.processor  # the engine playing at the end
    summary: dict[str, Any] = {"event": "live_summary", "threading": a.threading, "realtime": inst.realtime}
    summary.update(stats.as_dict())
    summary["late_periods"] = processor.late_periods
    summary["dropped_periods"] = processor.dropped_periods
    summary["latency"] = latency
    summary["engine_timing"] = engine.timing()
    summary["engine_stats"] = dict(engine.stats)
    summary["stalls_injected"] = getattr(chain.step, "stalls", 0)
    schedule = chain.engine_step.schedule
    summary["script_overrides"] = schedule.overrides if schedule is not None else 0
    level = logging.WARNING if stats.xruns or stats.device_lost or processor.late_periods else logging.INFO
    log.log(
        level,
        "stopped after %.2f s of audio (%.2f s wall): %d xruns (%d capture, %d playback, %d unrecovered), "
        "%d late periods, device lost %d times, %d reopens",
        stats.frames / a.rate, stats.wall_s, stats.xruns, stats.xruns_capture, stats.xruns_playback,
        stats.xruns_unrecovered, processor.late_periods, stats.device_lost, stats.reopens,
    )
    if chain.recorder is not None:
        line = timing_line(engine)
        if line is not None:
            log.info("%s", line)
        summary["profile_report"] = str(write_report(
            chain.recorder, chain.report_dir, bundle=inst.bundle, engine=engine, backend=cfg.bundle.backend,
            threads=cfg.bundle.threads, prefill_periods=a.prefill_periods, xruns=stats.xruns,
            extra={"late_periods": processor.late_periods, **stats.as_dict()},
        ))
    return summary


def _latency_report(engine, duplex: AlsaDuplex, processor, rate: int) -> dict[str, Any]:
    """Round trip, input sample to output sample, in frames and ms at the device rate.

    The playback stream runs ``prefill_periods x period_size`` frames behind the
    capture stream (``AlsaDuplex.io_latency``; the capture period is inside that
    offset), the engine delays the signal by ``signal_delay_samples`` within the
    stream (its output FIFO), and in worker mode the worker's delay comes on
    top.  ``engine.latency()["total_samples"]`` also counts the capture period,
    which the pre-fill offset already holds: it is not added again.
    ``process_budget_frames``: how long one period (so one model block's
    compute, inline) may take before playback runs dry on a DMA-driven card.
    """
    eng = engine.latency()
    io = duplex.io_latency()
    prefill = io["playback_prefill"]
    worker = processor.extra_latency_frames
    total = float(eng["signal_delay_samples"]) + prefill + worker
    return {
        "engine": eng,
        "signal_delay_frames": eng["signal_delay_samples"],
        "playback_prefill_frames": prefill,
        "worker_frames": worker,
        "total_frames": total,
        "total_ms": round(1000.0 * total / rate, 3),
        "process_budget_frames": io["process_budget"],
        "process_budget_ms": round(1000.0 * io["process_budget"] / rate, 3),
    }


def _install_signal_handlers(duplex: AlsaDuplex) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}

    def stop(signum, frame):  # runs between bytecodes; only sets an event
        duplex.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
