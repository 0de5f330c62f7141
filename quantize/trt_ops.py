"""Will TensorRT's ONNX parser take this graph?  A checker that runs anywhere.

``check_onnx_for_tensorrt(path) -> list[str]`` lists every problem (empty: fine):

* an operator that is not in the ONNX-TensorRT parser's support matrix, or from
  a non-standard domain;
* a tensor (graph input, output or any intermediate) without a fully static
  shape, after ONNX shape inference;
* the matrix's restrictions that concern graphs like ours: Conv / ConvTranspose
  weights must be initializers (directly or through a DequantizeLinear of one);
  Slice/Squeeze/Unsqueeze axes must be constant; Quantize/DequantizeLinear zero
  points must be 0 (TensorRT does symmetric int8 only); opset at most 17.

The support matrix is embedded from onnx/onnx-tensorrt ``docs/operators.md`` at
commit 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc, the matrix of **TensorRT 8.5**
("supports operators up to Opset 17"), the TensorRT of JetPack 5.1.  Later
TensorRT versions (8.6, 10.x of JetPack 6) support a superset of these
operators, so a graph that passes here parses on any JetPack from 5.1 on.
"""

from __future__ import annotations

from pathlib import Path

from .graph import producers

MATRIX_SOURCE = "onnx/onnx-tensorrt docs/operators.md @ 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc (TensorRT 8.5, opset <= 17)"
MAX_OPSET = 17

# Operators marked "Y" in that matrix.
SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
    BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv
    ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
    Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND
    Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
    InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN
    LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
    Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign
    Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
    Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
    Unsqueeze Upsample Where Xor
    """.split()
)

# Operators the matrix lists as "N" (named in the message, for a clearer hint).
UNSUPPORTED_OPS = frozenset(
    """
    Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT
    Det DynamicQuantizeLinear HammingWindow HannWindow Hardmax IsInf
    LayerNormalization MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix
    Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
    OptionalHasElement QLinearConv QLinearMatMul STFT SequenceAt SequenceConstruct
    SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
    SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer Unique
    """.split()
)

# input index that must be constant, per op (restrictions of the matrix)
_CONST_INPUTS = {"Slice": [3], "Squeeze": [1], "Unsqueeze": [1], "TopK": [1], "CumSum": [1]}


def _static_shapes(proto) -> tuple[dict[str, list[int]], list[str]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    dynamic: list[str] = []
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            dynamic.append(f"{vi.name}: unknown rank")
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if any(d is None or d <= 0 for d in dims):
            names = [d.dim_param if d.HasField("dim_param") else "?" for d in t.shape.dim]
            dynamic.append(f"{vi.name}: shape {[d if d else n for d, n in zip(dims, names)]}")
        else:
            shapes[vi.name] = dims
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes, dynamic


def prepare_for_tensorrt(proto):
    """A copy of ``proto`` with every DequantizeLinear of a constant *int32* tensor
    (onnxruntime's quantised conv biases) replaced by the float constant it computes.

    onnxruntime wants int32 biases to fuse a QLinearConv on the CPU; TensorRT's
    DequantizeLinear takes int8 only and quantises biases itself.  The result is
    the same function with float biases; ``wavae engine`` parses this form.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    folded = []
    for n in g.node:
        x = inits.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if x is None or x.data_type != onnx.TensorProto.INT32 or n.input[1] not in inits:
            keep.append(n)
            continue
        q = numpy_helper.to_array(x).astype(np.float64)
        scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        zp = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) if len(n.input) > 2 and n.input[2] else 0.0
        if np.ndim(scale) == 1 and q.ndim > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
        folded.append(numpy_helper.from_array(((q - zp) * scale).astype(np.float32), n.output[0]))
    if folded:
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(folded)
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        unused = [t for t in g.initializer if t.name not in used]
        for t in unused:
            g.initializer.remove(t)
    return out


def check_onnx_for_tensorrt(path: str | Path) -> list[str]:
    """Every reason TensorRT's ONNX parser (8.5 and later) would refuse ``path``,
    as ``wavae engine`` hands it over (after ``prepare_for_tensorrt``); [] when none."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    proto = prepare_for_tensorrt(onnx.load(str(path)))
    problems: list[str] = []
    where = path.name

    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > MAX_OPSET:
            problems.append(f"{where}: opset {o.version} is newer than TensorRT 8.5 parses ({MAX_OPSET})")

    inits = {t.name: t for t in proto.graph.initializer}
    constants = set(inits)
    for n in proto.graph.node:
        if n.op_type == "Constant":
            constants.update(n.output)
    writers = producers(proto)

    def is_weight(name: str) -> bool:
        if name in constants:
            return True
        p = writers.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] in constants

    for n in proto.graph.node:
        label = f"{where}: node {n.name or '(unnamed)'} ({n.op_type})"
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {n.domain!r} is not parsed by TensorRT without a plugin")
            continue
        if n.op_type not in SUPPORTED_OPS:
            why = "marked unsupported" if n.op_type in UNSUPPORTED_OPS else "not in"
            problems.append(f"{label}: operator {why} TensorRT's ONNX support matrix")
            continue
        if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and not is_weight(n.input[1]):
            problems.append(f"{label}: weights {n.input[1]!r} must be an initializer")
        for idx in _CONST_INPUTS.get(n.op_type, []):
            if len(n.input) > idx and n.input[idx] and n.input[idx] not in constants:
                problems.append(f"{label}: input {idx} ({n.input[idx]!r}) must be a constant")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2])
            if zp is None:
                problems.append(f"{label}: zero point must be a constant 0")
            elif numpy_helper.to_array(zp).any():
                problems.append(f"{label}: zero point must be 0 (TensorRT quantises symmetrically)")
            elif zp.data_type != onnx.TensorProto.INT8:
                problems.append(f"{label}: zero point type must be int8 (TensorRT has no uint8 Q/DQ)")

    _, dynamic = _static_shapes(proto)
    problems.extend(f"{where}: tensor {d} is not static" for d in dynamic)
    return problems


def check_bundle_for_tensorrt(bundle: str | Path) -> list[str]:
    """``check_onnx_for_tensorrt`` over every graph of a bundle."""
    from wavae.device.bundle import read_manifest

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems: list[str] = []
    for spec in manifest["graphs"].values():
        problems.extend(check_onnx_for_tensorrt(bundle / spec["file"]))
    return problems
