"""Rewrites of the exported fp32 graphs into equivalent standard ONNX that
onnxruntime runs faster (figures in docs/benchmarks/speed.md and pi-device.md).

Narrow convolutions as matrix products
--------------------------------------
At one or two latent frames per block, most convolutions of the encoder and of
the VAE decoder (and the mel front-end's STFT) produce one to a dozen output
samples.  Each is then a matrix-vector product whose cost is reading its weights
from memory, not the arithmetic.  onnxruntime's Conv reads the weight matrix as
stored, for each call, and multiplies it by an im2col matrix whose few columns
its kernel pads to a panel of 16; its MatMul with a constant right-hand side
re-packs that matrix once, when the session is created, into the panels its
kernel streams through, which reads the same bytes faster, with the output
samples as the (unpadded) rows.

So a Conv whose output is at most ``MAX_COLUMNS`` samples long becomes the same
sums written as a product.  One output sample (a window, flattened)::

    x [1, C, L] --(Slice: the window, unless it is all of x)--> Reshape [1, C*K]
      --MatMul W' [C*K, O]--> + bias --Reshape--> y [1, O, 1]

with ``W'`` the conv's weight ``[O, C, K]`` flattened to rows of ``C*K`` and
transposed.  Several output samples (one Gather makes every window, whatever
their number)::

    x [1, C, L] --Reshape [C, L]--Transpose--> [L, C] --Gather (rows t*S + k*D)-->
      [T, K, C] --Reshape--> [T, K*C] --MatMul W'' [K*C, O]--> + bias
      --Transpose--> [O, T] --Reshape--> y [1, O, T]

with ``W''`` the weight in (tap, channel) order: the windows are gathered as
whole time-major rows of C channels (a 1x1 stride-1 conv needs no Gather at
all).  Every output is the same dot product as before, summed in another order
(differences of a few float32 roundings).  Beyond ``MAX_COLUMNS`` the Conv
stays: its kernel's padded panel is then mostly used, and onnxruntime's Conv
outruns the product on the wide, many-channel layers of the larger presets.

Summed pointwise convolutions as one
------------------------------------
A MelGAN residual block ends in ``conv1x1_a(h) + conv1x1_b(x)`` (the body's
last layer and the shortcut).  That is one 1x1 convolution of the two inputs
stacked on the channel axis, with the two weights side by side and the biases
summed: ``Conv([h; x], [W_a W_b], b_a + b_b)``, one kernel call and one Concat
in place of two calls and an Add.

Only plain 1-D convolutions are rewritten: one group, no padding attribute (the
streaming layers pad with their state, never in the Conv), constant weight and
bias, batch 1 and static shapes; anything else is left as it is.

A windowed DFT as two small products
------------------------------------
The STFT of the mel front-end is a convolution whose weight is the window times
the real and imaginary DFT rows: once lowered, ``frames [R, N] @ W [N, 2B]``
(``B = N/2 + 1`` bins, real parts then imaginary).  At ``n_fft = 512`` that
matrix is 1 MB of float32, read whole for every call; at 1024, 4 MB, more than
every other weight of the encoder.  The same numbers come from the two-stage
(Cooley-Tukey) factorisation ``N = N1 * N2``, ``n = N2 n1 + n2``,
``k = k1 + N1 k2``::

    A[k1, n2] = sum_n1 exp(-2 pi i n1 k1 / N1) (w x)[N2 n1 + n2]       stage 1: [2 N1, N1] @ [N1, N2]
    X[k]      = sum_n2 exp(-2 pi i n2 k / N) A[k mod N1, n2]          stage 2: per k1, [2 N2] @ [2 N2, 2 K2]

(real and imaginary parts as separate rows; ``K2 = ceil(B / N1)``), whose
constants take ~80 KB at N = 512 (N1 chosen to make them smallest).  A MatMul
is rewritten only when its constant matches a windowed DFT to float32 rounding
(checked against the matrix itself), so nothing else can be caught by it; the
outputs differ from the direct product by float32 roundings.

A constant matrix applied to the channels as an Einsum
------------------------------------------------------
The PCA rotation is written ``einsum("dk,ndt->nkt", R, z)``; onnxruntime's
generic Einsum kernel takes ~10-30 us for a 16 x 16 matrix where a MatMul of the
same matrix (transposed once, here) and ``z`` broadcast over the batch takes a
few.  Two-input Einsums ``PQ,nQt->nPt`` and ``QP,nQt->nPt`` with a constant
first input become that MatMul.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_COLUMNS = 12  # output samples up to which a Conv becomes a MatMul


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


def _plain_conv(node, inits: dict, shapes: dict) -> bool:
    """A 1-D Conv of one group, no padding attribute, constant weight and bias, batch 1, static shapes."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    a = _attrs(node)
    if a.get("group", 1) != 1 or any(a.get("pads", [])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if node.input[1] not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
        return False
    x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
    return x is not None and y is not None and len(inits[node.input[1]].dims) == 3 and len(x) == 3 and x[0] == 1


def _replace_nodes(proto, nodes: list, new_inits: list) -> None:
    """Set the graph's nodes, add ``new_inits``, drop initializers no node reads any more
    and the stale intermediate shapes (the caller infers them again)."""
    g = proto.graph
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {i for node in g.node for i in node.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]


def lower_graph(proto) -> dict[str, int]:
    """Every rewrite of this module, in place, shapes inferred again after each; returns
    how many nodes each rewrote.  ``proto`` must carry static shapes."""
    import onnx

    done = {}
    for name, rewrite in (("summed_pointwise_convs", merge_summed_pointwise_convs),
                          ("narrow_convs", lower_narrow_convs),
                          ("windowed_dfts", lower_windowed_dfts),
                          ("matrix_einsums", lower_matrix_einsums)):
        done[name] = rewrite(proto)
        if done[name]:
            proto.CopyFrom(onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True))
    return done


def lower_narrow_convs(proto, max_columns: int = MAX_COLUMNS) -> int:
    """Rewrite, in place, every Conv of ``proto`` whose output is at most ``max_columns``
    samples long into a MatMul (see the module docstring); return how many were.

    ``proto`` must carry static shapes (``onnx.shape_inference``); the caller infers
    them again afterwards.
    """
    from onnx import numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    shapes = _static_shapes(proto)
    nodes, new_inits, lowered = [], [], 0

    def const(name: str, value) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for n in g.node:
        if not (_plain_conv(n, inits, shapes) and shapes[n.output[0]][2] <= max_columns):
            nodes.append(n)
            continue
        a = _attrs(n)
        w = numpy_helper.to_array(inits[n.input[1]])
        stride, dilation = a.get("strides", [1])[0], a.get("dilations", [1])[0]
        lower = _one_column if shapes[n.output[0]][2] == 1 else _columns
        nodes.extend(lower(n, w, stride, dilation, shapes[n.input[0]][2], shapes[n.output[0]][2], const))
        lowered += 1
    if lowered:
        _replace_nodes(proto, nodes, new_inits)
    return lowered


def _bias(n) -> str | None:
    return n.input[2] if len(n.input) > 2 and n.input[2] else None


def _one_column(n, w, stride: int, dilation: int, length: int, cols: int, const) -> list:
    """One output sample: its window flattened in the weight's (channel, tap) order, times ``W'``."""
    from onnx import helper

    cout, cin, k = w.shape
    span = (k - 1) * dilation + 1
    p = f"{n.name or n.output[0]}/as_matmul"
    nodes, window = [], n.input[0]
    if not (dilation == 1 and length == k):
        window = f"{p}/window"
        nodes.append(helper.make_node(
            "Slice",
            [n.input[0], const(f"{p}/start", np.array([0], np.int64)), const(f"{p}/end", np.array([span], np.int64)),
             const(f"{p}/axis", np.array([2], np.int64)), const(f"{p}/step", np.array([dilation], np.int64))],
            [window], name=f"{p}/Slice"))
    row = f"{p}/row"
    nodes.append(helper.make_node("Reshape", [window, const(f"{p}/row_shape", np.array([1, cin * k], np.int64))],
                                  [row], name=f"{p}/Reshape_row"))
    weight = const(f"{p}/weight", np.ascontiguousarray(w.reshape(cout, cin * k).T))
    m = f"{p}/product"
    nodes.append(helper.make_node("MatMul", [row, weight], [m], name=f"{p}/MatMul"))
    if _bias(n):
        nodes.append(helper.make_node("Add", [m, _bias(n)], [f"{p}/biased"], name=f"{p}/Add"))
        m = f"{p}/biased"
    nodes.append(helper.make_node("Reshape", [m, const(f"{p}/out_shape", np.array([1, cout, 1], np.int64))],
                                  [n.output[0]], name=f"{p}/Reshape_out"))
    return nodes


def _columns(n, w, stride: int, dilation: int, length: int, cols: int, const) -> list:
    """Several output samples: time-major windows gathered as rows, times ``W''`` (tap, channel order)."""
    from onnx import helper

    cout, cin, k = w.shape
    p = f"{n.name or n.output[0]}/as_matmul"
    nodes = [
        helper.make_node("Reshape", [n.input[0], const(f"{p}/in_shape", np.array([cin, length], np.int64))],
                         [f"{p}/input"], name=f"{p}/Reshape_in"),
        helper.make_node("Transpose", [f"{p}/input"], [f"{p}/time_major"], perm=[1, 0], name=f"{p}/Transpose_in"),
    ]
    rows = f"{p}/time_major"
    if not (k == 1 and stride == 1):  # else every input sample is one output's whole window
        taps = stride * np.arange(cols)[:, None] + dilation * np.arange(k)[None, :]
        nodes += [
            helper.make_node("Gather", [rows, const(f"{p}/taps", taps.astype(np.int64))], [f"{p}/windows"], axis=0,
                             name=f"{p}/Gather"),
            helper.make_node("Reshape", [f"{p}/windows", const(f"{p}/rows_shape", np.array([cols, k * cin], np.int64))],
                             [f"{p}/rows"], name=f"{p}/Reshape_rows"),
        ]
        rows = f"{p}/rows"
    # MatMul (+ Add), not Gemm: onnxruntime fuses a bias-less Gemm with the Transpose after
    # it into one whose constant is the left operand, which it does not pre-pack (much slower)
    weight = const(f"{p}/weight", np.ascontiguousarray(w.transpose(2, 1, 0).reshape(k * cin, cout)))
    m = f"{p}/product"
    nodes.append(helper.make_node("MatMul", [rows, weight], [m], name=f"{p}/MatMul"))
    if _bias(n):
        nodes.append(helper.make_node("Add", [m, _bias(n)], [f"{p}/biased"], name=f"{p}/Add"))
        m = f"{p}/biased"
    nodes += [
        helper.make_node("Transpose", [m], [f"{p}/channels_first"], perm=[1, 0], name=f"{p}/Transpose_out"),
        helper.make_node("Reshape", [f"{p}/channels_first", const(f"{p}/out_shape", np.array([1, cout, cols], np.int64))],
                         [n.output[0]], name=f"{p}/Reshape_out"),
    ]
    return nodes


def merge_summed_pointwise_convs(proto) -> int:
    """Rewrite, in place, every ``Add(Conv1x1(a), Conv1x1(b))`` whose two convs feed
    only that Add into one Conv of ``Concat([a, b])`` (see the module docstring);
    return how many Adds were.  ``proto`` must carry static shapes."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    shapes = _static_shapes(proto)
    writers = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for i in [i for n in g.node for i in n.input] + [o.name for o in g.output]:
        readers[i] = readers.get(i, 0) + 1

    def pointwise(t: str):
        n = writers.get(t)
        if n is None or not _plain_conv(n, inits, shapes) or readers.get(t) != 1:
            return None
        a = _attrs(n)
        k = inits[n.input[1]].dims[2]
        return n if k == 1 and a.get("strides", [1]) == [1] and a.get("dilations", [1]) == [1] else None

    merged: dict[int, list] = {}
    dropped: set[int] = set()
    new_inits = []
    for n in g.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        ca, cb = pointwise(n.input[0]), pointwise(n.input[1])
        if ca is None or cb is None or ca is cb or shapes[ca.output[0]] != shapes[cb.output[0]]:
            continue
        p = f"{n.name or n.output[0]}/merged_pointwise"
        weight = np.concatenate([numpy_helper.to_array(inits[c.input[1]]) for c in (ca, cb)], axis=1)
        bias = sum(numpy_helper.to_array(inits[c.input[2]]).astype(np.float32) for c in (ca, cb)
                   if len(c.input) > 2 and c.input[2])
        ins = [f"{p}/inputs", f"{p}/weight"]
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(weight), ins[1]))
        if not isinstance(bias, int):
            ins.append(f"{p}/bias")
            new_inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), ins[2]))
        merged[id(n)] = [
            helper.make_node("Concat", [ca.input[0], cb.input[0]], [ins[0]], axis=1, name=f"{p}/Concat"),
            helper.make_node("Conv", ins, [n.output[0]], name=f"{p}/Conv"),
        ]
        dropped |= {id(ca), id(cb)}
    if merged:
        nodes = [m for n in g.node if id(n) not in dropped for m in merged.get(id(n), [n])]
        _replace_nodes(proto, nodes, new_inits)
    return len(merged)


def lower_matrix_einsums(proto) -> int:
    """Rewrite, in place, every Einsum ``PQ,nQt->nPt`` or ``QP,nQt->nPt`` whose first input
    is a constant matrix into a MatMul (see the module docstring); return how many were."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    nodes, new_inits, lowered = [], [], 0
    for n in g.node:
        eq = _attrs(n).get("equation", b"") if n.op_type == "Einsum" else b""
        eq = (eq.decode() if isinstance(eq, bytes) else eq).replace(" ", "")
        lhs, _, out = eq.partition("->")
        terms = lhs.split(",")
        ok = (len(terms) == 2 and len(n.input) == 2 and n.input[0] in inits and len(terms[0]) == 2
              and len(terms[1]) == 3 and len(out) == 3 and len(set(terms[0] + terms[1])) == 4)
        if ok:
            (a, b), (bn, c, bt), (on, o, ot) = terms[0], terms[1], out
            ok = bn == on and bt == ot and {c, o} == {a, b} and c != o and bn not in (a, b) and bt not in (a, b)
        if not ok:
            nodes.append(n)
            continue
        m = numpy_helper.to_array(inits[n.input[0]])
        m = m if (a, b) == (o, c) else m.T  # rows: output channels, columns: input channels
        p = f"{n.name or n.output[0]}/as_matmul"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(m), f"{p}/matrix"))
        nodes.append(helper.make_node("MatMul", [f"{p}/matrix", n.input[1]], [n.output[0]], name=f"{p}/MatMul"))
        lowered += 1
    if lowered:
        _replace_nodes(proto, nodes, new_inits)
    return lowered


def windowed_dft_window(w: np.ndarray) -> np.ndarray | None:
    """The window ``v`` when ``w [N, 2B]`` (``B = N // 2 + 1``) is ``v[n] * [cos | -sin](2 pi n b / N)``
    to float32 rounding, else None."""
    if w.ndim != 2 or w.shape[0] < 4 or w.shape[1] != 2 * (w.shape[0] // 2 + 1):
        return None
    n, bins = w.shape[0], w.shape[0] // 2 + 1
    window = w[:, 0].astype(np.float64)  # bin 0: cos 0 = 1
    phase = 2.0 * np.pi * np.outer(np.arange(n), np.arange(bins)) / n
    expected = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]
    scale = float(np.abs(w).max())
    if scale == 0.0 or float(np.abs(expected - w).max()) > 1e-6 * scale:
        return None
    return window


def dft_factors(n: int) -> tuple[int, int] | None:
    """``(N1, N2)`` with ``N1 * N2 = n`` whose stage constants (``2 N1^2 + N1 * 2 N2 * 2 K2`` floats) are
    fewest; None for a prime ``n`` (nothing to factor)."""
    bins = n // 2 + 1
    sizes = {n1: 2 * n1 * n1 + n1 * 2 * (n // n1) * 2 * -(-bins // n1) for n1 in range(2, n) if n % n1 == 0}
    if not sizes:
        return None
    n1 = min(sizes, key=sizes.get)
    return n1, n // n1


def lower_windowed_dfts(proto) -> int:
    """Rewrite, in place, every ``MatMul(frames [R, N], W)`` whose constant ``W`` is a windowed real
    DFT (``windowed_dft_window``) into the two-stage factorisation of the module docstring; return
    how many were.  ``proto`` must carry static shapes."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    shapes = _static_shapes(proto)
    nodes, new_inits, lowered = [], [], 0

    def const(name: str, value) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for n in g.node:
        window = None
        x_shape = shapes.get(n.input[0]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if x_shape is not None and len(x_shape) == 2 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            factors = dft_factors(w.shape[0]) if w.ndim == 2 and w.shape[0] == x_shape[1] else None
            window = windowed_dft_window(w) if factors else None
        if window is None:
            nodes.append(n)
            continue
        nodes.extend(_two_stage_dft(n, window, x_shape[0], factors, const))
        lowered += 1
    if lowered:
        _replace_nodes(proto, nodes, new_inits)
    return lowered


def _two_stage_dft(n, window: np.ndarray, rows: int, factors: tuple[int, int], const) -> list:
    """``n``'s output ``[R, 2B]`` from its input ``[R, N]`` by the two stages of the module docstring."""
    from onnx import helper

    size = window.size
    bins = size // 2 + 1
    n1, n2 = factors
    k2 = -(-bins // n1)
    p = f"{n.name or n.output[0]}/two_stage_dft"
    # stage 1, over n1 for every n2: rows [cos(2 pi k1 n1 / N1) ; -sin(...)], k1 < N1
    a = 2.0 * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1
    first = np.concatenate([np.cos(a), -np.sin(a)], axis=0)
    # stage 2, for each k1: [Re A(n2) | Im A(n2)] -> [Re X(k1 + N1 k2) | Im X(...)], k2 < K2
    second = np.zeros((n1, 2 * n2, 2 * k2))
    for j in range(n1):
        angle = -2.0 * np.pi * np.outer(np.arange(n2), j + n1 * np.arange(k2)) / size
        c, s = np.cos(angle), np.sin(angle)  # (re + i im)(c + i s)
        second[j, :n2, :k2], second[j, n2:, :k2] = c, -s
        second[j, :n2, k2:], second[j, n2:, k2:] = s, c

    def shape(name: str, dims) -> str:
        return const(f"{p}/{name}_shape", np.array(dims, np.int64))

    return [
        helper.make_node("Reshape", [n.input[0], shape("grid", [rows, n1, n2])], [f"{p}/grid"], name=f"{p}/Reshape_grid"),
        helper.make_node("Mul", [f"{p}/grid", const(f"{p}/window", window.reshape(n1, n2).astype(np.float32))],
                         [f"{p}/windowed"], name=f"{p}/Mul_window"),
        helper.make_node("MatMul", [const(f"{p}/first", first.astype(np.float32)), f"{p}/windowed"], [f"{p}/stage1"],
                         name=f"{p}/MatMul_first"),
        helper.make_node("Reshape", [f"{p}/stage1", shape("parts", [rows, 2, n1, n2])], [f"{p}/parts"],
                         name=f"{p}/Reshape_parts"),
        helper.make_node("Transpose", [f"{p}/parts"], [f"{p}/per_k1"], perm=[0, 2, 1, 3], name=f"{p}/Transpose_k1"),
        helper.make_node("Reshape", [f"{p}/per_k1", shape("vectors", [rows, n1, 1, 2 * n2])], [f"{p}/vectors"],
                         name=f"{p}/Reshape_vectors"),
        helper.make_node("MatMul", [f"{p}/vectors", const(f"{p}/second", second.astype(np.float32))], [f"{p}/stage2"],
                         name=f"{p}/MatMul_second"),
        helper.make_node("Reshape", [f"{p}/stage2", shape("bins", [rows, n1, 2, k2])], [f"{p}/bins_k1"],
                         name=f"{p}/Reshape_bins"),
        helper.make_node("Transpose", [f"{p}/bins_k1"], [f"{p}/bins_k"], perm=[0, 2, 3, 1], name=f"{p}/Transpose_k"),
        helper.make_node("Reshape", [f"{p}/bins_k", shape("flat", [rows, 2, k2 * n1])], [f"{p}/flat"],
                         name=f"{p}/Reshape_flat"),
        helper.make_node("Slice", [f"{p}/flat", const(f"{p}/start", np.array([0], np.int64)),
                                   const(f"{p}/end", np.array([bins], np.int64)), const(f"{p}/axis", np.array([2], np.int64))],
                         [f"{p}/bins"], name=f"{p}/Slice_bins"),
        helper.make_node("Reshape", [f"{p}/bins", shape("out_shape", [rows, 2 * bins])], [n.output[0]],
                         name=f"{p}/Reshape_out"),
    ]
