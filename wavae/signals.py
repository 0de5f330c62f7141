"""Deterministic synthetic audio (numpy only) for tests and benchmarks, so
neither needs data from anywhere."""

from __future__ import annotations

import numpy as np


def harmonic_notes(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Harmonic notes with random pitches and decaying envelopes, plus a little
    noise, peak 0.5: enough structure for a model to learn from in seconds, and
    the input ``wavae profile`` times on when no ``--input`` is given.  At least
    one sample long."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    out = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.15, 0.5) * sr)
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = slice(pos, min(n, pos + dur))
        tt = t[seg] - t[pos]
        env = np.exp(-tt * rng.uniform(2, 8)) * rng.uniform(0.1, 0.8)
        for h in range(1, 5):
            out[seg] += env * np.sin(2 * np.pi * f0 * h * tt) / h
        pos += dur
    out += 0.003 * rng.standard_normal(n)
    return (0.5 * out / max(1e-9, np.abs(out).max())).astype(np.float32)
