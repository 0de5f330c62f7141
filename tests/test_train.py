"""Training: gradient reversal, loss decrease, exact resume, DDP, NaN handling,
reconstruction through the CLI, and clear errors for bad runs and configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavae.train.checkpoint import RunError, load_run
from wavae.train.cli_train import parse_overrides
from wavae.train.config import ConfigError, from_dict, resolve
from wavae.train.data import ChunkCache
from wavae.train.loudness import grad_reverse
from wavae.train.trainer import Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
WAVAE = [sys.executable, "-m", "wavae"]


@pytest.fixture(scope="module")
def chunks(audio_dir):
    cfg = resolve("tiny")
    return ChunkCache.build(audio_dir, cfg.frontend.sample_rate, cfg.train.chunk).chunks


def _trainer(run, chunks, **overrides):
    torch.set_num_threads(1)
    cfg = resolve("tiny", overrides or None)
    t = Trainer(cfg, run, chunks, show_progress=False)
    return t


def test_gradient_reversal_flips_the_sign():
    x = torch.randn(5, requires_grad=True)
    (grad_reverse(x, 0.7) * torch.arange(5.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(5.0))
    y = torch.randn(5, requires_grad=True)
    assert torch.equal(grad_reverse(y, 0.7), y)


def test_tiny_training_lowers_reconstruction_loss(tmp_path, chunks):
    t = _trainer(tmp_path / "run", chunks)
    t.start(resume=False)
    hist = t.fit("vae", 30)["vae"]
    first = np.mean([h["mse"] for h in hist[:5]])
    last = np.mean([h["mse"] for h in hist[-5:]])
    assert last < 0.8 * first, (first, last)


def test_resume_gives_the_same_next_loss(tmp_path, chunks):
    a = _trainer(tmp_path / "a", chunks)
    a.start(resume=False)
    full = a.fit("all", 8)
    # stopped inside the VAE stage
    b = _trainer(tmp_path / "b", chunks)
    b.start(resume=False)
    b.fit("vae", 5)
    b2 = _trainer(tmp_path / "b", chunks)
    b2.start(resume=True)
    rest = b2.fit("all", 8)
    assert [h["loss"] for h in rest["vae"]] == [h["loss"] for h in full["vae"][5:]]
    assert [h["loss"] for h in rest["vocoder"]] == [h["loss"] for h in full["vocoder"]]
    # stopped inside the vocoder stage
    c = _trainer(tmp_path / "c", chunks)
    c.start(resume=False)
    c.fit("vae", 8)
    c.fit("vocoder", 5)
    c2 = _trainer(tmp_path / "c", chunks)
    c2.start(resume=True)
    rest = c2.fit("all", 8)
    assert rest["vae"] == []
    assert [h["loss"] for h in rest["vocoder"]] == [h["loss"] for h in full["vocoder"][5:]]


def test_dataset_smaller_than_one_batch_still_trains(tmp_path, chunks):
    t = _trainer(tmp_path / "small", chunks[:1])
    t.start(resume=False)
    hist = t.fit("vae", 3)["vae"]
    assert len(hist) == 3 and all(np.isfinite(h["loss"]) for h in hist)


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, chunks):
    t = _trainer(tmp_path / "nan", chunks, train={"ckpt_every": 2})
    t.start(resume=False)
    t.fit("vae", 2)
    before = (tmp_path / "nan" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        for p in t.model.decoder.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        t.fit("vae", 6)
    assert (tmp_path / "nan" / "checkpoint.pt").read_bytes() == before
    load_run(tmp_path / "nan")  # still loads


def test_pca_orders_latent_by_variance(trained_tiny_run, audio_dir):
    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    x, _ = sf.read(next(Path(audio_dir).glob("*.wav")), dtype="float32")
    x = torch.from_numpy(x[: 40 * cfg.frame]).view(1, 1, -1)
    with torch.no_grad():
        z, std, loud = model.encode(x)
    # PCA coordinates are scaled to unit variance (a knob's 1.0 is one std of that
    # component); the ordering is in the scale, largest first
    scale = model.pca_scale
    assert torch.all(scale[:-1] >= scale[1:])
    assert torch.allclose(model.pca_rotation.T @ model.pca_rotation, torch.eye(cfg.latent_dim), atol=1e-5)
    explained = (z[0] * scale.view(-1, 1)).var(dim=1)
    assert explained[0] >= explained[-1]
    assert torch.all(std > 0) and torch.all((loud >= 0) & (loud <= 1))


def test_corrupt_and_missing_runs_give_clear_errors(tmp_path, trained_tiny_run):
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((trained_tiny_run / "config.json").read_text())
    data = bytearray((trained_tiny_run / "checkpoint.pt").read_bytes())
    (bad / "checkpoint.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(RunError, match="corrupt"):
        load_run(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="not a valid config"):
        load_run(bad)


def test_bad_config_keys_are_named():
    with pytest.raises(ConfigError, match="train.lrr"):
        resolve("tiny", {"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match="unknown config section 'trian'"):
        from_dict({"trian": {}})
    with pytest.raises(ConfigError, match="vae.kernel must be an integer"):
        resolve("tiny", {"vae": {"kernel": "five"}})
    with pytest.raises(ConfigError, match="ratios multiply"):
        resolve("tiny", {"vocoder": {"ratios": [4, 4]}})


def test_reconstruct_offline_and_streaming_agree(tmp_path, trained_tiny_run, audio_dir):
    src = tmp_path / "in.wav"
    x = np.random.default_rng(0).standard_normal(16000 * 2 + 77).astype(np.float32) * 0.1
    sf.write(src, x, 16000)
    outs = []
    for extra in ([], ["--streaming", "--block", "512"]):
        out = tmp_path / f"out{len(extra)}.wav"
        r = subprocess.run(WAVAE + ["reconstruct", str(trained_tiny_run), str(src), str(out)] + extra,
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        y, sr = sf.read(out, dtype="float32")
        assert sr == 16000 and len(y) == len(x) and np.all(np.isfinite(y))
        outs.append(y)
    assert np.abs(outs[0] - outs[1]).max() < 1e-4


def test_train_cli_refuses_to_overwrite_and_reports_empty_data(tmp_path, trained_tiny_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(WAVAE + ["train", "--preset", "tiny", "--data", str(empty), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error" in r.stderr
    r = subprocess.run(WAVAE + ["train", "--preset", "tiny", "--data", str(empty), "--out", str(trained_tiny_run)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_ddp_two_gloo_processes_train(tmp_path, audio_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "wavae", "train", "--preset", "tiny", "--data", str(audio_dir),
           "--out", str(tmp_path / "ddp"), "--steps", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ckpt["progress"]["vae_steps"] == 3 and ckpt["progress"]["vocoder_steps"] == 3


def test_ctrl_c_saves_a_checkpoint_and_resumes(tmp_path, audio_dir):
    import signal
    import time

    run = tmp_path / "int"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(WAVAE + ["train", "--preset", "tiny", "--data", str(audio_dir), "--out", str(run),
                                  "--steps", "100000", "--set", "train.ckpt_every=100000"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # some steps in
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "checkpoint saved" in out
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    steps = ckpt["progress"]["vae_steps"]
    assert 0 < steps < 100000
    r = subprocess.run(WAVAE + ["train", "--data", str(audio_dir), "--out", str(run), "--resume",
                                "--stage", "vae", "--steps", str(steps + 2)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["vae_steps"] == steps + 2


def test_resumed_run_that_skips_to_the_vocoder_still_gets_its_pca(tmp_path, chunks):
    t = _trainer(tmp_path / "r", chunks)
    t.start(resume=False)
    t.vae_step()  # as after a Ctrl-C inside the VAE stage: weights moved, no PCA yet
    t.save()
    with pytest.raises(RunError, match="no latent PCA"):
        t.progress["vocoder_steps"] = 1
        t.save()
        load_run(tmp_path / "r", require_vocoder=True)
    t.progress["vocoder_steps"] = 0
    t.save()
    r = _trainer(tmp_path / "r", chunks)
    r.start(resume=True)
    r.fit("vocoder", 2)
    assert r.progress["pca_done"]
    _, model, _ = load_run(tmp_path / "r", require_vocoder=True)
    assert not torch.equal(model.pca_rotation, torch.eye(model.latent_dim))


def test_pruned_run_cannot_be_resumed_by_train(tmp_path, chunks):
    t = _trainer(tmp_path / "p", chunks)
    t.start(resume=False)
    t.fit("vae", 1)
    ckpt = torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=True)
    ckpt["pruned_widths"] = {}
    torch.save(ckpt, tmp_path / "p" / "checkpoint.pt")
    with pytest.raises(RunError, match="pruned run"):
        _trainer(tmp_path / "p", chunks).start(resume=True)


def test_nonpositive_settings_are_refused_by_name(tmp_path):
    for key, value in (("ckpt_every", 0), ("log_every", 0), ("batch", -1)):
        with pytest.raises(ConfigError, match=f"train.{key} must be positive"):
            resolve("tiny", {"train": {key: value}})


def test_reconstruct_refuses_bad_output_paths(tmp_path, trained_tiny_run, audio_dir):
    src = next(Path(audio_dir).glob("*.wav"))
    for out, msg in ((tmp_path / "nodir" / "o.wav", "does not exist"), (tmp_path / "o.xyz", "cannot write")):
        r = subprocess.run(WAVAE + ["reconstruct", str(trained_tiny_run), str(src), str(out)],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_reconstruct_keeps_the_input_and_handles_tiny_and_odd_inputs(tmp_path, trained_tiny_run):
    def wavae(*a):
        return subprocess.run(WAVAE + ["reconstruct", *map(str, a)], capture_output=True, text=True, cwd=ROOT)

    src = tmp_path / "x.wav"
    sf.write(src, np.full(4800, 0.1, np.float32), 48000)
    before = src.read_bytes()
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    for out in (src, link):
        r = wavae(trained_tiny_run, src, out)
        assert r.returncode == 2 and "is the input" in r.stderr and "Traceback" not in r.stderr
    assert src.read_bytes() == before

    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.1], np.float32), 16000)
    for extra in ([], ["--streaming"]):
        r = wavae(trained_tiny_run, one, tmp_path / "o.wav", *extra)
        assert r.returncode == 0, r.stderr
        y, sr = sf.read(tmp_path / "o.wav")
        assert sr == 16000 and len(y) == 1 and np.isfinite(y).all()
    sf.write(one, np.array([0.1], np.float32), 48000)  # a third of a sample at 16 kHz
    r = wavae(trained_tiny_run, one, tmp_path / "o.wav")
    assert r.returncode == 2 and "too short" in r.stderr and "Traceback" not in r.stderr

    for bad, msg in ((["--block", "0"], "must be a positive multiple"),):
        r = wavae(trained_tiny_run, src, tmp_path / "o2.wav", "--streaming", *bad)
        assert r.returncode == 2 and msg in r.stderr
    r = wavae(src, src, tmp_path / "o3.wav")  # a file given as the run
    assert r.returncode == 2 and "is a file; give a folder" in r.stderr
    r = wavae(trained_tiny_run, tmp_path, tmp_path / "o3.wav")  # a folder given as the input
    assert r.returncode == 2 and "is a folder; give a file" in r.stderr
    r = wavae(trained_tiny_run, src, tmp_path)  # a folder given as the output
    assert r.returncode == 2 and "is a folder; give a file name" in r.stderr


def test_reconstruct_resamples_and_downmixes_in_blocks(tmp_path, trained_tiny_run):
    from wavae.train.checkpoint import load_run
    from wavae.train.cli_reconstruct import reconstruct, reconstruct_file
    from wavae.train.data import load_audio

    src = tmp_path / "st.wav"
    rng = np.random.default_rng(1)
    sf.write(src, (0.1 * rng.standard_normal((48000 * 3 + 5, 2))).astype(np.float32), 48000)
    _, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    n_in, n_out = reconstruct_file(model, src, tmp_path / "o.wav", block=model.frame * 4, progress=False)
    y, sr = sf.read(tmp_path / "o.wav", dtype="float32")
    assert sr == 16000 and len(y) == n_out == round(n_in / 3)
    # the same as resampling the whole file and rendering it at once
    ref = reconstruct(model, load_audio(src, 16000))
    assert len(ref) == len(y)
    assert np.abs(ref[64:-64] - y[64:-64]).max() < 1e-3


def test_float_settings_refuse_nan_and_inf_by_name():
    for raw in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ConfigError, match=r"train.lr must be a finite number"):
            resolve("tiny", parse_overrides([f"train.lr={raw}"]))
    with pytest.raises(ConfigError, match=r"every entry of train.betas must be a finite number"):
        resolve("tiny", parse_overrides(["train.betas=[0.5, NaN]"]))


def test_resume_refuses_another_preset(tmp_path, trained_tiny_run, audio_dir):
    r = subprocess.run(WAVAE + ["train", "--preset", "wavae", "--resume", "--out", str(trained_tiny_run),
                                "--data", str(audio_dir)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "trained with the 'tiny' preset" in r.stderr and "Traceback" not in r.stderr
