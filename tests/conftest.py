"""Shared fixtures: generated audio (no downloads) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def synth_audio(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Harmonic notes with envelopes and a little noise: enough structure to learn from."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
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


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    """A folder of generated wav files (16 kHz and 44.1 kHz, mono and stereo)."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("audio")
    for i, (sr, ch) in enumerate([(16000, 1), (44100, 2), (16000, 1), (22050, 1)]):
        x = synth_audio(3.0, sr, seed=i)
        if ch == 2:
            x = np.stack([x, 0.5 * x], axis=1)
        sf.write(d / f"clip{i}.wav", x, sr)
    return d


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """An fp32 bundle of an untrained `tiny` model (block = 2 latent frames).

    Untrained weights are enough for exactness and plumbing tests; tests that need
    a model that sounds like something use `trained_tiny_run`.
    """
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    out = tmp_path_factory.mktemp("bundles") / "tiny-fp32"
    return export_bundle(model, cfg, out, block=2 * cfg.frame, precision="fp32")


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory, audio_dir) -> Path:
    """A `tiny` run with both stages briefly trained on generated audio (~10 s)."""
    import torch

    from wavae.train.config import resolve
    from wavae.train.data import ChunkCache
    from wavae.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = resolve("tiny")
    run = tmp_path_factory.mktemp("runs") / "tiny"
    data = ChunkCache.build(audio_dir, cfg.frontend.sample_rate, cfg.train.chunk)
    trainer = Trainer(cfg, run, data.chunks, data_dir=str(audio_dir), show_progress=False)
    trainer.start(resume=False)
    trainer.fit("all", 80)
    return run
