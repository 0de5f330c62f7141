"""The latency profiler's measurement core (``wavae profile``, ``wavae run --profile``).

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
* **latency**: clicks, noise bursts and tone bursts at seeded random positions go
  through a fresh engine period by period, in real-time order, and their delay
  is detected in the output (energy envelope against the silent background; see
  ``measure_latency``).
* the **action-to-sound budget**, **resources** (RSS, start-up time).

Every per-block series is timed with ``time.perf_counter_ns`` into preallocated
arrays.  ``BlockRecorder`` is the same bookkeeping for a live loop: a fixed ring,
O(1) ``record``, nothing allocated on the audio path; ``write_report`` turns it
into the same report (JSON, Markdown, PNGs) as ``wavae profile``.

Definitions (docs/profile.md has the full schema):

* **jitter** = p99 - p50 of the per-block time (ms): how much later than usual a
  bad block finishes.  The standard deviation is reported too (``std_ms``).
* **RTF** (real-time factor) = total compute time / duration of the audio it
  processed; below 1 keeps up on average.
* **deadline miss**: a block whose compute time exceeds its own duration.
* **measured latency**: an input onset at sample ``t`` captured in period
  ``k = t // P`` can only be processed once that period is complete, at time
  ``(k + 1) P``; the output of that call, played from that moment, puts output
  sample ``n`` of the engine's stream at time ``n + P``.  So an output onset
  detected at ``n`` for an input onset at ``t`` is a latency of ``n + P - t``
  samples, with compute time taken as zero (it is budgeted separately, as p99).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wavae.blocks import check_block
from wavae.errors import WavaeError

SCHEMA_VERSION = 1
TARGET_MS = 10.0  # the action-to-sound delay players cannot tell from zero
DEFAULT_PERIODS = 2  # ALSA periods queued for playback (audio.prefill_periods in device.toml)
ONSET_KINDS = ("click", "noise", "tone")


class ProfileError(WavaeError, ValueError):
    """A profile cannot run as asked (a block, backend or directory that does not fit)."""


# ----------------------------------------------------------------------------
# clocks and resources
# ----------------------------------------------------------------------------
def process_age_s() -> float | None:
    """Seconds since this process started, from ``/proc/self/stat`` (Linux).

    ``starttime`` is in clock ticks since boot (``CLK_TCK``, 100 Hz here: 10 ms
    resolution) and is compared with ``CLOCK_BOOTTIME``.  None where ``/proc``
    is absent.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read().decode()
        # the command name (field 2) may hold spaces; fields after it follow ')'
        after = stat[stat.rindex(")") + 2 :].split()
        start_ticks = int(after[19])  # field 22 overall
        hz = os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / hz
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def clock_tick_s() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


def memory_mib() -> dict[str, float | None]:
    """Resident set size now (``VmRSS``) and its peak (``VmHWM``), in MiB."""
    out: dict[str, float | None] = {"rss_mib": None, "rss_peak_mib": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["rss_peak_mib"] = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_name() -> str:
    """The CPU (x86), or the board (Raspberry Pi, Jetson), from /proc/cpuinfo."""
    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    # x86: "model name"; Raspberry Pi: "Model" (the board) or "Hardware"; Jetson/arm: "model name" may lack
    for key in ("model name", "model", "hardware", "cpu part"):
        v = info.get(key, "")
        if v and not v.isdigit():
            cpu = v
            break
    return cpu


def machine_info() -> dict[str, Any]:
    cpu = cpu_name()
    versions: dict[str, str | None] = {}
    for mod in ("numpy", "onnxruntime", "soxr"):
        m = sys.modules.get(mod)
        versions[mod] = getattr(m, "__version__", None) if m is not None else None
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            wavae_version = version("wavae-edge")
        except PackageNotFoundError:
            wavae_version = None
    except ImportError:  # pragma: no cover
        wavae_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_available": affinity,
        "python": platform.python_version(),
        "wavae": wavae_version,
        **versions,
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------
# statistics of a per-block series
# ----------------------------------------------------------------------------
def summarize(seconds: np.ndarray, deadline_s: float, audio_s: float | None = None) -> dict[str, Any]:
    """Distribution of per-block compute times (seconds in, milliseconds out).

    ``audio_s`` is the duration of audio those blocks covered (RTF = total time /
    audio_s); by default ``count * deadline_s``.
    """
    t = np.asarray(seconds, np.float64)
    n = int(t.size)
    if audio_s is None:
        audio_s = n * deadline_s
    if n == 0:
        return {
            "count": 0, "deadline_ms": deadline_s * 1e3, "mean_ms": None, "std_ms": None, "p50_ms": None,
            "p95_ms": None, "p99_ms": None, "max_ms": None, "jitter_ms": None, "misses": 0, "miss_rate": 0.0,
            "rtf": None,
        }
    ms = t * 1e3
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    misses = int(np.count_nonzero(t > deadline_s))
    return {
        "count": n,
        "deadline_ms": float(deadline_s * 1e3),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": float(ms.max()),
        "jitter_ms": p99 - p50,
        "misses": misses,
        "miss_rate": misses / n,
        "rtf": float(t.sum() / audio_s) if audio_s > 0 else None,
    }


# ----------------------------------------------------------------------------
# test signals
# ----------------------------------------------------------------------------
def music_signal(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonic notes with decaying envelopes and a little noise (mono float32):
    the input the compute timings run on when no ``--input`` is given."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * rate)))
    out = np.zeros(n, np.float64)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.15, 0.5) * rate)
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        end = min(n, pos + dur)
        tt = np.arange(end - pos) / rate
        env = np.exp(-tt * rng.uniform(2, 8)) * rng.uniform(0.1, 0.8)
        for h in range(1, 5):
            out[pos:end] += env * np.sin(2 * np.pi * f0 * h * tt) / h
        pos = end
    out += 0.003 * rng.standard_normal(n)
    return (0.5 * out / max(1e-9, float(np.abs(out).max()))).astype(np.float32)


@dataclass
class OnsetSignal:
    """A silent signal with isolated onsets: ``x`` (float32), ``positions`` (sample
    of each onset), ``kinds`` (click | noise | tone), ``rate``."""

    x: np.ndarray
    positions: np.ndarray
    kinds: list[str]
    rate: int
    gap: int  # samples from one onset slot to the next


def onset_signal(
    rate: int,
    n_onsets: int = 12,
    gap_s: float = 0.4,
    seed: int = 0,
    kinds: Sequence[str] = ONSET_KINDS,
    amplitude: float = 0.5,
    lead_s: float = 0.3,
) -> OnsetSignal:
    """Onsets far apart (one per ``gap_s`` slot) at seeded random offsets, so
    their positions relative to the block grid are spread uniformly.

    * click: 2 ms of white noise under a fast exponential decay (a single-sample
      impulse has too little energy in a mel frame to come out of a vocoder);
    * noise: a 60 ms white-noise burst, 0.5 ms attack, 20 ms release;
    * tone: an 80 ms burst of a 660 Hz tone with two partials, same envelope.

    Each slot is silent for at least its second half, so a model's response
    (and its decay) has settled before the next onset.
    """
    rng = np.random.default_rng(seed)
    gap = int(round(gap_s * rate))
    lead = int(round(lead_s * rate))
    n = lead + n_onsets * gap + lead
    x = np.zeros(n, np.float64)
    positions = np.zeros(n_onsets, np.int64)
    names: list[str] = []
    attack = max(1, int(0.0005 * rate))
    release = max(1, int(0.02 * rate))
    for i in range(n_onsets):
        kind = kinds[i % len(kinds)]
        p = lead + i * gap + int(rng.integers(0, max(1, gap // 4)))
        if kind == "click":
            m = max(4, int(0.002 * rate))
            env = np.exp(-np.arange(m) / (0.0005 * rate))
            burst = rng.standard_normal(m) * env
            burst /= max(1e-9, float(np.abs(burst).max()))
        else:
            m = int((0.06 if kind == "noise" else 0.08) * rate)
            env = np.ones(m)
            env[:attack] = np.linspace(0, 1, attack, endpoint=False)
            env[m - release :] = np.linspace(1, 0, release)
            if kind == "noise":
                burst = np.clip(rng.standard_normal(m) / 2.5, -1, 1) * env
            elif kind == "tone":
                tt = np.arange(m) / rate
                f = 660.0
                burst = (0.7 * np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(2 * np.pi * 2 * f * tt)) * env
            else:
                raise ProfileError(f"unknown onset kind {kind!r}; choose from {', '.join(ONSET_KINDS)}")
        x[p : p + m] += amplitude * burst
        positions[i] = p
        names.append(kind)
    return OnsetSignal(x.astype(np.float32), positions, names, int(rate), gap)


def envelope(x: np.ndarray, rate: int, window_s: float = 0.001) -> np.ndarray:
    """RMS envelope over a centred window (1 ms): the same smoothing on input and
    output, so it shifts neither relative to the other."""
    x = np.asarray(x, np.float64).reshape(-1)
    w = max(3, int(round(window_s * rate)) | 1)
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    half = w // 2
    idx = np.arange(x.size)
    lo = np.clip(idx - half, 0, x.size)
    hi = np.clip(idx + half + 1, 0, x.size)
    return np.sqrt(np.maximum(c[hi] - c[lo], 0.0) / (hi - lo))


def first_rise(env: np.ndarray, lo: int, hi: int, bg: tuple[int, int], fraction: float, min_snr_db: float):
    """First index in ``[lo, hi)`` where ``env`` rises ``fraction`` of the way from
    the background level (median over ``bg``) to the peak in ``[lo, hi)``.

    Returns ``(index, snr_db)``, index None when the peak does not stand
    ``min_snr_db`` above the background (plus a robust spread of it).
    """
    b0, b1 = bg
    seg = env[lo:hi]
    if seg.size == 0:
        return None, 0.0
    if b1 > b0:
        back = env[b0:b1]
        level = float(np.median(back))
        spread = float(np.median(np.abs(back - level))) * 1.4826
    else:
        level, spread = 0.0, 0.0
    peak = float(seg.max())
    floor = max(level + 6.0 * spread, level, 1e-7)
    snr_db = 20 * math.log10(max(peak, 1e-12) / floor)
    if snr_db < min_snr_db:
        return None, snr_db
    thr = max(level + fraction * (peak - level), level + 6.0 * spread)
    above = np.flatnonzero(seg > thr)
    if above.size == 0:  # pragma: no cover - the peak itself is above thr
        return None, snr_db
    return lo + int(above[0]), snr_db


def detect_latency(
    sig: OnsetSignal,
    y: np.ndarray,
    y_ref: np.ndarray | None,
    period: int,
    search_before: int,
    search_after: int,
    fraction: float = 0.2,
    min_snr_db: float = 20.0,
    influence_db: float = -60.0,
) -> dict[str, Any]:
    """Per-onset latency (device samples) of ``y``, the engine's output stream for
    ``sig.x`` fed ``period`` samples at a time.

    ``y_ref`` is the output for the same stream without the onsets (silence),
    from the same reset state.  The engine is deterministic, so ``y - y_ref`` is
    exactly zero until an onset can influence the output and is the model's
    response to it alone: a model's own hum, DC or noise floor cancels.  (Without
    ``y_ref`` the raw output is used, against its own background.)

    For each onset at ``p`` the input onset ``t`` and the output onset ``n`` are the
    first rises of the envelopes, ``fraction`` of the way from the background to
    the peak (the same detector on both).  ``n`` is searched in
    ``[p - search_before, p + search_after)``; the background is measured just
    before that window.  Latency = ``n + period - t`` (the module docstring
    explains the ``+ period``).  ``first_influence`` is the first sample where the
    response exceeds ``influence_db`` relative to its peak: the earliest output the
    onset changes at all (a bound set by causality, not a perceptual onset).
    """
    rate = sig.rate
    y = np.asarray(y, np.float64)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if y_ref is not None:
        r = np.asarray(y_ref, np.float64)
        if r.ndim == 2:
            r = r.mean(axis=1)
        y = y - r[: y.size]
    env_in = envelope(sig.x, rate)
    env_out = envelope(y, rate)
    rel = 10 ** (influence_db / 20)
    rows = []
    for p, kind in zip(sig.positions, sig.kinds):
        p = int(p)
        t_in, _ = first_rise(env_in, max(0, p - sig.gap // 8), p + sig.gap // 4, (0, 0), fraction, 0.0)
        lo = max(0, p - search_before)
        hi = min(y.size, p + search_after)
        b1 = lo
        b0 = max(0, b1 - sig.gap // 3)
        n_out, snr = first_rise(env_out, lo, hi, (b0, b1), fraction, min_snr_db)
        first = None
        if n_out is not None:
            seg = np.abs(y[lo:hi])
            back = float(np.abs(y[b0:b1]).max()) if b1 > b0 else 0.0
            over = np.flatnonzero(seg > max(rel * float(seg.max()), 2.0 * back))
            first = lo + int(over[0]) if over.size else None
        ok = n_out is not None and t_in is not None
        rows.append(
            {
                "kind": kind,
                "position": p,
                "input_onset": t_in,
                "output_onset": n_out,
                "first_influence": first,
                "snr_db": float(snr),
                "latency_samples": int(n_out + period - t_in) if ok else None,
                "first_influence_samples": int(first + period - t_in) if (ok and first is not None) else None,
            }
        )
    return {"onsets": rows}


# ----------------------------------------------------------------------------
# running an engine and a backend
# ----------------------------------------------------------------------------
def as_frames(x: np.ndarray, channels: int) -> np.ndarray:
    """Mono ``[n]`` -> ``[n, channels]`` float32, C-contiguous (every period a view)."""
    x = np.asarray(x, np.float32).reshape(-1)
    return np.ascontiguousarray(np.repeat(x[:, None], channels, axis=1))


def run_engine(engine, x: np.ndarray, period: int) -> np.ndarray:
    """Feed ``x`` ``[n, ch]`` to ``engine`` period by period (the tail padded with
    zeros to a whole period); return the output stream ``[n_padded, ch_out]``."""
    n = x.shape[0]
    n_periods = -(-n // period)
    pad = n_periods * period - n
    if pad:
        x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)])
    outs = []
    for k in range(n_periods):
        y = engine.process(x[k * period : (k + 1) * period])
        outs.append(np.array(y, dtype=np.float32, copy=True))
    return np.concatenate(outs)


class EngineTimer:
    """Times ``engine.process`` per period over a looping input, in chunks, so
    several configurations can be interleaved round by round."""

    def __init__(self, engine, x: np.ndarray, period: int, rate: int, n_periods: int, paced: bool = False):
        self.engine = engine
        self.period = int(period)
        self.rate = int(rate)
        n_src = x.shape[0] // self.period
        if n_src < 1:
            raise ProfileError(f"the timing input is shorter than one period ({self.period} samples)")
        self.x = np.ascontiguousarray(x[: n_src * self.period])
        self.n_src = n_src
        self.times = np.zeros(n_periods, np.float64)
        self.out = np.zeros((self.period, getattr(engine, "channels_out", 1)), np.float32)
        self.done = 0
        self.paced = paced

    @property
    def finished(self) -> bool:
        return self.done >= self.times.size

    def run(self, count: int) -> None:
        eng, P, x, out = self.engine, self.period, self.x, self.out
        end = min(self.times.size, self.done + count)
        times = self.times
        pc = time.perf_counter_ns
        dt = P / self.rate
        t_next = time.perf_counter() + dt if self.paced else 0.0
        for k in range(self.done, end):
            j = k % self.n_src
            blk = x[j * P : (j + 1) * P]
            if self.paced:
                wait = t_next - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t_next += dt
            t0 = pc()
            eng.process(blk, out)
            times[k] = (pc() - t0) * 1e-9
        self.done = end


class GraphTimer:
    """Times one model block (encoder then decoder) straight on a backend's
    public ``process`` API, over a looping model-rate input."""

    def __init__(self, backend, block: int, x: np.ndarray, n_blocks: int):
        self.backend = backend
        self.block = int(block)
        n_src = x.size // self.block
        if n_src < 1:
            raise ProfileError(f"the timing input is shorter than one model block ({self.block} samples)")
        self.x = np.ascontiguousarray(np.asarray(x, np.float32)[: n_src * self.block]).reshape(n_src, 1, 1, self.block)
        self.n_src = n_src
        self.times = np.zeros(n_blocks, np.float64)
        self.gpu_times: np.ndarray | None = None
        self.done = 0
        self.es = backend.init_state("encoder")
        self.ds = backend.init_state("decoder")
        # TensorRT on a GPU: a backend that times its steps with CUDA events exposes
        # ``last_gpu_ms`` (ms of GPU time of its last ``process`` call)
        self._gpu = hasattr(backend, "last_gpu_ms")
        if self._gpu:
            self.gpu_times = np.full(n_blocks, np.nan)

    @property
    def finished(self) -> bool:
        return self.done >= self.times.size

    def run(self, count: int) -> None:
        be = self.backend
        end = min(self.times.size, self.done + count)
        pc = time.perf_counter_ns
        es, ds = self.es, self.ds
        gpu = self._gpu
        for k in range(self.done, end):
            blk = self.x[k % self.n_src]
            t0 = pc()
            enc, es = be.process("encoder", {"audio": blk}, es)
            g_enc = be.last_gpu_ms if gpu else None
            dec, ds = be.process("decoder", {"z": enc["z_mean"], "loudness": enc["loudness"]}, ds)
            self.times[k] = (pc() - t0) * 1e-9
            if gpu and g_enc is not None and be.last_gpu_ms is not None:  # only reached on a GPU
                self.gpu_times[k] = (g_enc + be.last_gpu_ms) * 1e-3
        self.es, self.ds = es, ds
        self.done = end


# ----------------------------------------------------------------------------
# latency
# ----------------------------------------------------------------------------
def declared_latency(engine, bundle, device_rate: int | None) -> dict[str, Any]:
    """The engine's own latency report (``Engine.latency()``: total = period +
    output-FIFO prefill, split into resampler, algorithmic and buffering), in ms
    and device samples, with the bundle's declared model latency beside it.
    Any of ``engine``, ``bundle`` may be None (fields then None)."""
    raw = engine.latency() if (engine is not None and hasattr(engine, "latency")) else {}
    rate = int(device_rate) if device_rate else None
    out: dict[str, Any] = {"engine": _plain(raw) if raw else None}
    out["model_latency_samples"] = int(bundle.latency_samples) if bundle is not None else None
    out["model_latency_ms"] = 1e3 * bundle.latency_samples / bundle.sample_rate if bundle is not None else None
    out["block_ms"] = 1e3 * bundle.block / bundle.sample_rate if bundle is not None else None
    total_ms = _ms(raw, "total", rate) if rate else None
    out["total_ms"] = total_ms
    out["total_samples"] = None if (total_ms is None or not rate) else total_ms * rate / 1e3
    for part in ("resampler", "algorithmic", "buffering"):
        out[f"{part}_ms"] = _ms(raw, part, rate) if rate else None
    return out


def _ms(raw: Any, key: str, rate: int) -> float | None:
    """Read ``key`` (ms) from an engine latency report: ``{key: {"ms"|"samples": ..}}``,
    ``{key + "_samples": ..}`` (device samples) or ``{key + "_ms": ..}``."""
    if not isinstance(raw, dict):
        return None
    v = raw.get(key)
    if isinstance(v, dict):
        if isinstance(v.get("ms"), (int, float)):
            return float(v["ms"])
        if isinstance(v.get("samples"), (int, float)):
            return 1e3 * float(v["samples"]) / rate
    if isinstance(raw.get(f"{key}_samples"), (int, float)):  # samples first: finer than rounded ms
        return 1e3 * float(raw[f"{key}_samples"]) / rate
    if isinstance(raw.get(f"{key}_ms"), (int, float)):
        return float(raw[f"{key}_ms"])
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return 1e3 * float(v) / rate  # bare numbers are samples at the device rate
    return None


def _plain(obj: Any) -> Any:
    """JSON-ready copy (numpy scalars to Python, tuples to lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def measure_latency(
    engine,
    bundle,
    device_rate: int,
    period: int,
    channels_in: int = 1,
    n_onsets: int = 12,
    seed: int = 0,
    gap_s: float | None = None,
    fraction: float = 0.2,
) -> dict[str, Any]:
    """Measure the latency of ``engine`` with isolated onsets (``detect_latency``).

    The engine is reset and fed silence (the reference), reset and fed the onset
    signal, period by period in real-time order, and reset again afterwards.  The
    result has the per-onset rows, the mean, spread (std: the position jitter),
    median, min and max in ms, and the declared latency it is compared with
    (``declared_latency``).
    """
    declared = declared_latency(engine, bundle, device_rate)
    block_dev = bundle.block * device_rate / bundle.sample_rate
    expected = declared["total_samples"]
    if expected is None:
        expected = (bundle.latency_samples + bundle.block) * device_rate / bundle.sample_rate + period
    # slots long enough for the declared delay, slack for a smeared response, and its decay
    gap = gap_s if gap_s is not None else max(0.5, 4 * (expected + 2 * block_dev + period) / device_rate + 0.2)
    sig = onset_signal(device_rate, n_onsets=n_onsets, gap_s=gap, seed=seed)
    frames = as_frames(sig.x, channels_in)
    engine.reset()
    y_ref = run_engine(engine, np.zeros_like(frames), period)
    engine.reset()
    y = run_engine(engine, frames, period)
    engine.reset()
    search_before = int(2 * block_dev + period)
    search_after = int(sig.gap // 2)
    det = detect_latency(sig, y, y_ref, period, search_before, search_after, fraction=fraction)
    rows = det["onsets"]
    lat = np.array([r["latency_samples"] for r in rows if r["latency_samples"] is not None], np.float64)
    infl = np.array([r["first_influence_samples"] for r in rows if r["first_influence_samples"] is not None], np.float64)
    ms = lat * 1e3 / device_rate
    # a figure from a few stray detections would mislead: report it only when most onsets answered
    have = lat.size >= max(3, (len(rows) + 1) // 2)
    out: dict[str, Any] = {
        "method": (
            f"onsets ({', '.join(ONSET_KINDS)}) every {gap:.2f} s at seeded random offsets; output minus the "
            f"output for silence; 1 ms RMS envelope; onset = first rise {fraction:.0%} of the way from background "
            f"to peak; latency = output onset + period - input onset"
        ),
        "onsets_total": len(rows),
        "onsets_detected": int(lat.size),
        "measured_ms": float(ms.mean()) if have else None,
        "measured_samples": float(lat.mean()) if have else None,
        "median_ms": float(np.median(ms)) if have else None,
        "std_ms": float(ms.std()) if have else None,
        "min_ms": float(ms.min()) if have else None,
        "max_ms": float(ms.max()) if have else None,
        "first_influence_ms": float(infl.mean() * 1e3 / device_rate) if (have and infl.size) else None,
        "first_influence_max_ms": float(infl.max() * 1e3 / device_rate) if (have and infl.size) else None,
        "declared": declared,
        "block_device_samples": float(block_dev),
        "error_ms": None,
        "within_one_block": None,
        "onsets": rows,
    }
    tot = declared["total_ms"]
    if have and tot is not None:
        out["error_ms"] = out["measured_ms"] - tot
        out["within_one_block"] = bool(abs(out["error_ms"]) <= declared["block_ms"])
    return out


# ----------------------------------------------------------------------------
# the action-to-sound budget
# ----------------------------------------------------------------------------
def latency_budget(
    declared: dict[str, Any],
    compute_p99_ms: float | None,
    period: int,
    periods: int,
    device_rate: int,
    measured_ms: float | None = None,
) -> dict[str, Any]:
    """ALSA buffering + resampling + algorithmic + engine buffering: the round trip.

    * ``alsa_buffering_ms`` = ``(periods - 1) * period`` at the device rate: the
      playback queue ahead of the period just written (the live loop pre-fills
      ``audio.prefill_periods``, 2 by default, and one of those periods is the
      capture period, which the engine's figure already holds).
    * resampler, algorithmic and engine buffering are the engine's declared split
      of its latency (``Engine.latency()``), whose total is the period being
      captured plus the output FIFO's prefill.
    The sum equals the live loop's measured round trip (engine signal delay +
    ``periods`` x ``period``; tests/test_alsa_file.py checks that offset).
    * ``compute_p99_ms`` does not lengthen the round trip: one engine call must
      fit in the ``(periods - 1) * period`` of queued playback, or the loop
      underruns.  ``compute_budget_ms`` is that time and ``compute_fits`` says
      whether the p99 fits it.

    Where the engine gives no split (an engine without ``latency()``), the
    measured latency stands in for the model's side.
    """
    alsa_ms = 1e3 * (periods - 1) * period / device_rate
    parts = {
        "alsa_buffering_ms": alsa_ms,
        "resampler_ms": declared.get("resampler_ms"),
        "algorithmic_ms": declared.get("algorithmic_ms"),
        "engine_buffering_ms": declared.get("buffering_ms"),
    }
    source = "declared"
    if parts["algorithmic_ms"] is None:
        source = "measured" if measured_ms is not None else "model"
        parts["algorithmic_ms"] = measured_ms if measured_ms is not None else declared.get("model_latency_ms")
        parts["resampler_ms"] = None
        parts["engine_buffering_ms"] = None
    total = sum(v for v in parts.values() if v is not None)
    return {
        **parts,
        "compute_p99_ms": compute_p99_ms,
        "compute_budget_ms": alsa_ms,
        "compute_fits": None if compute_p99_ms is None else bool(compute_p99_ms <= alsa_ms),
        "total_ms": float(total),
        "target_ms": TARGET_MS,
        "within_target": bool(total <= TARGET_MS),
        "periods": int(periods),
        "period": int(period),
        "model_side_source": source,
    }


# ----------------------------------------------------------------------------
# the live recorder
# ----------------------------------------------------------------------------
class BlockRecorder:
    """Per-block compute times of a live loop, in a preallocated ring.

    ``record(seconds)`` (or ``record_ns(t0_ns, t1_ns)``) is O(1) and allocates
    nothing on the audio path: it writes one slot of a fixed float64 array and
    updates a few counters.  The ring keeps the newest ``capacity`` blocks (the
    distribution and plots use those); ``count``, ``misses`` and ``max_s`` cover
    the whole run.  The first call also stamps the start-up time (process start
    to the first block out).
    """

    def __init__(self, capacity: int, deadline_s: float, audio_per_block_s: float | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.deadline_s = float(deadline_s)
        self.audio_per_block_s = float(audio_per_block_s if audio_per_block_s is not None else deadline_s)
        self._ring = np.zeros(self.capacity, np.float64)
        self.count = 0
        self.misses = 0
        self.max_s = 0.0
        self.total_s = 0.0
        self.startup_s: float | None = None
        self.started_wall = time.time()
        self.xruns = 0

    def record(self, seconds: float) -> None:
        i = self.count % self.capacity
        self._ring[i] = seconds
        if self.count == 0:
            self.startup_s = process_age_s()
        self.count += 1
        self.total_s += seconds
        if seconds > self.deadline_s:
            self.misses += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def record_ns(self, t0_ns: int, t1_ns: int) -> None:
        self.record((t1_ns - t0_ns) * 1e-9)

    @classmethod
    def for_engine(cls, engine, seconds: float = 600.0) -> "BlockRecorder":
        """A recorder for one ``engine.process`` per engine period: deadline = the
        period's duration, ring = the last ``seconds`` of audio."""
        per_s = engine.period / engine.device_rate
        return cls(max(1, int(math.ceil(seconds / per_s))), per_s)

    def series(self) -> np.ndarray:
        """The recorded times in chronological order (a copy; the last ``capacity``)."""
        n = min(self.count, self.capacity)
        if self.count <= self.capacity:
            return self._ring[:n].copy()
        i = self.count % self.capacity
        return np.concatenate([self._ring[i:], self._ring[:i]])

    def summary(self) -> dict[str, Any]:
        s = summarize(self.series(), self.deadline_s, audio_s=min(self.count, self.capacity) * self.audio_per_block_s)
        s["blocks_total"] = self.count
        s["misses_total"] = self.misses
        s["max_total_ms"] = self.max_s * 1e3
        s["rtf_total"] = self.total_s / (self.count * self.audio_per_block_s) if self.count else None
        s["window_blocks"] = min(self.count, self.capacity)
        return s


class TimedStep:
    """Wraps a live loop's per-period callable (``y = step(x)``) and records each
    call's time in ``recorder``; everything else (``reset``, attributes) passes
    through.  Wrap the engine step, not a worker-mode processor: the step is where
    the compute happens, on whichever thread runs it (one writer per recorder)."""

    def __init__(self, step: Callable[[np.ndarray], np.ndarray], recorder: BlockRecorder):
        self._step = step
        self.recorder = recorder

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter_ns()
        y = self._step(x)
        self.recorder.record_ns(t0, time.perf_counter_ns())
        return y

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)


# ----------------------------------------------------------------------------
# configurations and the whole profile
# ----------------------------------------------------------------------------
@dataclass
class ProfileConfig:
    """One measured combination."""

    id: str
    bundle_path: Path
    backend_kind: str
    threads: int
    period: int
    device_rate: int
    bundle: Any = None
    backend: Any = None  # the engine's
    graph_backend: Any = None  # a second instance for graph timing
    engine: Any = None
    load_s: float | None = None
    first_block_ms: float | None = None
    rss_delta_mib: float | None = None
    engine_timer: EngineTimer | None = None
    graph_timer: GraphTimer | None = None
    latency: dict[str, Any] | None = None
    gpu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        b = self.bundle
        src = b.manifest.get("source", {}) if b is not None else {}
        return {
            "id": self.id,
            "bundle": str(self.bundle_path),
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
            "period_ms": 1e3 * self.period / self.device_rate,
        }


def first_model_block_ms(engine, period: int, max_calls: int = 100000) -> float:
    """Milliseconds of ``engine.process`` calls (silence in) until the first call
    that ran the model: the first period out that the model made, not FIFO
    pre-fill.  Counts calls by ``engine.stats["blocks"]`` where the engine has it."""
    x = np.zeros((period, getattr(engine, "channels_in", 1)), np.float32)
    stats = getattr(engine, "stats", None)
    t0 = time.perf_counter()
    if not isinstance(stats, dict) or "blocks" not in stats:
        engine.process(x)
        return (time.perf_counter() - t0) * 1e3
    start = stats["blocks"]
    for _ in range(max_calls):
        engine.process(x)
        if stats["blocks"] > start:
            break
    return (time.perf_counter() - t0) * 1e3


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


def profile(
    bundle_paths: Sequence[Path],
    *,
    backend: str = "onnxruntime",
    threads: Sequence[int] = (1,),
    blocks: Sequence[int] | None = None,
    periods_list: Sequence[int] = (256,),
    device_rate: int = 48000,
    playback_periods: int = DEFAULT_PERIODS,
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
    """Measure every configuration (bundles x threads x periods); return the
    report dict (docs/profile.md) and the raw per-block series for the plots
    (``{config_id: {"engine": seconds[], "graph": seconds[]}}``).

    Timings are interleaved: in each round every configuration runs
    ``round_s`` seconds of audio, so slow drifts of a shared machine (thermal,
    other processes) hit all configurations alike and their ratios hold.
    """
    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine

    say = progress or (lambda msg: None)
    mem0 = memory_mib()
    bundles = []
    for p in bundle_paths:
        bundles.append(load_bundle(p))
    check_blocks(bundles, blocks)
    warnings_: list[str] = []
    if blocks:
        for b in bundles:
            if b.block not in set(blocks):
                warnings_.append(f"bundle {b.path} (block {b.block}) skipped: its block is not among --block")
        bundles = [b for b in bundles if b.block in set(blocks)]

    configs: list[ProfileConfig] = []
    for bi, b in enumerate(bundles):
        for th in threads:
            for per in periods_list:
                cid = f"b{bi}-t{th}-p{per}"
                configs.append(ProfileConfig(cid, Path(b.path), backend, int(th), int(per), int(device_rate), bundle=b))

    startup: dict[str, Any] = {"clock_resolution_s": clock_tick_s()}
    for i, c in enumerate(configs):
        say(f"loading {c.id}: {c.bundle_path.name}, {c.threads} thread(s), period {c.period}")
        before = memory_mib()["rss_mib"]
        t0 = time.perf_counter()
        c.bundle = load_bundle(c.bundle_path) if i else c.bundle
        c.backend = make_backend(c.bundle, kind=c.backend_kind, threads=c.threads)
        c.engine = Engine(c.bundle, c.backend, device_rate=c.device_rate, period=c.period, channels_in=1, channels_out=1)
        c.load_s = time.perf_counter() - t0
        c.first_block_ms = first_model_block_ms(c.engine, c.period)
        if i == 0:
            startup["process_to_first_block_s"] = process_age_s()
            startup["import_to_first_block_s"] = (time.monotonic() - t_import) if t_import is not None else None
            startup["load_s"] = c.load_s
            startup["first_block_ms"] = c.first_block_ms
            startup["config"] = c.id
        c.engine.reset()
        c.graph_backend = make_backend(c.bundle, kind=c.backend_kind, threads=c.threads)
        after = memory_mib()["rss_mib"]
        c.rss_delta_mib = (after - before) if (after is not None and before is not None) else None

    # inputs -----------------------------------------------------------------
    def signal_at(rate: int, secs: float) -> np.ndarray:
        if input_audio is not None:
            from wavae.device.resample import resample_offline

            x, sr = input_audio
            return resample_offline(x, sr, rate) if sr != rate else np.asarray(x, np.float32)
        return music_signal(rate, secs, seed)

    src_secs = min(seconds, 20.0)
    dev_in = as_frames(signal_at(device_rate, src_secs), 1)
    model_in: dict[int, np.ndarray] = {}
    for c in configs:
        sr = c.bundle.sample_rate
        if sr not in model_in:
            model_in[sr] = signal_at(sr, src_secs)
        n_periods = max(1, int(round(seconds * device_rate / c.period)))
        n_blocks = max(1, int(round(seconds * sr / c.bundle.block)))
        c.engine_timer = EngineTimer(c.engine, dev_in, c.period, device_rate, n_periods, paced=paced)
        c.graph_timer = GraphTimer(c.graph_backend, c.bundle.block, model_in[sr], n_blocks)

    # interleaved timing -----------------------------------------------------
    say(f"timing {len(configs)} configuration(s), {seconds:g} s of audio each, interleaved")
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(configs) * 2 * seconds, unit="audio s", desc="profile", file=sys.stderr,
                   dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} audio s [{elapsed}<{remaining}]")
    while not all(c.engine_timer.finished and c.graph_timer.finished for c in configs):
        for c in configs:
            et, gt = c.engine_timer, c.graph_timer
            time.sleep(0.002)  # let the previous chunk's spinning runtime threads park
            if not et.finished:
                n = max(1, int(round(round_s * device_rate / c.period)))
                before = et.done
                et.run(n)
                if bar is not None:
                    bar.update((et.done - before) * c.period / device_rate)
            if not gt.finished:
                time.sleep(0.002)
                n = max(1, int(round(round_s * c.bundle.sample_rate / c.bundle.block)))
                before = gt.done
                gt.run(n)
                if bar is not None:
                    bar.update((gt.done - before) * c.bundle.block / c.bundle.sample_rate)
    if bar is not None:
        bar.close()

    # latency ------------------------------------------------------------------
    for c in configs:
        say(f"measuring latency of {c.id} with {n_onsets} onsets")
        c.latency = measure_latency(c.engine, c.bundle, device_rate, c.period, n_onsets=n_onsets, seed=seed)

    # report ---------------------------------------------------------------------
    series: dict[str, dict[str, np.ndarray]] = {}
    out_configs = []
    for c in configs:
        et, gt = c.engine_timer, c.graph_timer
        eng = summarize(et.times, c.period / device_rate)
        graph = summarize(gt.times, c.bundle.block / c.bundle.sample_rate)
        gpu = None
        if gt.gpu_times is not None:
            g = gt.gpu_times[np.isfinite(gt.gpu_times)]
            gpu = summarize(g, c.bundle.block / c.bundle.sample_rate)
        graph["gpu"] = gpu
        lat = c.latency
        budget = latency_budget(lat["declared"], eng["p99_ms"], c.period, playback_periods, device_rate, lat["measured_ms"])
        entry = c.describe()
        entry.update(
            {
                "load_s": c.load_s,
                "first_block_ms": c.first_block_ms,
                "rss_delta_mib": c.rss_delta_mib,
                "engine": eng,
                "graph": graph,
                "latency": lat,
                "budget": budget,
                "engine_stats": _plain(getattr(c.engine, "stats", None)) if _jsonable(getattr(c.engine, "stats", None)) else None,
            }
        )
        out_configs.append(entry)
        series[c.id] = {"engine": et.times, "graph": gt.times}
        if lat["measured_ms"] is None:
            warnings_.append(
                f"{c.id}: the output responded to {lat['onsets_detected']} of {lat['onsets_total']} onsets, too few "
                f"for a latency figure (at least half are needed); a model whose output does not follow its input "
                f"(untrained?) has no measurable latency"
            )
        elif lat["onsets_detected"] < lat["onsets_total"]:
            warnings_.append(f"{c.id}: {lat['onsets_total'] - lat['onsets_detected']} of {lat['onsets_total']} "
                             f"onsets gave no response; the latency comes from the others")

    mem = memory_mib()
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "wavae profile",
        "mode": "offline",
        "created": utc_now(),
        "machine": machine_info(),
        "settings": {
            "bundles": [str(p) for p in bundle_paths],
            "backend": backend,
            "threads": [int(t) for t in threads],
            "blocks": [int(b) for b in blocks] if blocks else None,
            "periods": [int(p) for p in periods_list],
            "playback_periods": int(playback_periods),
            "device_rate": int(device_rate),
            "seconds": float(seconds),
            "seed": int(seed),
            "onsets": int(n_onsets),
            "paced": bool(paced),
            "input": "music" if input_audio is None else "file",
            "round_s": float(round_s),
        },
        "startup": startup,
        "resources": {
            "rss_mib": mem["rss_mib"],
            "rss_peak_mib": mem["rss_peak_mib"],
            "rss_before_load_mib": mem0["rss_mib"],
        },
        "configs": out_configs,
        "comparisons": comparisons(out_configs),
        "files": {},
        "warnings": warnings_,
    }
    for c in configs:
        for be in (c.backend, c.graph_backend):
            if hasattr(be, "close"):
                be.close()
    return report, series


def _jsonable(obj: Any) -> bool:
    import json

    if obj is None:
        return False
    try:
        json.dumps(_plain(obj))
        return True
    except (TypeError, ValueError):
        return False


def comparisons(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Side-by-side ratios (config time / reference time; below 1 = faster).

    For each configuration, its reference is the configuration that differs from
    it in exactly one axis and has that axis at its first value: threads vs the
    first thread count, bundle vs the first bundle (e.g. int8 vs fp32), period vs
    the first period.
    """
    out = []
    if not configs:
        return out
    axes = ("bundle", "threads", "period")
    firsts = {a: configs[0][a] for a in axes}
    for c in configs:
        for a in axes:
            if c[a] == firsts[a]:
                continue
            ref = next(
                (r for r in configs if r[a] == firsts[a] and all(r[o] == c[o] for o in axes if o != a)),
                None,
            )
            if ref is None:
                continue
            row = {"config": c["id"], "reference": ref["id"], "axis": a, "value": c[a], "reference_value": ref[a]}
            for sec in ("graph", "engine"):
                for stat in ("p50_ms", "p99_ms", "mean_ms"):
                    num, den = c[sec][stat], ref[sec][stat]
                    row[f"{sec}_{stat[:-3]}_ratio"] = (num / den) if (num is not None and den) else None
            out.append(row)
    return out


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
    periods: int = DEFAULT_PERIODS,
    xruns: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the live report (JSON, Markdown, PNGs) of ``recorder`` into
    ``report_dir``; returns the JSON's path.  For ``wavae run --profile`` on exit.

    The per-block figures are the engine's (one entry per engine call); the
    latency section holds the engine's declared latency (no onsets are injected
    into a live signal), and the budget uses the recorded p99.  ``periods`` is
    the playback pre-fill in periods; ``extra`` (any JSON-able dict: the live
    loop's xrun counts, late blocks...) is kept under ``live.extra``.
    """
    from . import report as rep

    if device_rate is None and engine is not None:
        device_rate = int(engine.device_rate)
    if period is None and engine is not None:
        period = int(engine.period)
    eng = recorder.summary()
    declared = declared_latency(engine, bundle, device_rate)
    latency = {
        "method": "not measured live: no onsets are injected into a running installation (declared figures only)",
        "onsets_total": 0, "onsets_detected": 0, "measured_ms": None, "measured_samples": None,
        "median_ms": None, "std_ms": None, "min_ms": None, "max_ms": None,
        "first_influence_ms": None, "first_influence_max_ms": None, "declared": declared,
        "block_device_samples": (bundle.block * device_rate / bundle.sample_rate) if (bundle and device_rate) else None,
        "error_ms": None, "within_one_block": None, "onsets": [],
    }
    src = bundle.manifest.get("source", {}) if bundle is not None else {}
    cfg: dict[str, Any] = {
        "id": "live",
        "bundle": str(bundle.path) if bundle is not None else None,
        "preset": src.get("preset") if isinstance(src, dict) else None,
        "precision": getattr(bundle, "precision", None),
        "backend": backend,
        "backend_description": engine.backend.describe() if hasattr(getattr(engine, "backend", None), "describe") else backend,
        "threads": threads,
        "sample_rate": getattr(bundle, "sample_rate", None),
        "block": getattr(bundle, "block", None),
        "frame": getattr(bundle, "frame", None),
        "block_ms": (1e3 * bundle.block / bundle.sample_rate) if bundle is not None else None,
        "device_rate": device_rate,
        "period": period,
        "period_ms": (1e3 * period / device_rate) if (period and device_rate) else None,
        "load_s": None,
        "first_block_ms": None,
        "rss_delta_mib": None,
        "engine": eng,
        "graph": None,
        "latency": latency,
        "budget": latency_budget(declared, eng["p99_ms"], period, periods, device_rate) if (period and device_rate) else None,
        "engine_stats": _plain(getattr(engine, "stats", None)) if _jsonable(getattr(engine, "stats", None)) else None,
    }
    mem = memory_mib()
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": "wavae run --profile",
        "mode": "live",
        "created": utc_now(),
        "machine": machine_info(),
        "settings": {
            "bundles": [cfg["bundle"]] if cfg["bundle"] else [],
            "backend": backend,
            "threads": [threads] if threads is not None else [],
            "blocks": None,
            "periods": [period] if period else [],
            "playback_periods": int(periods),
            "device_rate": device_rate,
            "seconds": float(time.time() - recorder.started_wall),
            "seed": None,
            "onsets": 0,
            "paced": True,
            "input": "live",
            "round_s": None,
        },
        "startup": {
            "clock_resolution_s": clock_tick_s(),
            "process_to_first_block_s": recorder.startup_s,
            "import_to_first_block_s": None,
            "load_s": None,
            "first_block_ms": None,
            "config": "live",
        },
        "resources": {"rss_mib": mem["rss_mib"], "rss_peak_mib": mem["rss_peak_mib"], "rss_before_load_mib": None},
        "configs": [cfg],
        "comparisons": [],
        "files": {},
        "warnings": [],
        "live": {"xruns": int(xruns if xruns is not None else recorder.xruns), "extra": _plain(extra) if extra else None},
    }
    return rep.write_all(report, {"live": {"engine": recorder.series()}}, report_dir)
