"""The instrument, assembled in one place: bundle -> controls -> backend -> engine.

File mode (``wavae run --input``), the live loop (``wavae run --config``) and
whatever else plays the instrument (a panel, a service, a web page) build it
here, from one resolved description::

    spec = InstrumentSpec.from_config(cfg, settings=parse_set(["feedback_gain=0.4"]))
    with Instrument.open(spec) as inst:
        inst.engine.process(period, out=buffer)

``InstrumentSpec`` holds only resolved values (paths, names, numbers): the
caller has already merged its command line into its config, so nothing here
knows about argparse or TOML.  ``Instrument.open`` then goes in this order:

1. the bundle is read and checked (manifest, checksums);
2. the controls are made for its latent, ``[controls]`` applied, then
   ``settings`` (``--set``) over them, then the control script is loaded and
   checked against them, and the bundle against the device settings (rate,
   period, channels): a typo fails in a second, before the model loads;
3. the calling thread is put under SCHED_FIFO (``realtime_priority``), before
   the backend: the threads created from then on inherit it (onnxruntime's
   intra-op pool when ``threads > 1``, the live loop's worker);
4. the backend is made (sessions built and warmed up once);
5. the engine is built, and with ``warm_up`` run over two blocks of silence and
   reset (see ``warm_up``).

``Instrument.close`` (or leaving its ``with`` block) closes the backend and
gives the thread its scheduling back, on every way out, errors included; a
failure half-way through ``open`` undoes what was already done.

``timing_line`` is the one per-block timing summary both modes print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .backends import Backend, make_backend
from .bundle import Bundle, load_bundle
from .config import ControlsConfig, DeviceConfig, DeviceConfigError
from .controls import Controls, ControlScript
from .engine import Engine, check_servable
from .realtime import set_realtime
from .shipped import shipped_bundle

log = logging.getLogger("wavae.device.instrument")


@dataclass(frozen=True)
class InstrumentSpec:
    """Everything ``Instrument.open`` needs, resolved (see the module docstring)."""

    bundle: Path
    backend: str = "onnxruntime"
    threads: int = 1  # onnxruntime intra-op threads
    device_rate: int = 48000
    period: int = 256  # device frames per engine call
    channels_in: int = 1
    channels_out: int = 1
    controls: ControlsConfig = ControlsConfig()  # the config's [controls] (a short bias list is padded)
    settings: Mapping[str, Any] = field(default_factory=dict)  # --set NAME=VALUE, applied over [controls]
    script: Path | None = None  # a control script (JSON), checked against the controls at open
    resampler: str = "polyphase"
    realtime_priority: int = 0  # SCHED_FIFO priority of the building thread (0 = leave it alone)
    warm_up: bool = False  # run two blocks of silence and reset before the first real period
    source: str = "<command line>"  # where the description came from, for messages

    @classmethod
    def from_config(cls, cfg: DeviceConfig, **overrides: Any) -> "InstrumentSpec":
        """The instrument of a device config (overrides already applied to it), warm-up on.

        ``overrides`` set fields the config does not hold (``settings``,
        ``script``, ``resampler``) or replace the ones it does.
        """
        if cfg.bundle.start() is None and overrides.get("bundle") is None:
            raise DeviceConfigError(f"{cfg.source}: no bundle: set bundle.path in the config or pass --bundle DIR "
                                    f"(the shipped default model, {shipped_bundle()}, is not installed)")
        a = cfg.audio
        spec = cls(
            bundle=cfg.bundle.start(),
            backend=cfg.bundle.backend,
            threads=cfg.bundle.threads,
            device_rate=a.rate,
            period=a.period_size,
            channels_in=a.channels_in,
            channels_out=a.channels_out,
            controls=cfg.controls,
            realtime_priority=cfg.service.realtime_priority,
            warm_up=True,
            source=cfg.source,
        )
        return dataclasses.replace(spec, **overrides)


class Instrument:
    """An assembled instrument: ``bundle``, ``controls``, ``script``, ``backend``, ``engine``.

    Made by ``Instrument.open(spec)``; a context manager whose exit closes it.
    ``realtime`` tells whether the building thread runs under SCHED_FIFO.
    """

    def __init__(
        self,
        spec: InstrumentSpec,
        bundle: Bundle,
        controls: Controls,
        script: ControlScript | None,
        backend: Backend,
        engine: Engine,
        realtime: bool,
        undo: contextlib.ExitStack,
    ):
        self.spec, self.bundle, self.controls, self.script = spec, bundle, controls, script
        self.backend, self.engine, self.realtime = backend, engine, realtime
        self._undo = undo

    @classmethod
    def open(cls, spec: InstrumentSpec) -> "Instrument":
        """Build the instrument ``spec`` describes, in the order of the module docstring."""
        bundle = load_bundle(spec.bundle)
        controls = Controls(bundle.latent_dim)
        initial = spec.controls.for_latent(bundle.latent_dim, spec.source)
        if initial:
            controls.update(initial)
        if spec.settings:  # --set wins over [controls]
            controls.update(dict(spec.settings))
        script = ControlScript.load(spec.script, controls) if spec.script is not None else None
        # what the engine will refuse, refused before the model loads
        check_servable(bundle, spec.device_rate, spec.period, spec.channels_in, spec.channels_out)
        with contextlib.ExitStack() as undo:
            previous = set_realtime(spec.realtime_priority, "audio thread")
            if previous is not None:
                undo.callback(os.sched_setscheduler, 0, *previous)
            backend = make_backend(bundle, spec.backend, threads=spec.threads)
            undo.callback(backend.close)
            engine = Engine(
                bundle,
                backend,
                device_rate=spec.device_rate,
                period=spec.period,
                channels_in=spec.channels_in,
                channels_out=spec.channels_out,
                controls=controls,
                resampler=spec.resampler,
            )
            if spec.warm_up:
                warm_up(engine, bundle.block * spec.device_rate / bundle.sample_rate)
            return cls(spec, bundle, controls, script, backend, engine, previous is not None, undo.pop_all())

    def close(self) -> None:
        """Close the backend and restore the thread's scheduling (idempotent)."""
        self._undo.close()

    def __enter__(self) -> "Instrument":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def warm_up(engine: Engine, block_frames: float) -> None:
    """Run two model blocks of silence and reset: onnxruntime's first calls are slow
    (allocation), and the first real periods must not pay for them.  After the
    reset the engine is exactly a fresh one (file mode and live mode still agree),
    and its stats and block timings hold nothing of the warm-up."""
    zeros = np.zeros((engine.period, engine.channels_in), np.float32)
    out = np.zeros((engine.period, engine.channels_out), np.float32)
    for _ in range(2 * math.ceil(block_frames / engine.period) + 2):
        engine.process(zeros, out=out)
    engine.reset()
    engine.reset_stats()


def timing_line(engine: Engine) -> str | None:
    """The engine's per-block compute time in one line; None when no model block has run."""
    t = engine.timing()
    if not t.get("blocks"):
        return None
    return (
        f"per block ({engine.block} samples, {t['block_ms']:.2f} ms): p50 {t['p50_ms']:.3f} ms, "
        f"p99 {t['p99_ms']:.3f} ms, max {t['max_ms']:.3f} ms, RTF {t['rtf_p50']:.3f} over {t['blocks']} blocks"
    )
