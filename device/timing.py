"""Per-block compute times: recording them, timing an engine or a backend, and
summing them up.

* ``BlockRecorder``: the bookkeeping for a live loop (and for anything that
  times blocks on the audio path): a preallocated ring, O(1) ``record``,
  nothing allocated per block.  ``TimedStep`` wraps a per-period callable and
  records each call in one.
* ``EngineTimer``, ``GraphTimer``: the offline profiler's timers, one
  ``Engine.process`` call per period, or one model block straight on a backend,
  run in chunks so that several configurations can be interleaved.
* ``summarize``: the distribution of a series (percentiles, jitter, misses, RTF).

Every time is taken with ``time.perf_counter_ns`` into preallocated arrays.
Definitions (docs/profile.md):

* **jitter** = p99 - p50 of the per-block time (ms): how much later than usual a
  bad block finishes.  The standard deviation is reported too (``std_ms``).
* **RTF** (real-time factor) = total compute time / duration of the audio it
  processed; below 1 keeps up on average.
* **deadline miss**: a block whose compute time exceeds its own duration.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .machine import process_age_s
from .report import ProfileError


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
# recording on the audio path
# ----------------------------------------------------------------------------
class BlockRecorder:
    """Per-block compute times in a preallocated ring.

    ``record(seconds)`` (or ``record_ns(t0_ns, t1_ns)``) is O(1) and allocates
    nothing on the audio path: it writes one slot of a fixed float64 array and
    updates a few counters.  One writer per recorder.  The ring keeps the newest
    ``capacity`` blocks (``series`` and ``summary`` use those); ``count``,
    ``misses``, ``max_s`` and ``total_s`` cover the whole run.  The first call
    also stamps ``startup_s`` (process start to the first block out).

    Read-only from outside: ``capacity``, ``deadline_s``, ``audio_per_block_s``,
    ``count``, ``misses``, ``max_s``, ``total_s``, ``startup_s``, ``started_wall``
    (``time.time()`` at construction).
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

    def record(self, seconds: float) -> None:
        """Record one block's compute time (seconds)."""
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
        """Record one block from two ``time.perf_counter_ns`` stamps."""
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
        """``summarize`` of the ring, plus the whole run's counts (the report's live stats)."""
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
# timing an engine and a backend offline
# ----------------------------------------------------------------------------
def as_frames(x: np.ndarray, channels: int) -> np.ndarray:
    """Mono ``[n]`` -> ``[n, channels]`` float32, C-contiguous (every period a view)."""
    x = np.asarray(x, np.float32).reshape(-1)
    return np.ascontiguousarray(np.repeat(x[:, None], channels, axis=1))


class EngineTimer:
    """Times ``engine.process`` per period over a looping input, in chunks, so
    several configurations can be interleaved round by round."""

    def __init__(self, engine, x: np.ndarray, period: int, rate: int, n_periods: int, paced: bool = False):
        self.engine = engine
        self.period = int(period)
        self.rate = int(rate)
        n_src = x.shape[0] // self.period
        if n_src < 1:
            raise ProfileError(f"the timing input is shorter than one period ({self.period} samples); "
                               f"give a longer --input or more --seconds")
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
        """Time the next ``count`` periods (fewer at the end)."""
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
            raise ProfileError(f"the timing input is shorter than one model block ({self.block} samples); "
                               f"give a longer --input or more --seconds")
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
        """Time the next ``count`` model blocks (fewer at the end)."""
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


__all__ = ["BlockRecorder", "EngineTimer", "GraphTimer", "TimedStep", "as_frames", "first_model_block_ms", "summarize"]
