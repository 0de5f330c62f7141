"""The latency profiler (``wavae profile``, ``wavae run --profile``): what is
measured, in what order, and into which report.

No torch here: numpy, the device engine and its backends only.  What is measured,
for one *configuration* (a bundle, a backend with a thread count, an ALSA period
at the device rate):

* **graph**: one model block through the encoder and the decoder, straight on the
  backend (its own sessions, so the engine's state is never touched).  Deadline:
  the block's duration at the model rate.
* **engine**: one ``Engine.process`` call per ALSA period at the device rate
  (resampling, controls, FIFOs, and the graphs whenever a whole model block is
  in).  Deadline: the period's duration.  This is what an inline audio loop
  must finish before the next period is due.
* **latency**: onsets through a fresh engine, their delay detected in the output
  (``wavae.device.latency``);
* the **action-to-sound budget**, **resources** (RSS, start-up time).

``profile`` runs four steps over every configuration: **load** (bundle, backends,
engine; the first one's start-up time), **time** (engine and graph timings,
interleaved round by round), **measure** (the latency) and **collect** (the
report).  ``write_report`` turns a live loop's ``BlockRecorder`` into the same
report.  The parts: ``machine`` (facts about the machine), ``timing`` (the
recorder, the timers and their statistics), ``latency`` (onsets, detection, the
budget), ``report`` (the schema, the builders both modes share, the files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wavae.blocks import check_block
from wavae.progress import Progress
from wavae.signals import harmonic_notes

from .backends import make_backend
from .bundle import load_bundle
from .config import AudioConfig
from .instrument import Instrument, InstrumentSpec
from .latency import declared_latency, latency_budget, latency_summary, measure_latency
from .machine import memory_mib, process_age_s
from .report import (
    ProfileError,
    build_report,
    config_section,
    json_ready,
    resources_section,
    settings_section,
    startup_section,
    write_all,
)
from .resample import resample_offline
from .timing import BlockRecorder, EngineTimer, GraphTimer, as_frames, first_model_block_ms, summarize

# playback pre-fill, in periods, when none is given: the device config's default
DEFAULT_PREFILL_PERIODS = AudioConfig.prefill_periods


@dataclass
class ProfileConfig:
    """One measured combination: what it is (``describe``) and, once loaded, what runs it."""

    id: str
    bundle_path: Path | None
    backend_kind: str | None
    threads: int | None
    period: int | None
    device_rate: int | None
    prefill_periods: int = DEFAULT_PREFILL_PERIODS
    bundle: Any = None
    instrument: Any = None  # the Instrument the engine timing plays
    backend: Any = None  # the instrument's
    graph_backend: Any = None  # a second instance for graph timing
    engine: Any = None
    load_s: float | None = None
    first_block_ms: float | None = None
    rss_delta_mib: float | None = None
    engine_timer: EngineTimer | None = None
    graph_timer: GraphTimer | None = None
    latency: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """The identifying part of its ``configs[]`` entry (docs/profile.md)."""
        b = self.bundle
        src = b.manifest.get("source", {}) if b is not None else {}
        return {
            "id": self.id,
            "bundle": str(self.bundle_path) if self.bundle_path is not None else None,
            "preset": src.get("preset") if isinstance(src, dict) else None,
            "precision": b.precision if b is not None else None,
            "backend": self.backend_kind,
            "backend_description": self.backend.describe() if hasattr(self.backend, "describe") else self.backend_kind,
            "threads": self.threads,
            "sample_rate": b.sample_rate if b is not None else None,
            "block": b.block if b is not None else None,
            "frame": b.frame if b is not None else None,
            "block_ms": 1e3 * b.block / b.sample_rate if b is not None else None,
            "device_rate": self.device_rate,
            "period": self.period,
            "period_ms": 1e3 * self.period / self.device_rate if (self.period and self.device_rate) else None,
        }


def check_blocks(bundles: Sequence[Any], blocks: Sequence[int] | None) -> None:
    """Every ``--block`` asked must be the block of one of the bundles: a bundle's
    graphs have static shapes, so another block needs another export.  A block
    that no bundle of these models could have is refused by ``check_block``."""
    if not blocks:
        return
    have = {int(b.block) for b in bundles}
    for n in blocks:
        if n in have:
            continue
        for b in bundles:
            check_block(n, b.frame, b.sample_rate)
        raise ProfileError(
            f"no bundle given serves block {n}: "
            + ", ".join(f"{b.path} has block {b.block}" for b in bundles)
            + ". A bundle's graphs have a fixed block; export one per block "
            f"(`wavae export RUN --block {n} --out DIR`) and pass every bundle to --bundle."
        )


# ----------------------------------------------------------------------------
# the offline profile: load, time, measure, collect
# ----------------------------------------------------------------------------
def profile(
    bundle_paths: Sequence[Path],
    *,
    backend: str = "onnxruntime",
    threads: Sequence[int] = (1,),
    blocks: Sequence[int] | None = None,
    period_sizes: Sequence[int] = (256,),
    device_rate: int = 48000,
    prefill_periods: int = DEFAULT_PREFILL_PERIODS,
    seconds: float = 10.0,
    seed: int = 0,
    n_onsets: int = 12,
    paced: bool = False,
    input_audio: tuple[np.ndarray, int] | None = None,
    round_s: float = 0.5,
    t_import: float | None = None,
    progress: Callable[[str], None] | None = None,
    show_bar: bool = False,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Measure every configuration (bundles x threads x period sizes); return the
    report dict (docs/profile.md) and the raw per-block series for the plots
    (``{config_id: {"engine": seconds[], "graph": seconds[]}}``).

    Timings are interleaved: in each round every configuration runs
    ``round_s`` seconds of audio, so slow drifts of a shared machine (thermal,
    other processes) hit all configurations alike and their ratios hold.
    """
    say = progress or (lambda msg: None)
    rss_before = memory_mib()["rss_mib"]
    configs, warnings = plan(bundle_paths, backend, threads, blocks, period_sizes, device_rate, prefill_periods)
    settings = settings_section(
        bundles=[str(p) for p in bundle_paths], backend=backend, threads=list(threads),
        blocks=list(blocks) if blocks else None, period_sizes=list(period_sizes), prefill_periods=prefill_periods,
        device_rate=device_rate, seconds=seconds, seed=seed, onsets=n_onsets, paced=paced,
        input="music" if input_audio is None else "file", round_s=round_s,
    )
    try:
        startup = load(configs, t_import, say)
        add_timers(configs, seconds, seed, paced, input_audio)
        time_interleaved(configs, seconds, round_s, say, show_bar)
        measure(configs, n_onsets, seed, say)
        return collect(configs, settings, startup, rss_before, warnings)
    finally:
        for c in configs:
            for part in (c.instrument, c.graph_backend):
                if part is not None:
                    part.close()


def plan(
    bundle_paths: Sequence[Path],
    backend: str,
    threads: Sequence[int],
    blocks: Sequence[int] | None,
    period_sizes: Sequence[int],
    device_rate: int,
    prefill_periods: int,
) -> tuple[list[ProfileConfig], list[str]]:
    """Every configuration asked for, bundle x threads x period size in that order,
    with ids ``b{bundle}-t{threads}-p{period}``; the bundles are read and held to
    ``blocks``.  Returns the configurations and a warning per bundle skipped."""
    bundles = [load_bundle(p) for p in bundle_paths]
    check_blocks(bundles, blocks)
    warnings: list[str] = []
    if blocks:
        for b in bundles:
            if b.block not in set(blocks):
                warnings.append(f"bundle {b.path} (block {b.block}) skipped: its block is not among --block")
        bundles = [b for b in bundles if b.block in set(blocks)]
    configs = [
        ProfileConfig(f"b{bi}-t{th}-p{per}", Path(b.path), backend, int(th), int(per), int(device_rate),
                      int(prefill_periods), bundle=b)
        for bi, b in enumerate(bundles)
        for th in threads
        for per in period_sizes
    ]
    return configs, warnings


def load(configs: list[ProfileConfig], t_import: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Load every configuration: its bundle, the engine's backend, the engine, and
    a second backend for the graph timing; each one's load time, first model block
    and RSS added.  Returns the report's ``startup``, from the first configuration
    (``t_import``: ``time.monotonic()`` when the command's module was imported)."""
    startup = startup_section(None)
    for i, c in enumerate(configs):
        say(f"loading {c.id}: {c.bundle_path.name}, {c.threads} thread(s), period {c.period}")
        before = memory_mib()["rss_mib"]
        t0 = time.perf_counter()
        c.instrument = Instrument.open(InstrumentSpec(
            bundle=c.bundle_path, backend=c.backend_kind, threads=c.threads, device_rate=c.device_rate,
            period=c.period, source="wavae profile"))
        c.bundle, c.backend, c.engine = c.instrument.bundle, c.instrument.backend, c.instrument.engine
        c.load_s = time.perf_counter() - t0
        c.first_block_ms = first_model_block_ms(c.engine, c.period)
        if i == 0:
            startup = startup_section(
                process_age_s(),
                import_to_first_block_s=(time.monotonic() - t_import) if t_import is not None else None,
                load_s=c.load_s, first_block_ms=c.first_block_ms, config=c.id,
            )
        c.engine.reset()
        c.graph_backend = make_backend(c.bundle, kind=c.backend_kind, threads=c.threads)
        after = memory_mib()["rss_mib"]
        c.rss_delta_mib = (after - before) if (after is not None and before is not None) else None
    return startup


def add_timers(
    configs: list[ProfileConfig],
    seconds: float,
    seed: int,
    paced: bool,
    input_audio: tuple[np.ndarray, int] | None,
) -> None:
    """Give every configuration its engine timer (``seconds`` of audio at the
    device rate) and graph timer (the same at the model rate), over ``input_audio``
    (samples, rate) or generated notes, resampled to each rate once."""
    cache: dict[int, np.ndarray] = {}
    src_secs = min(seconds, 20.0)  # the timers loop over their input

    def signal_at(rate: int) -> np.ndarray:
        if rate not in cache:
            if input_audio is not None:
                x, sr = input_audio
                cache[rate] = resample_offline(x, sr, rate) if sr != rate else np.asarray(x, np.float32)
            else:
                cache[rate] = harmonic_notes(src_secs, rate, seed)
        return cache[rate]

    for c in configs:
        dev_in = as_frames(signal_at(c.device_rate), 1)
        sr = c.bundle.sample_rate
        n_periods = max(1, int(round(seconds * c.device_rate / c.period)))
        n_blocks = max(1, int(round(seconds * sr / c.bundle.block)))
        c.engine_timer = EngineTimer(c.engine, dev_in, c.period, c.device_rate, n_periods, paced=paced)
        c.graph_timer = GraphTimer(c.graph_backend, c.bundle.block, signal_at(sr), n_blocks)


def time_interleaved(
    configs: list[ProfileConfig],
    seconds: float,
    round_s: float,
    say: Callable[[str], None],
    show_bar: bool,
) -> None:
    """Run every configuration's timers, ``round_s`` seconds of audio per
    configuration per round, until each has timed its ``seconds``."""
    say(f"timing {len(configs)} configuration(s), {seconds:g} s of audio each, interleaved")
    bar = None
    if show_bar:
        bar = Progress(len(configs) * 2 * seconds, "profile", "audio s")
    while not all(c.engine_timer.finished and c.graph_timer.finished for c in configs):
        for c in configs:
            et, gt = c.engine_timer, c.graph_timer
            time.sleep(0.002)  # let the previous chunk's spinning runtime threads park
            if not et.finished:
                n = max(1, int(round(round_s * c.device_rate / c.period)))
                before = et.done
                et.run(n)
                if bar is not None:
                    bar.update((et.done - before) * c.period / c.device_rate)
            if not gt.finished:
                time.sleep(0.002)
                n = max(1, int(round(round_s * c.bundle.sample_rate / c.bundle.block)))
                before = gt.done
                gt.run(n)
                if bar is not None:
                    bar.update((gt.done - before) * c.bundle.block / c.bundle.sample_rate)
    if bar is not None:
        bar.close()


def measure(configs: list[ProfileConfig], n_onsets: int, seed: int, say: Callable[[str], None]) -> None:
    """Measure every configuration's latency with ``n_onsets`` onsets."""
    for c in configs:
        say(f"measuring latency of {c.id} with {n_onsets} onsets")
        c.latency = measure_latency(c.engine, c.bundle, c.device_rate, c.period, n_onsets=n_onsets, seed=seed)


def collect(
    configs: list[ProfileConfig],
    settings: dict[str, Any],
    startup: dict[str, Any],
    rss_before: float | None,
    warnings: list[str],
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The report (statistics, budget, a warning per configuration whose latency
    could not be measured) and the raw series, from measured configurations."""
    series: dict[str, dict[str, np.ndarray]] = {}
    entries = []
    warnings = list(warnings)
    for c in configs:
        et, gt = c.engine_timer, c.graph_timer
        block_s = c.bundle.block / c.bundle.sample_rate
        eng = summarize(et.times, c.period / c.device_rate)
        graph = summarize(gt.times, block_s)
        graph["gpu"] = summarize(gt.gpu_times[np.isfinite(gt.gpu_times)], block_s) if gt.gpu_times is not None else None
        lat = c.latency
        budget = latency_budget(lat["declared"], eng["p99_ms"], c.period, c.prefill_periods, c.device_rate,
                                lat["measured_ms"])
        entries.append(config_section(
            c.describe(), engine=eng, graph=graph, latency=lat, budget=budget, load_s=c.load_s,
            first_block_ms=c.first_block_ms, rss_delta_mib=c.rss_delta_mib,
            engine_stats=getattr(c.engine, "stats", None),
        ))
        series[c.id] = {"engine": et.times, "graph": gt.times}
        if lat["measured_ms"] is None:
            warnings.append(
                f"{c.id}: the output responded to {lat['onsets_detected']} of {lat['onsets_total']} onsets, too few "
                f"for a latency figure (at least half are needed); a model whose output does not follow its input "
                f"(untrained?) has no measurable latency"
            )
        elif lat["onsets_detected"] < lat["onsets_total"]:
            warnings.append(f"{c.id}: {lat['onsets_total'] - lat['onsets_detected']} of {lat['onsets_total']} "
                            f"onsets gave no response; the latency comes from the others")
    report = build_report(tool="wavae profile", mode="offline", settings=settings, startup=startup,
                          resources=resources_section(rss_before), configs=entries, warnings=warnings)
    return report, series


# ----------------------------------------------------------------------------
# the live run's report
# ----------------------------------------------------------------------------
LIVE_LATENCY_METHOD = (
    "not measured live: no onsets are injected into a running installation (declared figures only)"
)


def write_report(
    recorder: BlockRecorder,
    report_dir: str | Path,
    *,
    bundle=None,
    engine=None,
    backend: str | None = None,
    threads: int | None = None,
    device_rate: int | None = None,
    period: int | None = None,
    prefill_periods: int = DEFAULT_PREFILL_PERIODS,
    xruns: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the live report (JSON, Markdown, PNGs) of ``recorder`` into
    ``report_dir``; returns the JSON's path.  For ``wavae run --profile`` on exit.

    The per-block figures are the engine's (one entry per engine call); the
    latency section holds the engine's declared latency (no onsets are injected
    into a live signal), and the budget uses the recorded p99.
    ``prefill_periods`` is the playback pre-fill (``audio.prefill_periods``);
    ``extra`` (any JSON-able dict: the live loop's xrun counts, late blocks...)
    is kept under ``live.extra``.
    """
    if device_rate is None and engine is not None:
        device_rate = int(engine.device_rate)
    if period is None and engine is not None:
        period = int(engine.period)
    cfg = ProfileConfig(
        "live", Path(bundle.path) if bundle is not None else None, backend, threads, period, device_rate,
        int(prefill_periods), bundle=bundle, backend=getattr(engine, "backend", None), engine=engine,
    )
    eng = recorder.summary()
    declared = declared_latency(engine, bundle, device_rate)
    block_dev = bundle.block * device_rate / bundle.sample_rate if (bundle is not None and device_rate) else None
    latency = latency_summary(LIVE_LATENCY_METHOD, [], declared, device_rate, block_dev)
    budget = None
    if period and device_rate:
        budget = latency_budget(declared, eng["p99_ms"], period, prefill_periods, device_rate)
    entry = config_section(cfg.describe(), engine=eng, latency=latency, budget=budget,
                           engine_stats=getattr(engine, "stats", None))
    settings = settings_section(
        bundles=[entry["bundle"]] if entry["bundle"] else [], backend=backend,
        threads=[threads] if threads is not None else [], blocks=None, period_sizes=[period] if period else [],
        prefill_periods=prefill_periods, device_rate=device_rate, seconds=time.time() - recorder.started_wall,
        seed=None, onsets=0, paced=True, input="live", round_s=None,
    )
    report = build_report(
        tool="wavae run --profile", mode="live", settings=settings,
        startup=startup_section(recorder.startup_s, config="live"), resources=resources_section(),
        configs=[entry], warnings=[], live={"xruns": int(xruns), "extra": json_ready(extra) if extra else None},
    )
    return write_all(report, {"live": {"engine": recorder.series()}}, report_dir)


__all__ = ["DEFAULT_PREFILL_PERIODS", "ProfileConfig", "check_blocks", "profile", "write_report"]
