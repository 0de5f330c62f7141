"""The fp32 bundle: folding, ONNX export, manifest, atomic writing (docs/bundle.md)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from wavae.blocks import BlockSizeError
from wavae.fileio import file_sha256
from wavae.device.bundle import BundleError, MANIFEST
from wavae.quantize.bundle import BundleStreamer, graph_opset, verify_bundle_files
from wavae.quantize.export import ExportError, export_bundle, export_steps
from wavae.quantize.fold import fold_model
from wavae.train.config import resolve
from wavae.train.factory import build_model

torch.set_num_threads(1)


def _model_with_batchnorm_stats(preset: str = "tiny", seed: int = 0):
    """An untrained model whose batch norms are far from identity, so folding matters."""
    torch.manual_seed(seed)
    cfg = resolve(preset)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=g))
    return cfg, model


def _noise(n: int, seed: int = 0, level: float = 0.2) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def folded_case(tmp_path_factory):
    cfg, model = _model_with_batchnorm_stats()
    block = 2 * cfg.frame
    out = export_bundle(model, cfg, tmp_path_factory.mktemp("exp") / "b", block=block, source={"run": "test"})
    return cfg, model, block, out


def test_fold_removes_weight_norm_and_batchnorm_keeping_output():
    cfg, model = _model_with_batchnorm_stats()
    folded = fold_model(model)
    assert not any(parametrize.is_parametrized(m) for m in folded.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    # the original is untouched (a deep copy shares parametrized classes with it)
    assert any(parametrize.is_parametrized(m) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    x = torch.from_numpy(_noise(8 * cfg.frame)).view(1, 1, -1)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
        assert torch.allclose(folded.stream(x, cfg.frame), model.stream(x, cfg.frame), atol=1e-5)
        z, s, l = folded.encode(x)
        z0, s0, l0 = model.encode(x)
        assert torch.allclose(z, z0, atol=1e-4) and torch.allclose(s, s0, rtol=1e-4)


def test_fp32_bundle_streams_like_torch(folded_case):
    cfg, model, block, out = folded_case
    x = _noise(10 * block, seed=3)
    with torch.no_grad():
        ref = model.stream(torch.from_numpy(x).view(1, 1, -1), block).view(-1).numpy()
    y = BundleStreamer(out).stream(x)
    assert y.shape == ref.shape
    assert np.abs(ref).max() > 1e-3  # the comparison is not between two silences
    assert np.abs(y - ref).max() < 1e-4


def test_encoder_outputs_match_torch_encode(folded_case):
    cfg, model, block, out = folded_case
    x = _noise(4 * block, seed=4)
    streamer = BundleStreamer(out)
    outs = [streamer.encode(x[i : i + block]) for i in range(0, x.size, block)]
    with torch.no_grad():
        z, std, loud = model.encode(torch.from_numpy(x).view(1, 1, -1))
    np.testing.assert_allclose(np.concatenate([o[0] for o in outs], -1), z.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.concatenate([o[1] for o in outs], -1), std.numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([o[2] for o in outs], -1), loud.numpy(), atol=1e-4)


def test_state_inputs_outputs_named_static_and_opset_17(tiny_bundle):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert manifest["opset"] == 17
    expected_io = {
        "encoder": (["audio"], ["z_mean", "z_std", "loudness"]),
        "decoder": (["z", "loudness"], ["audio"]),
    }
    for g, spec in manifest["graphs"].items():
        proto = onnx.load(str(tiny_bundle / spec["file"]))
        assert graph_opset(proto) == 17
        n = len(spec["states"])
        assert n > 0
        ins = [i.name for i in proto.graph.input]
        outs = [o.name for o in proto.graph.output]
        assert ins == expected_io[g][0] + [f"state_in_{k}" for k in range(n)]
        assert outs == expected_io[g][1] + [f"state_out_{k}" for k in range(n)]
        shapes = {
            vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            for vi in list(proto.graph.input) + list(proto.graph.output)
        }
        for s in spec["states"]:
            assert shapes[s["input"]] == s["shape"] == shapes[s["output"]]
            assert s["dtype"] == "float32"
        for io in spec["inputs"] + spec["outputs"]:
            assert shapes[io["name"]] == io["shape"]


def test_manifest_has_every_field_and_true_checksums(tiny_bundle):
    cfg = resolve("tiny")
    m = json.loads((tiny_bundle / MANIFEST).read_text())
    assert m["format"] == "wavae-bundle" and m["format_version"] == 1
    assert m["sample_rate"] == cfg.frontend.sample_rate
    assert m["block"] == 2 * cfg.frame and m["frame"] == cfg.frame
    assert m["latent_dim"] == cfg.latent_dim
    assert m["latency_samples"] == cfg.frame
    assert m["precision"] == "fp32"
    assert set(m["loudness"]) >= {"frame", "db_floor", "weights", "means", "stds"}
    assert len(m["loudness"]["weights"]) == cfg.loudness.n_components
    assert len(m["pca"]["explained_variance"]) == cfg.latent_dim
    assert set(m["source"]) >= {"run", "preset", "git_commit", "created"}
    assert set(m["files"]) == {"encoder.onnx", "decoder.onnx"}
    for name, entry in m["files"].items():
        assert entry["sha256"] == file_sha256(tiny_bundle / name)
        assert entry["bytes"] == (tiny_bundle / name).stat().st_size
    assert verify_bundle_files(tiny_bundle)["block"] == m["block"]


def test_existing_bundle_is_refused_without_force_and_replaced_whole_with_it(tmp_path):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    out = tmp_path / "bundle"
    export_bundle(model, cfg, out, block=cfg.frame)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(model, cfg, out, block=2 * cfg.frame)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    export_bundle(model, cfg, out, block=2 * cfg.frame, force=True)
    assert json.loads((out / MANIFEST).read_text())["block"] == 2 * cfg.frame
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary or old directory left


def test_interrupted_export_leaves_nothing_behind(tmp_path):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    out = tmp_path / "bundle"

    def fail_at_decoder(step: str) -> None:
        if "decoder" in step:
            raise KeyboardInterrupt  # as if the export were killed half way

    with pytest.raises(KeyboardInterrupt):
        export_bundle(model, cfg, out, block=cfg.frame, progress=fail_at_decoder)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_progress_steps_are_counted_and_every_manifest_written_is_real(tmp_path, precision):
    """The CLI's progress bar total comes from export_steps; the fp16/int8 graphs are made
    from an fp32 bundle whose manifest is a real one (no placeholder rate or frame)."""
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    steps, seen = [], []

    def progress(step: str) -> None:
        steps.append(step)
        for m in tmp_path.rglob(MANIFEST):
            seen.append(json.loads(m.read_text()))

    calibration = _noise(16 * cfg.frame, seed=3) if precision == "int8" else None
    out = export_bundle(model, cfg, tmp_path / "b", block=2 * cfg.frame, precision=precision,
                        calibration=calibration, progress=progress)
    assert len(steps) == export_steps(precision)
    if precision != "fp32":
        assert seen  # the fp32 bundle the graphs are made from
    for m in seen:
        assert (m["sample_rate"], m["frame"], m["block"]) == (cfg.frontend.sample_rate, cfg.frame, 2 * cfg.frame)
    assert [p.name for p in tmp_path.iterdir()] == ["b"] and sorted(p.name for p in out.iterdir()) == [
        "decoder.onnx", "encoder.onnx", MANIFEST,
    ]


def test_bad_precision_and_block_are_refused_and_nothing_is_written(tmp_path):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    with pytest.raises(ExportError, match="unsupported precision 'int4'"):
        export_bundle(model, cfg, tmp_path / "a", block=cfg.frame, precision="int4")
    with pytest.raises(BlockSizeError, match="multiple of the latent frame"):
        export_bundle(model, cfg, tmp_path / "b", block=cfg.frame + 1)
    with pytest.raises(ExportError, match="calibration"):
        export_bundle(model, cfg, tmp_path / "c", block=cfg.frame, precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_verify_bundle_files_refuses_a_corrupted_byte_and_unknown_version(tmp_path, tiny_bundle):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    data = bytearray((bad / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        verify_bundle_files(bad)

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    m = json.loads((old / MANIFEST).read_text())
    m["format_version"] = 2
    (old / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 2"):
        verify_bundle_files(old)


@pytest.mark.slow
def test_wavae_preset_bundle_streams_like_torch(tmp_path):
    """The preset the benchmarks use: block 512 at 24 kHz."""
    cfg, model = _model_with_batchnorm_stats("wavae")
    block = 512
    out = export_bundle(model, cfg, tmp_path / "wavae", block=block)
    x = _noise(6 * block, seed=5)
    with torch.no_grad():
        ref = model.stream(torch.from_numpy(x).view(1, 1, -1), block).view(-1).numpy()
    y = BundleStreamer(out).stream(x)
    assert np.abs(ref).max() > 1e-3
    assert np.abs(y - ref).max() < 1e-4
    m = json.loads((out / MANIFEST).read_text())
    assert m["sample_rate"] == 24000 and m["block"] == 512 and m["latency_samples"] == 512
