"""Static INT8 quantisation of a bundle's graphs: explicit Q/DQ, per-channel weights.

    fp32 encoder.onnx / decoder.onnx --stream real audio, block by block--> calibration
    samples (each with the *real* streaming state) --onnxruntime.quantization
    .quantize_static(QDQ)--> int8 encoder.onnx / decoder.onnx

Choices
-------
* Format QDQ: explicit QuantizeLinear/DequantizeLinear pairs, which the ARM CPU
  kernels of onnxruntime fuse and which TensorRT >= 10 needs for explicit
  quantisation.
* Weights: QInt8, symmetric, per output channel (conv channels differ a lot in
  scale, especially after batch-norm folding).
* Activations: QInt8 *symmetric* by default.  TensorRT accepts only symmetric
  int8 (zero point 0), and onnxruntime's guidance for ARM cores (the Pi) prefers
  symmetric QInt8 activations too, so one bundle serves both.  On x86,
  onnxruntime fuses Q/DQ convolutions into QLinearConv only with *uint8*
  activations (it allows s8s8 fusion on ARM only); there a symmetric-int8 graph
  runs as float convs plus per-call weight dequantisation, slower than fp32.
  ``activations="uint8"`` (asymmetric) makes the x86 form, for desktop
  benchmarks; it is not TensorRT-ready.
* Only Conv / ConvTranspose / MatMul / Gemm are quantised, and not
  - those of the mel front-end (the STFT conv and the mel filterbank): a log-mel
    of 8-bit magnitudes loses everything quieter than ~48 dB below the block's
    peak, which wrecks quiet passages;
  - the vocoder's output conv (channels -> 1, or -> the PQMF sub-bands, before
    Tanh) and, in a multi-band vocoder, the fixed PQMF synthesis bank after Tanh
    (a ConvTranspose): their rounding lands on the audio directly.  On a briefly trained `tiny` run keeping it float raised
    the int8-vs-fp32 SNR by ~4.7 dB, while no other single layer gained more
    than 0.8 dB; it is well under 1% of the MACs.
  Everything around them (LeakyReLU, Concat, Slice, Add, the loudness path, the
  PCA) runs in float.
* Streaming state stays float32: state inputs are never quantised, and state
  outputs are never produced by a DequantizeLinear (``check_state_float``), so an
  error made in one block is not re-quantised into every following one.
* Calibration: the fp32 graphs stream the calibration audio from zero state; the
  encoder's samples carry its real state, the decoder's samples carry the fp32
  encoder's z/loudness and the decoder's real state.  MinMax ranges (the default)
  or percentiles.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from wavae.device.bundle import Bundle, GraphInfo
from wavae.errors import WavaeError
from wavae.progress import Progress

from .bundle import OPSET, BundleStreamer, graph_opset
from .graph import downstream, first_downstream, producers

QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
ACTIVATION_TYPES = ("int8", "uint8")
SILENCE_RMS = 10 ** (-70 / 20)  # -70 dBFS: quieter calibration audio counts as silent
FEW_CALIBRATION_BLOCKS = 64  # below this the activation ranges rest on a few notes: say so

log = logging.getLogger("wavae.quantize.int8")
DEFAULT_MAX_BLOCKS = 400


class CalibrationError(WavaeError, ValueError):
    """Calibration audio is missing, too short or silent."""


def check_calibration_audio(audio: np.ndarray | list, block: int) -> list[np.ndarray]:
    """Normalise calibration audio to a list of mono float32 signals, each cut to
    whole blocks; refuse empty, too short or silent audio."""
    if isinstance(audio, np.ndarray):
        if audio.ndim == 1:
            clips = [audio]
        elif audio.ndim == 2:
            clips = list(audio)
        else:
            raise CalibrationError(f"calibration audio must be [samples] or [clips, samples], not shape {audio.shape}")
    else:
        clips = list(audio)
    out = []
    for c in clips:
        c = np.asarray(c, dtype=np.float32).reshape(-1)
        c = c[: c.size - c.size % block]
        if c.size and np.isfinite(c).all():
            out.append(c)
    total = sum(c.size for c in out)
    if total == 0:
        raise CalibrationError(
            f"no calibration audio: need at least one block ({block} samples) of real audio "
            f"(from the run's training data or --calibration DIR)"
        )
    rms = float(np.sqrt(sum(float(np.sum(c.astype(np.float64) ** 2)) for c in out) / total))
    if rms < SILENCE_RMS:
        raise CalibrationError(
            f"calibration audio is silent (RMS {20 * np.log10(max(rms, 1e-12)):.0f} dBFS); "
            f"give real audio from the training data with --calibration DIR"
        )
    blocks = total // block
    if blocks < FEW_CALIBRATION_BLOCKS:
        log.warning(
            "int8 calibration on only %d block(s) of audio: activation ranges measured on so little may clip "
            "or waste resolution on other input; give more real audio (at least %d blocks) with --calibration DIR",
            blocks, FEW_CALIBRATION_BLOCKS,
        )
    return out


def calibration_feeds(
    fp32: Bundle,
    clips: list[np.ndarray],
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Stream ``clips`` through the fp32 bundle's graphs and record every graph call's inputs.

    Each clip starts from zero state, as the device does.  If there is more audio
    than ``max_blocks`` blocks, clips are shortened evenly (each keeps its start,
    so the state builds up exactly as it would live).
    """
    streamer = BundleStreamer(fp32)
    block = fp32.block
    n_blocks = [c.size // block for c in clips]
    total = sum(n_blocks)
    if total > max_blocks:
        keep = max(1, max_blocks // len(clips))
        n_blocks = [min(n, keep) for n in n_blocks]
    enc_states, dec_states = fp32.graph("encoder").states, fp32.graph("decoder").states
    feeds: dict[str, list[dict[str, np.ndarray]]] = {"encoder": [], "decoder": []}
    bar = Progress(sum(n_blocks), "calibrating int8", "block", enabled=progress is not None)
    for clip, n in zip(clips, n_blocks):
        streamer.reset()
        for i in range(n):
            x = clip[i * block : (i + 1) * block].reshape(1, 1, block)
            enc_feed = {"audio": x.copy()}
            enc_feed.update({s.input: v.copy() for s, v in zip(enc_states, streamer.states["encoder"])})
            z, _, loud = streamer.encode(x)
            dec_feed = {"z": z.copy(), "loudness": loud.copy()}
            dec_feed.update({s.input: v.copy() for s, v in zip(dec_states, streamer.states["decoder"])})
            streamer.decode(z, loud)
            feeds["encoder"].append(enc_feed)
            feeds["decoder"].append(dec_feed)
            bar.update(1)
    bar.close()
    return feeds


def _reader(samples: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        """Hands recorded graph inputs (with real streaming state) to the calibrator."""

        def __init__(self, samples: list[dict[str, np.ndarray]]):
            self.samples = samples
            self.it: Iterator[dict[str, np.ndarray]] = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

        def rewind(self) -> None:
            self.it = iter(self.samples)

    return FeedReader(samples)


def frontend_nodes(proto) -> list[str]:
    """Names of the mel front-end's STFT Conv (the first Conv after ``audio``) and
    mel-filterbank MatMul (the first MatMul after that Conv)."""
    conv = first_downstream(proto, ["audio"], "Conv")
    if conv is None:
        return []
    mel = first_downstream(proto, list(conv.output), "MatMul")
    return [conv.name] + ([mel.name] if mel is not None else [])


def output_conv(proto) -> list[str]:
    """The decoder's last convolution (the one feeding Tanh): it writes the audio
    itself (or its PQMF sub-bands), and nothing after it averages its rounding away;
    plus a multi-band vocoder's PQMF synthesis: the first weighted node after Tanh
    (a ConvTranspose, or the plain Conv of its polyphase streaming form)."""
    writers = producers(proto)
    for n in proto.graph.node:
        if n.op_type == "Tanh":
            p = writers.get(n.input[0])
            if p is not None and p.op_type == "Conv":
                bank = next((d for d in downstream(proto, [n.output[0]])
                             if d.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")), None)
                return [p.name] + ([bank.name] if bank is not None else [])
    return []


def float_nodes(graph: str, proto, quantize_frontend: bool = False) -> list[str]:
    """Nodes of ``graph`` ("encoder"/"decoder") left in float (see the module docstring)."""
    if graph == "encoder":
        return [] if quantize_frontend else frontend_nodes(proto)
    return output_conv(proto)


def quantize_graph(
    fp32_path: Path,
    out_path: Path,
    samples: list[dict[str, np.ndarray]],
    exclude: list[str] | None = None,
    method: str = "minmax",
    symmetric_activations: bool = True,
) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {sorted(methods)}")
    extra = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    import logging

    class _NoPreprocessAdvice(logging.Filter):
        # our graphs are constant-folded and shape-inferred at export already
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    quiet = _NoPreprocessAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        _quantize_static(fp32_path, out_path, samples, exclude, methods[method], symmetric_activations, extra)
    finally:
        logging.getLogger().removeFilter(quiet)
    proto = onnx.load(str(out_path))
    if graph_opset(proto) != OPSET:
        # the quantiser bumps the opset only when it needs newer Q/DQ features; refuse that
        raise WavaeError(f"int8 {out_path.name} came out with opset {graph_opset(proto)}, not {OPSET}")
    onnx.checker.check_model(proto)
    check_state_float(proto)


def _quantize_static(fp32_path, out_path, samples, exclude, method, symmetric_activations, extra) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(fp32_path),
        str(out_path),
        _reader(samples),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OPS,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or [],
        calibrate_method=method,
        extra_options=extra,
    )


def check_state_float(proto) -> None:
    """Graph I/O is float32, no state input feeds a QuantizeLinear and no state
    output comes out of a DequantizeLinear."""
    import onnx

    writers = producers(proto)
    for vi in list(proto.graph.input) + list(proto.graph.output):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise WavaeError(f"graph I/O {vi.name} is not float32 after quantisation")
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and any(i.startswith("state_in_") for i in n.input):
            raise WavaeError(f"state input {n.input[0]} is quantised by {n.name}; streaming state must stay float")
    for o in proto.graph.output:
        p = writers.get(o.name)
        if o.name.startswith("state_out_") and p is not None and p.op_type == "DequantizeLinear":
            raise WavaeError(f"state output {o.name} is produced by {p.name} (quantised); streaming state must stay float")


def quantize_bundle_graphs(
    fp32: Bundle,
    out: dict[str, GraphInfo],
    clips: list[np.ndarray],
    *,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    method: str = "minmax",
    quantize_frontend: bool = False,
    activations: str = "int8",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write int8 versions of the ``fp32`` bundle's graphs to ``out``'s files (a bundle
    being written), calibrated on ``clips`` streamed through ``fp32``.  Returns the
    manifest's ``quantization`` section.  ``activations`` is one of ``ACTIVATION_TYPES``
    and ``clips`` passed ``check_calibration_audio`` (``export_bundle`` checks both)."""
    import onnx

    if progress:
        progress("streaming calibration audio through the fp32 graphs")
    feeds = calibration_feeds(fp32, clips, max_blocks, progress)
    excluded: dict[str, list[str]] = {}
    for g, info in out.items():
        if progress:
            progress(f"quantising {g} to int8")
        src = fp32.graph(g).file
        exclude = float_nodes(g, onnx.load(str(src)), quantize_frontend)
        excluded[g] = exclude
        quantize_graph(src, info.file, feeds[g], exclude=exclude, method=method,
                       symmetric_activations=activations == "int8")
    return {
        "scheme": "onnxruntime static QDQ",
        "weights": "int8 symmetric per-channel",
        "activations": "int8 symmetric per-tensor" if activations == "int8" else "uint8 asymmetric per-tensor",
        "op_types": QUANTIZED_OPS,
        "float_nodes": excluded,
        "calibration": {"method": method, "blocks": len(feeds["encoder"]), "clips": len(clips)},
        "state": "float32 (never quantised)",
    }
