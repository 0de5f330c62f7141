"""TensorRT: the operator / static-shape checker (runs anywhere), and engines
(skipped without a CUDA GPU and JetPack's tensorrt; never touched without a GPU)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from conftest import synth_audio
from wavae.cli import main as wavae_main
from wavae.device.bundle import MANIFEST
from wavae.quantize.export import export_bundle
from wavae.device.backends.cuda import gpu_present
from wavae.quantize.trt_ops import check_bundle_for_tensorrt, check_onnx_for_tensorrt, prepare_for_tensorrt
from wavae.train.config import resolve
from wavae.train.factory import build_model

torch.set_num_threads(1)

HAS_GPU = gpu_present()[0]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None  # looks, does not import


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    cal = np.stack([synth_audio(1.0, cfg.frontend.sample_rate, seed=s)[: 7 * 2 * cfg.frame] for s in range(3)])
    return export_bundle(model, cfg, tmp_path_factory.mktemp("trt") / "int8", block=2 * cfg.frame,
                         precision="int8", calibration=cal)


def test_checker_passes_on_fp32_and_int8_bundles(tiny_bundle, int8_bundle):
    assert check_bundle_for_tensorrt(tiny_bundle) == []
    assert check_bundle_for_tensorrt(int8_bundle) == []


def _save(tmp_path, nodes, inputs, outputs, inits=(), name="g.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_checker_flags_an_unsupported_operator(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = _save(tmp_path, [helper.make_node("Hardmax", ["x"], ["y"], name="hm")], [x], [y])
    problems = check_onnx_for_tensorrt(path)
    assert len(problems) == 1 and "hm (Hardmax)" in problems[0] and "unsupported" in problems[0]


def test_checker_flags_a_dynamic_shape(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T"])
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r")], [x], [y])
    problems = check_onnx_for_tensorrt(path)
    assert problems and all("not static" in p for p in problems)
    assert any("'T'" in p for p in problems)


def test_checker_flags_asymmetric_quantisation(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("zp", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
    problems = check_onnx_for_tensorrt(_save(tmp_path, nodes, [x], [y], [scale, zp]))
    assert any("q (QuantizeLinear): zero point must be 0" in p for p in problems)


def test_prepared_int8_graph_computes_the_same(int8_bundle):
    manifest = json.loads((int8_bundle / MANIFEST).read_text())
    for spec in manifest["graphs"].values():
        raw = onnx.load(str(int8_bundle / spec["file"]))
        prepared = prepare_for_tensorrt(raw)
        assert not any(
            n.op_type == "DequantizeLinear" and any(t.name == n.input[0] and t.data_type == TensorProto.INT32
                                                    for t in prepared.graph.initializer)
            for n in prepared.graph.node
        )
        rng = np.random.default_rng(0)
        feeds = {i.name: (0.3 * rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])).astype(np.float32)
                 for i in raw.graph.input}
        a = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        b = ort.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, atol=1e-5)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU; the no-GPU refusal is tested on machines without one")
def test_engine_without_gpu_refuses_clearly_and_never_imports_tensorrt(tiny_bundle, capsys):
    sys.modules.pop("tensorrt", None)
    capsys.readouterr()
    assert wavae_main(["engine", str(tiny_bundle)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Jetson" in err
    assert "tensorrt" not in sys.modules
    assert not (tiny_bundle / "engines").exists()


def test_engine_check_only_needs_no_gpu(tiny_bundle, capsys):
    capsys.readouterr()
    assert wavae_main(["engine", str(tiny_bundle), "--check-only"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []
    assert "tensorrt" not in sys.modules


NO_ENGINE_REASON = (
    "no CUDA GPU: TensorRT engines are built on the Jetson" if not HAS_GPU
    else "TensorRT's Python bindings are not installed (they come with JetPack)"
)


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_GPU and HAS_TRT), reason=NO_ENGINE_REASON)
def test_engines_build_and_rebuild_when_the_fingerprint_changes(tiny_bundle, int8_bundle, tmp_path):
    from wavae.device.backends.tensorrt import FINGERPRINT
    from wavae.quantize.tensorrt import build_bundle_engines

    for src, kw in ((tiny_bundle, {}), (tiny_bundle, {"fp16": True}), (int8_bundle, {"int8": True})):
        b = tmp_path / f"{src.name}-{'-'.join(kw) or 'default'}"
        shutil.copytree(src, b)
        first = build_bundle_engines(b, **kw)
        assert first["rebuilt"] and all(p and (b / "engines").exists() for p in first["plans"].values())
        assert build_bundle_engines(b, **kw)["rebuilt"] is False
        record = json.loads((b / "engines" / FINGERPRINT).read_text())
        precision = first["fingerprint"]["precision"]
        record[precision]["fingerprint"]["tensorrt"] = "0.0.0"  # as if TensorRT were upgraded
        (b / "engines" / FINGERPRINT).write_text(json.dumps(record))
        assert build_bundle_engines(b, **kw)["rebuilt"] is True


# ---------------------------------------------------------------------------- building, with a fake TensorRT
# (tests/gpu_fakes.py: the ``tensorrt`` module's builder, parser and runtime; plans are JSON that
# records the network and builder flags they were built with)
def _fake_trt(**kw):
    from gpu_fakes import FakeGpu, FakeTensorRT

    gpu = FakeGpu()
    return FakeTensorRT(gpu, **kw), gpu.info()


@pytest.mark.parametrize("version,kw,bundle_precision,precision,want", [
    # TensorRT 10 (JetPack 6.1/6.2): TF32 off for fp32; an fp16 bundle strongly typed; flags otherwise
    ("10.3.0", {}, "fp32", "fp32", {"network_flags": 0, "set": [], "clear": ["TF32"], "strongly_typed": False}),
    ("10.3.0", {}, "fp32", "fp16", {"network_flags": 0, "set": ["FP16"], "clear": [], "strongly_typed": False}),
    ("10.3.0", {}, "fp16", "fp16", {"network_flags": 2, "set": [], "clear": [], "strongly_typed": True}),
    ("10.3.0", {}, "int8", "int8", {"network_flags": 0, "set": ["FP16", "INT8"], "clear": [], "strongly_typed": False}),
    # TensorRT 8.6 (JetPack 6.0): explicit batch, and no strongly typed networks
    ("8.6.2", {"strong_flag": False}, "fp32", "fp32",
     {"network_flags": 1, "set": [], "clear": ["TF32"], "strongly_typed": False}),
    ("8.6.2", {"strong_flag": False}, "fp16", "fp16",
     {"network_flags": 1, "set": ["FP16"], "clear": [], "strongly_typed": False}),
    # TensorRT 11: no FP16/INT8 flags; every network strongly typed from the ONNX's types
    ("11.0.0", {"strong_only": True}, "fp32", "fp32", {"network_flags": 0, "set": [], "clear": ["TF32"], "strongly_typed": True}),
    ("11.0.0", {"strong_only": True}, "int8", "int8", {"network_flags": 0, "set": [], "clear": [], "strongly_typed": True}),
    ("11.0.0", {"strong_only": True}, "fp16", "fp16", {"network_flags": 0, "set": [], "clear": [], "strongly_typed": True}),
])
def test_build_settings_per_tensorrt_version(version, kw, bundle_precision, precision, want):
    from wavae.quantize.tensorrt import build_settings

    trt, _ = _fake_trt(version=version, **kw)
    assert build_settings(trt, bundle_precision, precision) == want


def test_tensorrt_11_refuses_fp16_from_an_fp32_bundle():
    from wavae.quantize.tensorrt import TensorRTError, build_settings

    trt, _ = _fake_trt(version="11.0.0", strong_only=True)
    with pytest.raises(TensorRTError, match=r"only strongly typed networks.*`wavae export RUN --precision fp16"):
        build_settings(trt, "fp32", "fp16")


def test_fake_build_writes_plans_and_fingerprint_and_rebuilds_only_when_something_changed(tiny_bundle, tmp_path):
    from gpu_fakes import FakeGpu, FakeTensorRT

    from wavae.device.backends.tensorrt import FINGERPRINT
    from wavae.quantize.tensorrt import build_bundle_engines

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    trt, gpu = _fake_trt()
    first = build_bundle_engines(b, tensorrt=trt, gpu=gpu)
    assert first["rebuilt"] is True
    plan = json.loads((b / "engines" / "encoder.fp32.plan").read_bytes())
    assert "TF32" not in plan["flags"] and "FP16" not in plan["flags"]  # fp32 is fp32 on Orin too
    record = json.loads((b / "engines" / FINGERPRINT).read_text())
    assert record["fp32"]["fingerprint"] == first["fingerprint"]
    assert record["fp32"]["fingerprint"]["gpu"] == "Orin (fake)" and record["fp32"]["strongly_typed"] is False
    assert build_bundle_engines(b, tensorrt=trt, gpu=gpu)["rebuilt"] is False  # nothing changed
    assert len(trt.built) == 2  # one plan per graph, built once

    upgraded = FakeTensorRT(FakeGpu(), version="10.4.0")
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=gpu)["rebuilt"] is True  # JetPack upgraded
    other = {"name": "Xavier (fake)", "compute_capability": "7.2"}
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other)["rebuilt"] is True  # another board
    record = json.loads((b / "engines" / FINGERPRINT).read_text())
    record["fp32"]["fingerprint"]["onnx_sha256"]["decoder"] = "0" * 64  # built from an earlier export
    (b / "engines" / FINGERPRINT).write_text(json.dumps(record))
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other)["rebuilt"] is True
    (b / "engines" / "decoder.fp32.plan").write_bytes(b"damaged")
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other)["rebuilt"] is True
    (b / "engines" / FINGERPRINT).write_text("{not json")
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other)["rebuilt"] is True
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other)["rebuilt"] is False
    assert build_bundle_engines(b, tensorrt=upgraded, gpu=other, force=True)["rebuilt"] is True

    half = build_bundle_engines(b, tensorrt=upgraded, gpu=other, fp16=True)  # a second precision beside
    assert half["rebuilt"] is True and set(json.loads((b / "engines" / FINGERPRINT).read_text())) == {"fp32", "fp16"}
    assert "FP16" in json.loads((b / "engines" / "encoder.fp16.plan").read_bytes())["flags"]


def test_rebuild_commands_are_what_the_cli_accepts(tiny_bundle, tmp_path):
    import shlex
    from pathlib import Path

    from wavae.cli import build_parser
    from wavae.device.backends.tensorrt import engine_command
    from wavae.device.bundle import load_bundle

    b = tmp_path / "a bundle"  # a path that needs quoting
    shutil.copytree(tiny_bundle, b)
    bundle = load_bundle(b)
    config = Path(__file__).resolve().parents[1] / "device" / "configs" / "jetson-orin-nano.toml"
    in_config = [line.lstrip("# ").split("#")[0].strip() for line in config.read_text().splitlines()
                 if line.lstrip("# ").startswith("wavae engine")]
    commands = [engine_command(bundle), engine_command(bundle, "fp16"), engine_command(bundle, "fp32", force=True)]
    assert commands[1].endswith(" --fp16") and commands[2].endswith(" --force") and in_config
    for cmd in commands + in_config:
        argv = shlex.split(cmd)
        args = build_parser("engine").parse_args(argv[1:])  # argparse exits on a wrong command line
        assert args.command == "engine" and not str(args.bundle).startswith("-")
    assert build_parser("engine").parse_args(shlex.split(commands[0])[1:]).bundle == b
