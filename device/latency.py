"""Onset signals and latency: what the engine's delay is, measured and declared,
and what the whole action-to-sound round trip adds up to.

* ``onset_signal``: clicks, noise bursts and tone bursts at seeded random
  positions in silence;
* ``detect_latency`` / ``measure_latency``: those onsets go through a fresh
  engine period by period, in real-time order, and their delay is detected in
  the output (energy envelope against the silent background);
* ``declared_latency``: the engine's and the bundle's own figures;
* ``latency_budget``: ALSA pre-fill + resampler + algorithmic + engine buffering.

**Measured latency.** An input onset at sample ``t`` captured in period
``k = t // P`` can only be processed once that period is complete, at time
``(k + 1) P``; the output of that call, played from that moment, puts output
sample ``n`` of the engine's stream at time ``n + P``.  So an output onset
detected at ``n`` for an input onset at ``t`` is a latency of ``n + P - t``
samples, with compute time taken as zero (it is budgeted separately, as p99).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .report import TARGET_MS, ProfileError, json_ready
from .timing import as_frames

ONSET_KINDS = ("click", "noise", "tone")


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


def declared_latency(engine, bundle, device_rate: int | None) -> dict[str, Any]:
    """The engine's own latency report (``Engine.latency()``: total = period +
    output-FIFO prefill, split into resampler, algorithmic and buffering), in ms
    and device samples, with the bundle's declared model latency beside it.
    Any of ``engine``, ``bundle`` may be None (fields then None)."""
    raw = engine.latency() if (engine is not None and hasattr(engine, "latency")) else {}
    rate = int(device_rate) if device_rate else None
    out: dict[str, Any] = {"engine": json_ready(raw) if raw else None}
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
    method = (
        f"onsets ({', '.join(ONSET_KINDS)}) every {gap:.2f} s at seeded random offsets; output minus the "
        f"output for silence; 1 ms RMS envelope; onset = first rise {fraction:.0%} of the way from background "
        f"to peak; latency = output onset + period - input onset"
    )
    return latency_summary(method, det["onsets"], declared, device_rate, block_dev)


def latency_summary(
    method: str,
    rows: list[dict[str, Any]],
    declared: dict[str, Any],
    device_rate: int | None,
    block_device_samples: float | None,
) -> dict[str, Any]:
    """A report's ``latency`` section from per-onset ``rows`` (``detect_latency``)
    and the ``declared_latency`` they are compared with.  With no rows (a live
    run, where no onsets are injected) every measured figure is None."""
    lat = np.array([r["latency_samples"] for r in rows if r["latency_samples"] is not None], np.float64)
    infl = np.array([r["first_influence_samples"] for r in rows if r["first_influence_samples"] is not None], np.float64)
    # a figure from a few stray detections would mislead: report it only when most onsets answered
    have = bool(device_rate) and lat.size >= max(3, (len(rows) + 1) // 2)
    ms = lat * 1e3 / device_rate if have else lat
    out: dict[str, Any] = {
        "method": method,
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
        "block_device_samples": float(block_device_samples) if block_device_samples is not None else None,
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
    prefill_periods: int,
    device_rate: int,
    measured_ms: float | None = None,
) -> dict[str, Any]:
    """ALSA buffering + resampling + algorithmic + engine buffering: the round trip.

    * ``alsa_buffering_ms`` = ``(prefill_periods - 1) * period`` at the device
      rate: the playback queue ahead of the period just written.  The live loop
      pre-fills playback with ``audio.prefill_periods`` periods, and one of those
      is the capture period, which the engine's figure already holds.
    * resampler, algorithmic and engine buffering are the engine's declared split
      of its latency (``Engine.latency()``), whose total is the period being
      captured plus the output FIFO's prefill.
    The sum equals the live loop's measured round trip (engine signal delay +
    ``prefill_periods`` x ``period``; tests/test_alsa_file.py checks that offset).
    * ``compute_p99_ms`` does not lengthen the round trip: one engine call must
      fit in the ``(prefill_periods - 1) * period`` of queued playback, or the
      loop underruns.  ``compute_budget_ms`` is that time and ``compute_fits``
      says whether the p99 fits it.

    Where the engine gives no split (an engine without ``latency()``), the
    measured latency stands in for the model's side.
    """
    alsa_ms = 1e3 * (prefill_periods - 1) * period / device_rate
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
        "prefill_periods": int(prefill_periods),
        "period": int(period),
        "model_side_source": source,
    }


__all__ = [
    "ONSET_KINDS", "OnsetSignal", "declared_latency", "detect_latency", "envelope", "first_rise", "latency_budget",
    "latency_summary", "measure_latency", "onset_signal", "run_engine",
]
