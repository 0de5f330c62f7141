"""Shared fixtures: generated audio (no downloads) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from wavae.signals import harmonic_notes as synth_audio  # noqa: E402,F401  (tests import it from here)


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
def tiny_bundle_b(tmp_path_factory) -> Path:
    """A second untrained tiny bundle, folder ``tiny-b``: other weights, latent 4 (not 8), block 4 latent
    frames (not 2), so its latency differs too: the other side of a live bundle switch."""
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.manual_seed(1)
    cfg = resolve("tiny", {"vae": {"encoder_channels": [32, 32, 32, 8]}})
    model = build_model(cfg).eval()
    out = tmp_path_factory.mktemp("bundles-b") / "tiny-b"
    return export_bundle(model, cfg, out, block=4 * cfg.frame, precision="fp32")


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
