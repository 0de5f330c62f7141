"""Structured channel pruning (wavae.quantize.prune) and `wavae prune`."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from conftest import synth_audio
from wavae.cli import main as wavae_main
from wavae.quantize.prune import (
    PruneError,
    apply_widths,
    channel_groups,
    distillation_loss,
    finetune,
    prune_model,
    widths_of,
)
from wavae.train.checkpoint import CHECKPOINT, atomic_torch_save, write_config
from wavae.train.config import resolve
from wavae.train.factory import build_model
from wavae.train.macs import count_macs
from wavae.train.model import Wavae
from wavae.train.streaming import CausalConv1d, Residual

LEARNED = ("encoder", "decoder", "vocoder")


def randomise_norms(model: Wavae, seed: int = 0) -> Wavae:
    """Non-trivial batch-norm statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * (torch.rand(n, generator=g) - 0.5))
    return model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = resolve("tiny")
    return cfg, randomise_norms(build_model(cfg)).eval()


def test_prune_halves_macs_of_the_learned_layers(tiny):
    cfg, model = tiny
    pruned = prune_model(model, 0.5)
    before, after = count_macs(model), count_macs(pruned)
    learned = lambda m: sum(m[k] for k in LEARNED)  # noqa: E731
    assert learned(before) >= 2 * learned(after)
    # the STFT front-end is fixed DSP: untouched
    assert after["frontend"] == before["frontend"]
    for name, width in widths_of(pruned).items():
        assert width == round(widths_of(model)[name] / 2), name


def test_prune_halves_total_macs_of_the_wavae_preset():
    model = randomise_norms(build_model(resolve("wavae"))).eval()
    before, after = count_macs(model), count_macs(prune_model(model, 0.5))
    assert before["total"] >= 2 * after["total"]


@pytest.mark.parametrize("frames_per_block", [1, 2, 4])
def test_pruned_model_streams_exactly(tiny, frames_per_block):
    cfg, model = tiny
    pruned = prune_model(model, 0.5).eval()
    torch.manual_seed(1)
    x = 0.3 * torch.randn(1, 1, 12 * cfg.frame)
    with torch.no_grad():
        offline = pruned(x)
        streamed = pruned.stream(x, frames_per_block * cfg.frame)
    assert offline.shape == x.shape
    assert (streamed - offline).abs().max().item() < 1e-5


def test_prune_keeps_interface_channels(tiny):
    cfg, model = tiny
    pruned = prune_model(model, 0.5)
    enc = [l.conv for l in pruned.encoder.net.layers if isinstance(l, CausalConv1d)]
    dec = [l for l in pruned.decoder.net.layers if hasattr(l, "conv")]
    voc = [l.conv for l in pruned.vocoder.net.layers if isinstance(l, CausalConv1d)]
    assert enc[0].in_channels == cfg.frontend.n_mels
    assert enc[-1].out_channels == 2 * cfg.latent_dim
    assert dec[0].conv.in_channels == cfg.latent_dim + 1
    assert dec[-1].conv.out_channels == cfg.frontend.n_mels
    assert voc[0].in_channels == cfg.frontend.n_mels
    assert voc[-1].out_channels == 1
    assert torch.equal(pruned.frontend.stft.conv.weight, model.frontend.stft.conv.weight)


def test_residual_blocks_stay_tied(tiny):
    _, model = tiny
    pruned = prune_model(model, 0.5)
    blocks = [m for m in pruned.vocoder.modules() if isinstance(m, Residual)]
    assert blocks
    for b in blocks:
        convs = [l.conv for l in b.body.layers if isinstance(l, CausalConv1d)]
        assert convs[0].in_channels == convs[-1].out_channels == b.shortcut.conv.out_channels
        assert b.shortcut.conv.in_channels == convs[0].in_channels
        assert convs[0].out_channels == convs[-1].in_channels  # the hidden channels


def test_prune_keeps_the_channels_with_the_largest_filters():
    model = build_model(resolve("tiny")).eval()
    body = next(m for m in model.vocoder.modules() if isinstance(m, Residual)).body
    first = [l for l in body.layers if isinstance(l, CausalConv1d)][0]
    with torch.no_grad():  # weight norm: the effective filter norm is g
        g = first.conv.parametrizations.weight.original0
        g.fill_(1.0)
        g[3] = 100.0
        g[5] = 1e-6
    pruned = prune_model(model, 0.5)
    pbody = next(m for m in pruned.vocoder.modules() if isinstance(m, Residual)).body
    pfirst = [l for l in pbody.layers if isinstance(l, CausalConv1d)][0]
    norms = pfirst.conv.weight.detach().flatten(1).norm(dim=1)
    assert norms.max() > 10.0  # channel 3 kept (its filter lost the pruned input channels)
    assert norms.min() > 1e-3  # channel 5 dropped


def test_apply_widths_rebuilds_a_pruned_model(tiny):
    cfg, model = tiny
    pruned = prune_model(model, 0.5).eval()
    fresh = apply_widths(build_model(cfg), widths_of(pruned))
    fresh.load_state_dict(pruned.state_dict())  # strict: same keys and shapes
    x = 0.3 * torch.randn(1, 1, 4 * cfg.frame)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned(x))


def test_bad_ratio_and_widths_are_refused(tiny):
    cfg, model = tiny
    for ratio in (-0.1, 1.0, 1.5):
        with pytest.raises(PruneError, match="ratio"):
            prune_model(model, ratio)
    with pytest.raises(PruneError, match="nonexistent"):
        apply_widths(build_model(cfg), {"nonexistent": 3})
    name = channel_groups(model)[0].name
    with pytest.raises(PruneError, match=name):
        apply_widths(build_model(cfg), {name: 10_000})


def test_finetune_lowers_the_distillation_loss(tiny):
    cfg, teacher = tiny
    student = prune_model(teacher, 0.5)
    chunks = torch.from_numpy(synth_audio(4 * 2048 / cfg.frontend.sample_rate, cfg.frontend.sample_rate)).view(4, 2048)
    batch = chunks.unsqueeze(1)
    with torch.no_grad():
        before = distillation_loss(student, teacher, batch).item()
    finetune(student, teacher, chunks, steps=8, batch=4, lr=1e-3, progress=False)
    with torch.no_grad():
        after = distillation_loss(student, teacher, batch).item()
    assert after < 0.8 * before


# --- the command ------------------------------------------------------------
@pytest.fixture(scope="module")
def source_run(trained_tiny_run):
    """The shared briefly trained `tiny` run (the trainer's real checkpoint format)."""
    from wavae.train.checkpoint import load_run

    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    return cfg, model, trained_tiny_run


def _load_pruned(cfg, run):
    ckpt = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    model = apply_widths(build_model(cfg), ckpt["pruned_widths"])
    model.load_state_dict(ckpt["model"])
    return ckpt, model.eval()


def test_prune_command_writes_a_smaller_run(source_run, tmp_path, capsys):
    cfg, model, run = source_run
    out = tmp_path / "pruned"
    rc = wavae_main(["prune", str(run), "--ratio", "0.5", "--steps", "2", "--batch", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "unpruned" in text and "finetuned" in text and "GMAC/s" in text
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "prune.json"]
    ckpt, pruned = _load_pruned(cfg, out)
    assert "opt_vae" not in ckpt and "opt_g" not in ckpt
    source = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["progress"] == source["progress"] and ckpt["data_dir"] == source["data_dir"]
    assert count_macs(pruned)["total"] < count_macs(model)["total"]
    x = 0.3 * torch.randn(1, 1, 4 * cfg.frame)
    with torch.no_grad():
        assert (pruned.stream(x, 2 * cfg.frame) - pruned(x)).abs().max().item() < 1e-5


def test_prune_command_refuses_an_existing_output(source_run, tmp_path):
    _, _, run = source_run
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["prune", str(run), "--ratio", "0.5", "--steps", "0", "--out", str(out)]
    assert wavae_main(args) == 2
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces a run, never a folder that is not one (a typo'd --out data)
    assert wavae_main(args + ["--force"]) == 2
    assert (out / "keep.txt").read_text() == "mine"
    # nor the folder that holds the source run
    assert wavae_main(["prune", str(run), "--ratio", "0.5", "--steps", "0", "--out", str(run.parent), "--force"]) == 2
    assert (run / CHECKPOINT).is_file()
    done = tmp_path / "done"
    assert wavae_main(["prune", str(run), "--ratio", "0.5", "--steps", "0", "--out", str(done)]) == 0
    (done / "stale.txt").write_text("old run file")
    assert wavae_main(["prune", str(run), "--ratio", "0.5", "--steps", "0", "--out", str(done), "--force"]) == 0
    assert not (done / "stale.txt").exists() and (done / CHECKPOINT).is_file()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporaries left


def test_prune_command_needs_data(source_run, tmp_path):
    cfg, model, run = source_run
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    ckpt["data_dir"] = None
    nodata = tmp_path / "nodata"
    nodata.mkdir()
    write_config(nodata, cfg)
    atomic_torch_save(ckpt, nodata / CHECKPOINT)
    rc = wavae_main(["prune", str(nodata), "--ratio", "0.5", "--out", str(tmp_path / "x")])
    assert rc == 2 and not (tmp_path / "x").exists()


def test_load_run_rebuilds_a_pruned_run(source_run, tmp_path):
    from wavae.train.checkpoint import load_run

    cfg, _, run = source_run
    out = tmp_path / "pruned"
    assert wavae_main(["prune", str(run), "--ratio", "0.5", "--steps", "0", "--out", str(out)]) == 0
    _, model, ckpt = load_run(out, require_vocoder=True)
    assert widths_of(model) == ckpt["pruned_widths"]
