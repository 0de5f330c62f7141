"""Narrow convolutions as matrix products (wavae.quantize.lower): same sums, other ops."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from wavae.device.bundle import MANIFEST
from wavae.quantize.bundle import BundleStreamer, verify_bundle_files
from wavae.quantize.export import export_bundle
from wavae.quantize.lower import (
    MAX_COLUMNS,
    dft_factors,
    lower_matrix_einsums,
    lower_narrow_convs,
    lower_windowed_dfts,
    merge_summed_pointwise_convs,
    windowed_dft_window,
)
from wavae.train.config import resolve
from wavae.train.factory import build_model


def _conv_graph(cin, cout, k, length, stride=1, dilation=1, group=1, bias=True, pad=0, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, k)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        ins.append("b")
    node = helper.make_node("Conv", ins, ["y"], name="conv", strides=[stride], dilations=[dilation], group=group,
                            pads=[pad, pad])
    out_len = (length + 2 * pad - (k - 1) * dilation - 1) // stride + 1
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out_len])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True), out_len


def _run(proto, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("k,stride,dilation,cols", [(5, 1, 1, 1), (5, 1, 1, 2), (4, 2, 1, 1), (5, 2, 1, 3),
                                                    (3, 1, 3, 1), (3, 1, 9, 4), (1, 1, 1, 4), (16, 4, 1, 2),
                                                    (3, 1, 27, MAX_COLUMNS), (1, 1, 1, MAX_COLUMNS), (1, 2, 1, 6),
                                                    (7, 3, 2, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_lowered_conv_computes_the_same_output(k, stride, dilation, cols, bias):
    length = (cols - 1) * stride + (k - 1) * dilation + 1
    proto, out_len = _conv_graph(6, 5, k, length, stride, dilation, bias=bias)
    assert out_len == cols
    x = np.random.default_rng(1).standard_normal((1, 6, length)).astype(np.float32)
    before = _run(proto, x)
    assert lower_narrow_convs(proto) == 1
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert "Conv" not in ops and "MatMul" in ops
    assert [i.name for i in proto.graph.initializer if i.name == "w"] == []  # the conv weight is gone
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cols", [2, 5, MAX_COLUMNS])
def test_several_columns_take_one_gather_whatever_their_number(cols):
    k, dilation = 3, 2
    proto, _ = _conv_graph(6, 5, k, (cols - 1) + (k - 1) * dilation + 1, dilation=dilation)
    assert lower_narrow_convs(proto) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gather") == 1 and "Slice" not in ops and "Concat" not in ops
    assert len(ops) == 8  # Reshape, Transpose, Gather, Reshape, MatMul, Add, Transpose, Reshape


def test_wide_grouped_and_padded_convs_stay_convs():
    wide, cols = _conv_graph(4, 4, 3, MAX_COLUMNS + 3)
    assert cols == MAX_COLUMNS + 1
    grouped, _ = _conv_graph(4, 4, 3, 3, group=2)
    padded, _ = _conv_graph(4, 4, 3, 1, pad=1)
    for proto in (wide, grouped, padded):
        n = len(proto.graph.node)
        assert lower_narrow_convs(proto) == 0
        assert [x.op_type for x in proto.graph.node] == ["Conv"] and len(proto.graph.node) == n


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    d = tmp_path_factory.mktemp("lower")
    block = cfg.frame  # one latent frame per call: the encoder's convs are narrow
    return (export_bundle(model, cfg, d / "lowered", block=block),
            export_bundle(model, cfg, d / "plain", block=block, lower=False))


def _narrow_convs(path) -> int:
    proto = onnx.load(str(path))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in proto.graph.value_info}
    return sum(1 for n in proto.graph.node if n.op_type == "Conv" and shapes[n.output[0]][2] <= MAX_COLUMNS)


def test_exported_fp32_bundle_has_no_narrow_conv_and_streams_like_the_plain_one(tiny_pair):
    lowered, plain = tiny_pair
    verify_bundle_files(lowered)  # manifest and sha256 hold for the rewritten files
    assert json.loads((lowered / MANIFEST).read_text())["export"]["lowered"] is True
    assert json.loads((plain / MANIFEST).read_text())["export"]["lowered"] is False
    assert _narrow_convs(plain / "encoder.onnx") > 0
    for g in ("encoder.onnx", "decoder.onnx"):
        assert _narrow_convs(lowered / g) == 0
    # the STFT's DFT matrix is gone from the lowered encoder: it reads fewer weights per call
    def weight_bytes(path):
        return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)
    stft = resolve("tiny").frontend.n_fft * (resolve("tiny").frontend.n_fft + 2) * 4
    assert weight_bytes(lowered / "encoder.onnx") < weight_bytes(plain / "encoder.onnx") - stft // 2
    x = (0.2 * np.random.default_rng(0).standard_normal(8 * BundleStreamer(plain).block)).astype(np.float32)
    ref = BundleStreamer(plain).stream(x)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(BundleStreamer(lowered).stream(x), ref, rtol=0, atol=1e-5)


def _summed_pointwise_graph(bias_a=True, bias_b=True, extra_reader=False, seed=0):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    for name, bias in (("a", bias_a), ("b", bias_b)):
        inits.append(numpy_helper.from_array(rng.standard_normal((5, 4, 1)).astype(np.float32), f"w_{name}"))
        ins = [f"x_{name}", f"w_{name}"]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), f"b_{name}"))
            ins.append(f"b_{name}")
        nodes.append(helper.make_node("Conv", ins, [f"y_{name}"], name=f"conv_{name}"))
    nodes.append(helper.make_node("Add", ["y_a", "y_b"], ["y"], name="add"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 16])]
    if extra_reader:  # conv a's output is also a graph output: it must stay
        outputs.append(helper.make_tensor_value_info("y_a", TensorProto.FLOAT, [1, 5, 16]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 16])
                                           for n in ("x_a", "x_b")], outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True)


def _run2(proto, feeds):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("bias_a,bias_b", [(True, True), (True, False), (False, False)])
def test_summed_pointwise_convs_become_one_conv_with_the_same_output(bias_a, bias_b):
    proto = _summed_pointwise_graph(bias_a, bias_b)
    rng = np.random.default_rng(2)
    feeds = {n: rng.standard_normal((1, 4, 16)).astype(np.float32) for n in ("x_a", "x_b")}
    before = _run2(proto, feeds)[0]
    assert merge_summed_pointwise_convs(proto) == 1
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == ["Concat", "Conv"]
    np.testing.assert_allclose(_run2(proto, feeds)[0], before, rtol=1e-5, atol=1e-5)


def test_a_pointwise_conv_read_elsewhere_is_not_merged():
    proto = _summed_pointwise_graph(extra_reader=True)
    assert merge_summed_pointwise_convs(proto) == 0
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Conv", "Add"]


@pytest.mark.parametrize("equation", ["dk,ndt->nkt", "dk,nkt->ndt", "ab,nbt->nat"])
def test_matrix_einsum_becomes_a_matmul_with_the_same_output(equation):
    rng = np.random.default_rng(3)
    m = rng.standard_normal((6, 6)).astype(np.float32)  # square, as the PCA rotation: both forms apply
    node = helper.make_node("Einsum", ["m", "x"], ["y"], equation=equation, name="einsum")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 3])],
                              [numpy_helper.from_array(m, "m")])
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((1, 6, 3)).astype(np.float32)
    before = _run(proto, x)
    assert lower_matrix_einsums(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["MatMul"]
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(before[0], np.einsum(equation, m, x[0:1])[0], rtol=1e-5, atol=1e-5)


def test_an_einsum_of_two_activations_stays():
    node = helper.make_node("Einsum", ["a", "x"], ["y"], equation="dk,ndt->nkt")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [6, 6]),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert lower_matrix_einsums(proto) == 0 and [n.op_type for n in proto.graph.node] == ["Einsum"]


def _dft_matrix(n: int, window: np.ndarray) -> np.ndarray:
    """What the mel front-end's STFT conv becomes once lowered: [N, 2B], window times [cos | -sin]."""
    bins = n // 2 + 1
    phase = 2 * np.pi * np.outer(np.arange(n), np.arange(bins)) / n
    return (np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]).astype(np.float32)


def _matmul_graph(w: np.ndarray, rows: int):
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="stft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, w.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, w.shape[1]])],
                              [numpy_helper.from_array(w, "w")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                             strict_mode=True)


@pytest.mark.parametrize("n,rows", [(512, 1), (256, 3), (96, 2), (1024, 2)])
def test_windowed_dft_becomes_two_small_products_with_the_same_output(n, rows):
    window = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2 * (2.0 / n)  # asymmetric-ish, scaled like the STFT
    w = _dft_matrix(n, window)
    proto = _matmul_graph(w, rows)
    x = np.random.default_rng(4).standard_normal((rows, n)).astype(np.float32)
    before = _run(proto, x)
    assert lower_windowed_dfts(proto) == 1
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    assert "w" not in {i.name for i in proto.graph.initializer}
    weights = sum(numpy_helper.to_array(i).size for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT)
    assert weights < w.size / 3  # the point: far fewer bytes read per call
    np.testing.assert_allclose(_run(proto, x), before, rtol=0, atol=1e-5 * np.abs(before).max())


def test_a_matrix_that_is_not_a_windowed_dft_stays():
    n = 64
    w = _dft_matrix(n, np.hanning(n))
    assert windowed_dft_window(w) is not None
    w[5, 7] += 1e-3  # one entry off
    assert windowed_dft_window(w) is None
    proto = _matmul_graph(w, 1)
    assert lower_windowed_dfts(proto) == 0 and [x.op_type for x in proto.graph.node] == ["MatMul"]
    assert windowed_dft_window(np.ones((64, 130), np.float32)) is None
    assert dft_factors(97) is None  # a prime length has nothing to factor
    n1, n2 = dft_factors(512)
    assert n1 * n2 == 512
