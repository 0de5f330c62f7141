"""The ONNX graph walk the quantisers and the TensorRT checker share (wavae.quantize.graph)."""

from __future__ import annotations

from onnx import TensorProto, helper

from wavae.quantize.graph import consumers, downstream, first_downstream, producers


def _graph():
    """x -> a(Relu) -> b(Conv) -> d(Add) -> y ;  x -> c(Conv) -> d ;  w (unused branch) -> e(Neg)."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Relu", ["x"], ["ta"], name="a"),
        helper.make_node("Conv", ["ta", "k"], ["tb"], name="b"),
        helper.make_node("Conv", ["x", "k"], ["tc"], name="c"),
        helper.make_node("Add", ["tb", "tc"], ["y"], name="d"),
        helper.make_node("Neg", ["w"], ["v"], name="e"),
    ]
    vi = [helper.make_tensor_value_info(n, f, [1, 1, 4]) for n in ("x", "w")]
    out = [helper.make_tensor_value_info(n, f, [1, 1, 4]) for n in ("y", "v")]
    return helper.make_model(helper.make_graph(nodes, "g", vi, out, [helper.make_tensor("k", f, [1, 1, 1], [1.0])]))


def test_producers_and_consumers_map_tensors_to_nodes():
    g = _graph()
    assert {t: n.name for t, n in producers(g).items()} == {"ta": "a", "tb": "b", "tc": "c", "y": "d", "v": "e"}
    assert {t: [n.name for n in ns] for t, ns in consumers(g).items()} == {
        "x": ["a", "c"], "ta": ["b"], "k": ["b", "c"], "tb": ["d"], "tc": ["d"], "w": ["e"],
    }


def test_downstream_is_breadth_first_once_each_and_stays_on_its_branch():
    g = _graph()
    assert [n.name for n in downstream(g, ["x"])] == ["a", "c", "b", "d"]  # d once, though two paths reach it
    assert [n.name for n in downstream(g, ["w"])] == ["e"]
    assert first_downstream(g, ["x"], "Conv").name == "c"  # the nearer of the two convs
    assert first_downstream(g, ["ta"], "Conv").name == "b"
    assert first_downstream(g, ["w"], "Conv") is None
