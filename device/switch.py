"""Live bundle switching: another model while the audio plays, crossfaded in at a period boundary.

``[bundle] paths`` lists the bundles of an instrument; a bundle is named by its
folder's name.  A panel button or encoder (``bundle.next`` / ``bundle.prev``),
MIDI program change (``selects = "bundle"``), ``/wavae/bundle NAME``, a
preset saved with another bundle and a reload whose ``[bundle]`` names a new
start bundle (``wavae.device.reload``: ``use_paths`` for the new list, then
``switch_and_wait``) all end in ``BundleSwitcher.request``, through
``Actions.select_bundle``.  The live loop has a switcher even with one bundle,
for that reload.  A switch goes in three steps, none on the audio thread:

1. ``request`` (the input's own thread) checks what can be checked in
   milliseconds: the name is one of the instrument's, the bundle is there and
   whole (manifest, checksums, graph contract: ``load_bundle``) and the engine
   can serve it at the running device settings (``check_servable``: rate,
   period, channels).  A failure raises ``Rejected`` with the reason, which the
   OSC server, the MIDI input and the panel count and log; the bundle playing
   keeps playing.  Otherwise the request is left for the loader (a newer
   request replaces one not yet started: a fast encoder spin loads only where
   it stopped).
2. The loader thread, at ordinary priority, builds the new instrument with
   ``Instrument.open``: the same device settings, its own backend and engine,
   warmed up and reset.  A failure there (a graph onnxruntime refuses, memory)
   is logged, counted (``Actions.switch_failed``: reason ``bundle.failed``) and
   shown in the status (``bundle_switch``); nothing else changes.
3. The hand-over: every control value is carried over to the new bundle's
   controls (``Actions.adopt_controls``: bias dimensions beyond the new latent
   are dropped, new ones start at 0, see ``wavae.device.controls.fit_bias``),
   then an ``Incoming`` is stored in ``EngineStep.incoming``, one reference
   store.  The chain primes the new engine on the live input and crossfades
   (``wavae.device.live.EngineStep``); when it reports the switch complete,
   the loader closes the old instrument (its backend's sessions) here, off the
   audio thread.

One switch runs at a time.  While a control script plays live (tests), it
keeps driving the controls after a switch to a bundle of the same latent size
and stops at one of another size (its snapshots would not fit).

Costs: while a switch runs (``prime_periods + fade_periods``, about 0.1-0.2 s),
the audio thread runs both engines, twice the compute; in ``inline`` threading
that must fit in the pre-fill's slack (``docs/device-live.md``).  The new
bundle's onnxruntime intra-op threads (``bundle.threads > 1``) are created by
the loader and so run at its ordinary priority, not the audio thread's
SCHED_FIFO.  In ``worker`` threading the worker's delay stays the first
bundle's block: a bundle with a longer block is logged as a risk of late
periods.  The loader shares the interpreter's GIL with the audio thread:
building a session and an engine is Python and numpy work, and when other
processes preempt the loader while it holds the GIL, the SCHED_FIFO audio
thread waits for it (measured on a loaded two-core build machine: stalls of
10-25 ms during a load, enough for an xrun at a 5.3 ms pre-fill slack; on a
board that runs nothing else the loader is not preempted so).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from wavae.errors import WavaeError

from .actions import Actions, Rejected
from .bundle import load_bundle
from .config import ControlsConfig
from .controls import Controls
from .engine import Engine, check_servable
from .instrument import Instrument, InstrumentSpec
from .realtime import ordinary_priority

log = logging.getLogger("wavae.device.switch")

POLL_S = 0.005  # how often the loader looks whether the chain has finished a crossfade


def latent_dims(paths: dict[str, Path]) -> dict[str, int]:
    """Each readable bundle's latent size, by name (manifests only; an unreadable one is left out and logged)."""
    dims: dict[str, int] = {}
    for name, path in paths.items():
        try:
            dims[name] = load_bundle(path, verify=False).latent_dim
        except WavaeError as e:
            log.warning("bundle %s cannot be switched to: %s", name, e)
    return dims


@dataclass(frozen=True)
class Incoming:
    """What the switcher hands the chain (``EngineStep.incoming``)."""

    engine: Engine
    prime_periods: int  # periods the new engine listens before it is heard
    script_controls: Controls | None  # the controls a live control script drives from now on (None: it stops)


def prime_periods(engine: Engine) -> int:
    """Periods from a reset until the engine's output is audible and faded in: its output
    FIFO's pre-fill, its fade-in at the device rate and the output resampler's spread."""
    lat = engine.latency()
    fade = engine.fade_samples * engine.device_rate / engine.model_rate
    return math.ceil((lat["signal_delay_samples"] + fade + lat["resampler_samples"]) / engine.period)


def fade_periods(crossfade_ms: float, rate: int, period: int) -> int:
    """``[bundle] crossfade_ms`` in whole periods, at least one."""
    return max(1, round(crossfade_ms * rate / 1000.0 / period))


class BundleSwitcher:
    """See the module docstring.  ``current`` is the instrument playing at start.

    ``paths``: bundle name -> folder, in stepping order.  ``worker_frames``: the
    worker's delay in device frames (0 inline).  ``on_switched(inst)`` runs on
    the loader thread after each completed switch (the live loop updates its
    latency report there).
    """

    def __init__(self, spec: InstrumentSpec, paths: dict[str, Path], current: Instrument,
                 worker_frames: int = 0, on_switched: Callable[[Instrument], None] | None = None):
        self.spec, self.worker_frames = spec, worker_frames
        self.paths = dict(paths)
        self.current = current
        self.playing = current.bundle.path.name
        self.playing_path = current.bundle.path
        self.on_switched = on_switched
        self.step: Any = None  # the chain's EngineStep, from start()
        self.actions: Actions | None = None
        self.state = "idle"  # idle | loading | fading
        self.target: str | None = None
        self.last_error: str | None = None
        self.switched = 0
        self.failed = 0
        self._opened: list[Instrument] = []  # instruments made here and not closed yet
        self._wanted: tuple[str, Path] | None = None
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.paths)

    def latent_dims(self) -> dict[str, int]:
        """Each readable bundle's latent size (manifests only; an unreadable one is left out and logged)."""
        return latent_dims(self.paths)

    def use_paths(self, paths: dict[str, Path]) -> None:
        """A new list of bundles (a reload of ``[bundle]``): switches and ``bundle.next`` use it from now
        on; the bundle playing keeps playing, in the list or not.  One reference store each."""
        self.paths = dict(paths)
        if self.actions is not None:
            self.actions.set_bundles(tuple(self.paths))

    # -- the input threads -----------------------------------------------------------------
    def check(self, name: str, path: Path | None = None) -> Path:
        """Whether bundle ``name`` (at ``path``; default: the list's) can be switched to: its folder,
        checked whole, and servable at the running device settings.  ``Rejected`` says why not."""
        path = self.paths.get(name) if path is None else path
        if path is None:
            raise Rejected(f"unknown bundle {name!r}; this instrument has {', '.join(self.paths)}")
        s = self.spec
        try:
            bundle = load_bundle(path)
            check_servable(bundle, s.device_rate, s.period, s.channels_in, s.channels_out)
        except WavaeError as e:
            raise Rejected(f"bundle {name} cannot be played: {e}; {self.playing} keeps playing") from None
        return path

    def request(self, name: str) -> None:
        """Check bundle ``name`` and leave it for the loader; ``Rejected`` says why it cannot be."""
        path = self.check(name)
        if self._thread is None:
            raise Rejected(f"bundle switching is not running; {self.playing} keeps playing")
        with self._cv:
            if self._wanted is None and self.state == "idle" and self._is_playing(name, path):
                return  # already playing: nothing to load (bundle.next on a one-bundle instrument)
            self._wanted = (name, path)
            self._cv.notify()

    def _is_playing(self, name: str, path: Path) -> bool:
        return name == self.playing and path == self.playing_path

    def switch_and_wait(self, name: str, timeout: float, pause: Callable[[float], None]) -> tuple[str, str | None]:
        """Select bundle ``name`` as ``/wavae/bundle`` does (``Actions.select_bundle``, which calls
        ``request``), then wait (``pause`` between looks) until the loader has switched or failed.

        Returns ``("playing", None)`` once ``name`` plays, ``("failed", why)`` when its load failed
        (the bundle playing keeps playing), ``("loading", why)`` when it is still under way after
        ``timeout`` s; ``Rejected`` from ``request``."""
        done = self.switched + self.failed
        if self.actions is not None:
            self.actions.select_bundle(name)
        else:
            self.request(name)
        deadline = time.monotonic() + timeout
        while True:
            with self._cv:
                busy = self._wanted is not None or self.state != "idle"
            if not busy and (self.switched + self.failed > done or self.playing == name):
                break
            if self._stop:
                return "failed", f"the instrument is stopping; bundle {name} was not switched to"
            if time.monotonic() >= deadline:
                return "loading", (f"bundle {name} is still loading after {timeout:g} s; {self.playing} plays until "
                                   f"it is ready (the status shows bundle_switch)")
            pause(POLL_S * 10)
        if self.playing == name:
            return "playing", None
        return "failed", f"bundle {self.last_error or name + ': did not load'}; {self.playing} keeps playing"

    # -- the loader thread -------------------------------------------------------------------
    def start(self, step: Any, actions: Actions) -> "BundleSwitcher":
        self.step, self.actions = step, actions
        self._thread = threading.Thread(target=self._run, name="wavae-bundle-loader", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        ordinary_priority()  # it was made by the audio thread, SCHED_FIFO by now
        while True:
            with self._cv:
                while self._wanted is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                name, path = self._wanted
                self._wanted = None
                if self._is_playing(name, path):
                    continue
                self.state, self.target = "loading", name  # under the lock: never idle with a request taken
            try:
                self._switch(name, path)
            except Exception as e:  # the loader must outlive any bundle: report it, keep the one playing
                self._fail(name, f"{type(e).__name__}: {e}" if not isinstance(e, WavaeError) else str(e))

    def _switch(self, name: str, path: Path) -> None:
        self.state, self.target = "loading", name
        t0 = time.monotonic()
        spec = dataclasses.replace(self.spec, bundle=path, realtime_priority=0, warm_up=True, script=None,
                                   controls=ControlsConfig(), settings={})  # the values come from the live ones
        inst = Instrument.open(spec)
        self._opened.append(inst)
        old = self.current
        block_frames = inst.bundle.block * spec.device_rate / inst.bundle.sample_rate
        if self.worker_frames and block_frames > self.worker_frames:
            log.warning("bundle %s has a block of %.0f frames, more than the worker's delay of %d (the first "
                        "bundle's): late periods are possible", name, block_frames, self.worker_frames)
        dropped = self.actions.adopt_controls(inst.controls)
        if dropped:
            log.info("bundle %s has %d latent dimensions: bias values %s beyond them were dropped",
                     name, inst.bundle.latent_dim, list(dropped))
        script = inst.controls if inst.bundle.latent_dim == old.bundle.latent_dim else None
        done = self.step.switches
        self.state = "fading"
        self.step.incoming = Incoming(inst.engine, prime_periods(inst.engine), script)
        while self.step.switches == done:  # the chain finishes the crossfade
            if self._stop:
                return  # closing: close() closes every instrument made here
            time.sleep(POLL_S)
        retired = self.step.retired
        self.step.retired = None
        if retired is not old.engine:
            log.warning("bundle switch: the chain retired an engine it was not expected to")
        self._close(old)
        self.current, self.playing, self.playing_path = inst, name, path
        self.state, self.target, self.last_error = "idle", None, None
        self.switched += 1
        log.info("bundle %s playing (loaded and crossfaded in %.2f s)", name, time.monotonic() - t0)
        if self.on_switched is not None:
            self.on_switched(inst)

    def _fail(self, name: str, why: str) -> None:
        self.state, self.target, self.last_error = "idle", None, f"{name}: {why}"
        self.failed += 1
        log.error("bundle %s did not load: %s; %s keeps playing", name, why, self.playing)
        for inst in [i for i in self._opened if i is not self.current]:
            self._close(inst)
        if self.actions is not None:
            self.actions.switch_failed(name, self.playing, why)

    def _close(self, inst: Instrument) -> None:
        inst.close()
        if inst in self._opened:
            self._opened.remove(inst)

    # -- status and shutdown -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"bundle_playing": self.playing,
                "bundle_switch": {"state": self.state, "target": self.target, "switched": self.switched,
                                  "failed": self.failed, "last_error": self.last_error}}

    def stop(self) -> None:
        """Stop the loader (a switch under way is abandoned; the chain keeps what it plays)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(10.0)

    def close(self) -> None:
        """Close every instrument made here (after the chain has stopped using them)."""
        self.stop()
        for inst in list(self._opened):
            self._close(inst)
