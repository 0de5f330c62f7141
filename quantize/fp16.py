"""FP16 graphs for the Jetson: weights and activations in half precision, I/O float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` with
``keep_io_types=True`` converts the graphs and puts Casts at the edges, so the
graph inputs and outputs (audio, latents, loudness and every streaming state)
stay float32 as docs/bundle.md requires.  The state is rounded to half
precision inside the graph, as any fp16 activation is.

The encoder's mel front-end and loudness measurement stay float32: the power
spectrum and the RMS power span more than fp16's range (quiet blocks underflow
to zero, then the log saturates).  Everything from the first VAE convolution on
is fp16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from wavae.device.bundle import Bundle, GraphInfo
from wavae.errors import WavaeError

from .bundle import OPSET, graph_opset
from .graph import downstream, first_downstream
from .int8 import frontend_nodes


def fp32_encoder_nodes(proto) -> list[str]:
    """Encoder nodes that are not downstream of the first convolution after the
    mel front-end: the STFT, mel, log, normalisation and loudness path."""
    fe = frontend_nodes(proto)
    if len(fe) < 2:
        return []
    mel = next(n for n in proto.graph.node if n.name == fe[1])
    vae_conv = first_downstream(proto, list(mel.output), "Conv")
    if vae_conv is None:
        return []
    half = {id(vae_conv)} | {id(n) for n in downstream(proto, list(vae_conv.output))}
    return [n.name for n in proto.graph.node if id(n) not in half]


def convert_graph(src: Path, dst: Path, keep_fp32: list[str]) -> None:
    """Write the fp16 form of the fp32 graph ``src`` to ``dst``, the nodes ``keep_fp32`` left in float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    dst = Path(dst)
    proto = onnx.load(str(src))
    half = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep_fp32)
    _toposort(half.graph)  # the converter appends its Casts at the end of the node list
    if graph_opset(half) != OPSET:
        raise WavaeError(f"fp16 {dst.name} came out with opset {graph_opset(half)}, not {OPSET}")
    for vi in list(half.graph.input) + list(half.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise WavaeError(f"fp16 {dst.name}: I/O {vi.name} is not float32")
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise WavaeError(f"fp16 graph has a cycle or a dangling input at {rest[0].name}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def convert_bundle_graphs(
    fp32: Bundle, out: dict[str, GraphInfo], progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write fp16 versions of the ``fp32`` bundle's graphs to ``out``'s files (a bundle
    being written).  Returns the manifest's ``quantization`` section."""
    import onnx

    kept: dict[str, list[str]] = {}
    for g, info in out.items():
        if progress:
            progress(f"converting {g} to fp16")
        src = fp32.graph(g).file
        keep = fp32_encoder_nodes(onnx.load(str(src))) if g == "encoder" else []
        kept[g] = keep
        convert_graph(src, info.file, keep)
    return {
        "scheme": "onnxruntime.transformers.float16, keep_io_types",
        "weights": "float16",
        "activations": "float16",
        "float_nodes": kept,
        "state": "float32 I/O (rounded to float16 inside the graph)",
    }
