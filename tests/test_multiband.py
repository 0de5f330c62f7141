"""Multi-band MelGAN end to end on the `pi-tiny` preset (the pi preset's layout at
tiny widths): training with the STFT warm-up, sub-band loss and learning-rate
schedule, plain progress lines and resume through the CLI, then export to a
bundle that streams like torch, int8 included."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wavae.device.bundle import MANIFEST
from wavae.quantize.bundle import BundleStreamer, verify_bundle_files
from wavae.train.checkpoint import load_run
from wavae.train.config import ConfigError, resolve
from wavae.train.data import ChunkCache
from wavae.train.factory import build_model
from wavae.train.macs import count_macs
from wavae.train.trainer import Trainer

WAVAE = [sys.executable, "-m", "wavae"]


@pytest.fixture(scope="module")
def pi_run(tmp_path_factory, audio_dir) -> tuple[Path, str]:
    """A `pi-tiny` run trained for a few steps per stage through the CLI, then resumed."""
    run = tmp_path_factory.mktemp("runs") / "pi-tiny"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    base = WAVAE + ["train", "--data", str(audio_dir), "--out", str(run)]
    first = subprocess.run(base + ["--preset", "pi-tiny", "--steps", "10", "--vae-steps", "8"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(base + ["--resume", "--steps", "15"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    return run, first.stderr + second.stderr


def test_pi_preset_fits_a_pi_core():
    """The issue's budget: at most 0.8 GMAC per second of audio and 5.4 ms of latency."""
    cfg = resolve("pi")
    model = build_model(cfg).eval()
    assert count_macs(model)["total"] <= 0.8e9
    assert model.latency == cfg.frame + cfg.vocoder.pqmf_taps // 2
    assert 1000 * model.latency / cfg.frontend.sample_rate <= 5.4
    assert cfg.vocoder.bands == 4


def test_cli_training_logs_plain_progress_and_resumes(pi_run):
    run, log = pi_run
    lines = [ln for ln in log.splitlines() if " steps/s " in ln]
    assert any(ln.split("INFO wavae.train.trainer: ")[-1].startswith("vae step 5/8") for ln in lines)
    assert "\r" not in log  # no progress-bar frames in a log that is not a terminal
    assert any("vocoder step 15/15" in ln and "spectral_sub" in ln for ln in lines)
    assert "checkpoint saved" in log
    _, _, ckpt = load_run(run, require_vocoder=True)
    assert ckpt["progress"]["vae_steps"] == 15 and ckpt["progress"]["vocoder_steps"] == 15


def test_warmup_then_adversarial_and_lr_schedule(tmp_path, audio_dir):
    torch.set_num_threads(1)
    cfg = resolve("pi-tiny", {"train": {"adv_start": 3, "lr_warmup": 2, "lr_decay_steps": 6}})
    data = ChunkCache.build(audio_dir, cfg.frontend.sample_rate, cfg.train.chunk)
    t = Trainer(cfg, tmp_path / "run", data.chunks, show_progress=False)
    t.start(resume=False)
    hist = t.fit("vocoder", 5)["vocoder"]
    assert all("disc" not in h for h in hist[:3]) and all("disc" in h for h in hist[3:])
    assert all(math.isfinite(h["spectral_sub"]) for h in hist)
    f = [t.lr_factor(s) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)  # linear warm-up
    assert f[8] == pytest.approx(cfg.train.lr_floor) == f[9]  # cosine down over 6 steps, then held
    assert f[7] > f[8]
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.train.vocoder_lr * f[4])


def test_bad_multiband_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="vocoder.bands"):
        resolve("pi-tiny", {"vocoder": {"bands": 3}})
    with pytest.raises(ConfigError, match="pqmf_taps"):
        resolve("pi-tiny", {"vocoder": {"pqmf_taps": 61}})
    with pytest.raises(ConfigError, match="lr_schedule"):
        resolve("pi-tiny", {"train": {"lr_schedule": "step"}})


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_exported_pi_bundle_verifies_and_streams_like_torch(tmp_path, pi_run, audio_dir, precision):
    run, _ = pi_run
    out = tmp_path / f"pi-{precision}"
    r = subprocess.run(WAVAE + ["export", str(run), "--out", str(out), "--precision", precision],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    verify_bundle_files(out)
    cfg, model, _ = load_run(run, require_vocoder=True)
    m = json.loads((out / MANIFEST).read_text())
    assert m["latency_samples"] == model.latency == cfg.frame + 31
    block = m["block"]
    x = (0.2 * np.random.default_rng(3).standard_normal(6 * block)).astype(np.float32)
    with torch.no_grad():
        ref = model.stream(torch.from_numpy(x).view(1, 1, -1), block).view(-1).numpy()
    y = BundleStreamer(out).stream(x)
    if precision == "fp32":
        assert np.abs(y - ref).max() < 1e-4
    else:  # int8: close to the torch model, not equal
        snr = 10 * np.log10(np.mean(ref**2) / np.mean((y - ref) ** 2))
        assert snr > 10, snr
    if precision == "int8":  # the output conv and the PQMF synthesis bank stay float
        assert len(m["quantization"]["float_nodes"]["decoder"]) == 2


def test_vocoder_targets_are_aligned_with_what_the_bank_can_produce():
    """Sub-bands equal to the trainer's sub-band target, put through the vocoder's own
    synthesis bank, match the trainer's full-band target (the input delayed by the
    model's delay) to better than 50 dB: the two losses ask for the same signal."""
    from wavae.train.factory import build_pqmf_analysis
    from wavae.train.trainer import delay_signal

    cfg = resolve("pi-tiny")
    model = build_model(cfg)
    analysis = build_pqmf_analysis(cfg)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, cfg.train.chunk)).astype(np.float32))
    with torch.no_grad():
        y = model.vocoder.synthesize(analysis.target(x))
    target = delay_signal(x, model.delay)
    inner = slice(200, -200)
    snr = 10 * torch.log10(target[..., inner].pow(2).mean() / (y - target)[..., inner].pow(2).mean())
    assert snr > 50, snr


def test_file_mode_aligns_a_multiband_bundle_by_its_filter_delay(tmp_path, pi_run):
    """The PQMF bank delays the model's output by 31 samples: the engine counts it in its
    signal delay, so file mode's aligned output lines up with the torch model at lag 0."""
    from wavae.device.cli_run import render
    from wavae.device.instrument import Instrument, InstrumentSpec

    run, _ = pi_run
    out = tmp_path / "pi-fp32"
    r = subprocess.run(WAVAE + ["export", str(run), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg, model, _ = load_run(run, require_vocoder=True)
    rate = cfg.frontend.sample_rate
    x = (0.2 * np.random.default_rng(4).standard_normal(rate // 2)).astype(np.float32)
    with Instrument.open(InstrumentSpec(bundle=out, device_rate=rate, period=256)) as inst:
        assert inst.bundle.model_delay == 31
        assert inst.engine.signal_delay == inst.engine.prefill + 31
        y, _ = render(inst, x.reshape(-1, 1))
    n = len(x) // cfg.frame * cfg.frame
    with torch.no_grad():  # the torch model, its own delay removed
        ref = model.stream(torch.from_numpy(x[:n]).view(1, 1, -1), cfg.frame).view(-1).numpy()[31:]
    a, b = y[: len(ref), 0], ref
    a, b = a[2000:], b[2000:]  # past the engine's fade-in
    lags = range(-40, 41)
    corr = [float(np.dot(a[max(0, k):len(a) + min(0, k)], b[max(0, -k):len(b) - max(0, k)])) for k in lags]
    assert lags[int(np.argmax(corr))] == 0
