"""Narrow convolutions as matrix products: a rewrite of the exported fp32 graphs.

At one or two latent frames per block, most convolutions of the encoder and of
the VAE decoder (and the mel front-end's STFT) produce one to four output
samples.  Each is then a matrix-vector product whose cost is reading its weights
from memory, not the arithmetic.  onnxruntime's Conv reads the weight matrix as
stored, for each call; its MatMul with a constant right-hand side re-packs that
matrix once, when the session is created, into the panels its kernel streams
through, which reads the same bytes faster (docs/benchmarks/speed.md).

So a Conv whose output is at most ``MAX_COLUMNS`` samples long becomes, in
standard opset-17 ONNX, the same sums written as a product::

    x [1, C, L] --Slice (one window per output sample)--> Reshape [1, C*K]
      --Concat (windows as rows)--> [T, C*K] --MatMul W' [C*K, O]--> + bias
      --Transpose--> [O, T] --Reshape--> y [1, O, T]

with ``W'`` the conv's weight ``[O, C, K]`` flattened to rows of ``C*K`` and
transposed.  A window is ``x[..., t*S : t*S + (K-1)*D + 1 : D]`` (stride S,
dilation D), flattened in the weight's own (channel, tap) order, so every output
is the same dot product as before, summed in another order (differences of a
few float32 roundings).  With one output sample and a window that is the whole
input, the Slice and the Transpose drop out.

Only plain 1-D convolutions are rewritten: one group, no padding attribute (the
streaming layers pad with their state, never in the Conv), constant weight and
bias, batch 1 and static shapes; anything else is left as it is.  Wider
convolutions stay Conv: their windows overlap, so the copies of an explicit
im2col cost more than the re-packed weights save.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_COLUMNS = 4  # output samples up to which a Conv becomes a MatMul


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _static_shapes(proto) -> dict[str, list[int]]:
    shapes = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _lowerable(node, inits: dict, shapes: dict, max_columns: int) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    a = _attrs(node)
    if a.get("group", 1) != 1 or any(a.get("pads", [])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if node.input[1] not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
        return False
    x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
    w = inits[node.input[1]].dims
    return x is not None and y is not None and len(w) == 3 and len(x) == 3 and x[0] == 1 and y[2] <= max_columns


def lower_narrow_convs(proto, max_columns: int = MAX_COLUMNS) -> int:
    """Rewrite, in place, every Conv of ``proto`` whose output is at most ``max_columns``
    samples long into a MatMul (see the module docstring); return how many were.

    ``proto`` must carry static shapes (``onnx.shape_inference``); the caller infers
    them again afterwards.
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    shapes = _static_shapes(proto)
    nodes, new_inits, lowered = [], [], 0

    def const(name: str, value) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for n in g.node:
        if not _lowerable(n, inits, shapes, max_columns):
            nodes.append(n)
            continue
        a = _attrs(n)
        w = numpy_helper.to_array(inits[n.input[1]])
        cout, cin, k = w.shape
        stride, dilation = a.get("strides", [1])[0], a.get("dilations", [1])[0]
        span = (k - 1) * dilation + 1
        length, cols = shapes[n.input[0]][2], shapes[n.output[0]][2]
        p = f"{n.name or n.output[0]}/as_matmul"
        rows = []
        for t in range(cols):
            window = n.input[0]
            if not (cols == 1 and dilation == 1 and length == k):
                window = f"{p}/window_{t}"
                nodes.append(helper.make_node(
                    "Slice",
                    [n.input[0], const(f"{p}/start_{t}", np.array([t * stride], np.int64)),
                     const(f"{p}/end_{t}", np.array([t * stride + span], np.int64)),
                     const(f"{p}/axis_{t}", np.array([2], np.int64)),
                     const(f"{p}/step_{t}", np.array([dilation], np.int64))],
                    [window], name=f"{p}/Slice_{t}"))
            rows.append(f"{p}/row_{t}")
            nodes.append(helper.make_node("Reshape", [window, const(f"{p}/row_shape_{t}", np.array([1, cin * k], np.int64))],
                                          [rows[-1]], name=f"{p}/Reshape_{t}"))
        m = rows[0]
        if cols > 1:
            m = f"{p}/windows"
            nodes.append(helper.make_node("Concat", rows, [m], axis=0, name=f"{p}/Concat"))
        weight = const(f"{p}/weight", np.ascontiguousarray(w.reshape(cout, cin * k).T))
        nodes.append(helper.make_node("MatMul", [m, weight], [f"{p}/product"], name=f"{p}/MatMul"))
        m = f"{p}/product"
        if len(n.input) > 2 and n.input[2]:
            nodes.append(helper.make_node("Add", [m, n.input[2]], [f"{p}/biased"], name=f"{p}/Add"))
            m = f"{p}/biased"
        if cols > 1:
            nodes.append(helper.make_node("Transpose", [m], [f"{p}/channels_first"], perm=[1, 0], name=f"{p}/Transpose"))
            m = f"{p}/channels_first"
        nodes.append(helper.make_node("Reshape", [m, const(f"{p}/out_shape", np.array([1, cout, cols], np.int64))],
                                      [n.output[0]], name=f"{p}/Reshape_out"))
        lowered += 1
    if not lowered:
        return 0
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {i for node in g.node for i in node.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]  # stale for the rewritten tensors; the caller infers shapes again
    return lowered
