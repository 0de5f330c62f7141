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
from wavae.quantize.bundle import MANIFEST
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
    assert wavae_main(["engine", str(tiny_bundle)]) == 1
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
