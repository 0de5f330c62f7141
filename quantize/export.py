"""Export a trained model to a device bundle (docs/bundle.md).

    model --fold (weight norm out, batch norm in)--> EncoderGraph / DecoderGraph
          --torch.onnx.export, opset 17, static shapes--> encoder.onnx, decoder.onnx
          --fp32: rewritten for speed (wavae.quantize.lower)
          --or int8 (Q/DQ) or fp16 conversion--> manifest.json --rename--> BUNDLE/

Each graph is one streaming step with its state as explicit inputs and outputs,
named and shaped by the bundle format's ``graph_contract`` (wavae.device.bundle):

    encoder: (audio, state_in_0..) -> (z_mean, z_std, loudness, state_out_0..)
    decoder: (z, loudness, state_in_0..) -> (audio, state_out_0..)

fp16 and int8 graphs are converted from a complete fp32 bundle, staged inside
the temporary folder and read back with the device's reader (int8 calibrates by
streaming it on the device's onnxruntime backend).  That staged bundle keeps
every Conv as exported: the quantisers pick the layers they leave in float (the
STFT, the output conv) by their Conv nodes.

The exporter is torch's TorchScript-based one (``dynamo=False``).  torch 2.13
defaults to the torch.export-based exporter, but that needs ``onnxscript`` and
emits opset 18 and up, converting down only on request; the TorchScript exporter
writes opset 17 directly, and the opset is asserted after export either way.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from wavae.blocks import check_block
from wavae.device.bundle import (
    FORMAT,
    FORMAT_VERSION,
    GRAPHS,
    MANIFEST,
    PRECISIONS,
    Bundle,
    GraphInfo,
    graph_contract,
    load_bundle,
    model_card,
)
from wavae.errors import WavaeError
from wavae.fileio import atomic_path, atomic_write_json, file_sha256, replace_dir, temp_dir_beside
from wavae.train.config import Config
from wavae.train.loudness import DB_FLOOR
from wavae.train.model import Wavae

from .bundle import OPSET, graph_opset
from .fold import fold_model
from .fp16 import convert_bundle_graphs
from .int8 import ACTIVATION_TYPES, check_calibration_audio, quantize_bundle_graphs
from .lower import lower_graph


class ExportError(WavaeError, ValueError):
    """The model, block, precision or destination cannot be exported as asked."""


# ----------------------------------------------------------------------------
# graph wrappers: flat tensors in, flat tensors out
# ----------------------------------------------------------------------------
class EncoderGraph(nn.Module):
    """One encoder step: (audio, *states) -> (z_mean, z_std, loudness, *states_out)."""

    def __init__(self, model: Wavae):
        super().__init__()
        self.model = model

    def forward(self, audio: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        (z, std, loud), out = self.model.encode_step(audio, list(states))
        return (z, std, loud, *out)


class DecoderGraph(nn.Module):
    """One decoder + vocoder step: (z, loudness, *states) -> (audio, *states_out)."""

    def __init__(self, model: Wavae):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, loudness: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        audio, out = self.model.decode_step(z, loudness, list(states))
        return (audio, *out)


def bundle_graphs(model: Wavae, block: int, root: Path) -> dict[str, GraphInfo]:
    """The model's two graphs under ``root``, as the bundle format defines them (``graph_contract``)."""
    states = {"encoder": model.encoder_state_shapes(1), "decoder": model.decoder_state_shapes(1)}
    return graph_contract(block, model.frame, model.latent_dim, states, root)


# ----------------------------------------------------------------------------
# ONNX export of one graph
# ----------------------------------------------------------------------------
def _export_onnx(
    module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str], path: Path, lower: bool
) -> None:

    with warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (see the module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            do_constant_folding=True,
        )
    _fold_constants(path)
    # record every intermediate tensor's static shape (the TensorRT checker reads them)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    if lower:
        lower_graph(proto)
    onnx.save(proto, str(path))
    opset = graph_opset(proto)
    if opset != OPSET:
        raise ExportError(f"{path.name} was written with opset {opset}, not {OPSET}; the exporter misbehaved")
    onnx.checker.check_model(proto, full_check=True)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != inputs or names_out != outputs:
        raise ExportError(f"{path.name}: graph I/O {names_in} -> {names_out} is not the expected {inputs} -> {outputs}")
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise ExportError(f"{path.name}: {vi.name} has a dynamic shape; bundles need static shapes")


def _fold_constants(path: Path) -> None:
    """Constant-fold with onnxruntime's basic (standard-op only) graph optimisations.

    The TorchScript exporter leaves some buffer arithmetic (e.g. ``pca_rotation**2``)
    in the graph; the basic level folds it and removes dead nodes without
    introducing any contrib op, so the result is plain opset-17 ONNX.
    """

    before = onnx.load(str(path))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    tmp = path.with_suffix(".opt.onnx")
    so.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    after = onnx.load(str(tmp))
    tmp.unlink()
    domains = {n.domain for n in after.graph.node} - {"", "ai.onnx"}
    if domains or graph_opset(after) != OPSET:
        return  # keep the unoptimised graph rather than one that leaves the standard
    after.producer_name = before.producer_name
    after.producer_version = before.producer_version
    onnx.save(after, str(path))


def export_graphs(
    folded: Wavae, block: int, out_dir: Path, progress: Callable[[str], None] | None = None, lower: bool = True
) -> dict[str, GraphInfo]:
    """Write encoder.onnx and decoder.onnx of an already folded model into ``out_dir``;
    return their ``GraphInfo`` (names and shapes from the bundle's graph contract).
    ``lower``: the rewrites of ``wavae.quantize.lower`` (narrow convs as MatMuls, summed
    pointwise convs as one)."""
    graphs = bundle_graphs(folded, block, out_dir)
    enc, dec = graphs["encoder"], graphs["decoder"]
    gen = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(enc.inputs[0].shape, generator=gen)
    z = torch.zeros(dec.inputs[0].shape)
    loud = torch.full(dec.inputs[1].shape, 0.5)
    with torch.no_grad():
        for graph, module, args in (
            (enc, EncoderGraph(folded), (audio,)),
            (dec, DecoderGraph(folded), (z, loud)),
        ):
            if progress:
                progress(f"exporting {graph.name}")
            states = tuple(torch.zeros(s.shape) for s in graph.states)
            _export_onnx(module.eval(), args + states, graph.input_names, graph.output_names, graph.file, lower)
    return graphs


# ----------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------
def check_fold(model: Wavae, folded: Wavae, block: int, blocks: int = 3, tol: float = 1e-3) -> float:
    """Stream a little noise through both models; raise if folding changed the output."""
    gen = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(1, 1, block * blocks, generator=gen)
    with torch.no_grad():
        diff = float((model.stream(x, block) - folded.stream(x, block)).abs().max())
    if not diff <= tol:
        raise ExportError(f"folding weight norm / batch norm changed the model's output by {diff:.3g} (> {tol})")
    return diff


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"unsupported precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = r.stdout.strip()
    return sha if r.returncode == 0 and sha else None


# ----------------------------------------------------------------------------
# the bundle
# ----------------------------------------------------------------------------
def export_steps(precision: str) -> int:
    """How many times ``export_bundle`` reports ``progress`` for ``precision``: once per
    graph exported, once per graph converted (fp16) or quantised (int8), and once
    for int8's calibration pass (``precision`` as ``export_bundle`` accepts it)."""
    return len(GRAPHS) * (1 if precision == "fp32" else 2) + (precision == "int8")


def export_bundle(
    model: Wavae,
    cfg: Config,
    out: Path,
    *,
    block: int,
    precision: str = "fp32",
    calibration: np.ndarray | list[np.ndarray] | None = None,
    source: dict | None = None,
    force: bool = False,
    int8_activations: str = "int8",
    lower: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Export ``model`` to a bundle directory ``out`` (docs/bundle.md); returns ``out``.

    ``calibration`` (int8 only) is real audio at the model's sample rate: one
    signal ``[T]``, several ``[n, T]`` or a list of signals.  ``source`` may hold
    ``run`` and any other provenance for the manifest.  An existing ``out`` is
    replaced only with ``force``, and only once the new bundle is complete.
    ``int8_activations`` is "int8" (symmetric: the Pi's ARM CPU and TensorRT) or
    "uint8" (the form onnxruntime fuses on x86; see wavae.quantize.int8).
    ``lower`` (fp32 only) applies the rewrites of ``wavae.quantize.lower`` (narrow
    convs as MatMuls, summed pointwise convs as one); False keeps the graphs as
    exported, to compare the two on a board.
    ``progress`` is called ``export_steps(precision)`` times, with what comes next.

    Every input is checked here, before anything is written; the CLI only maps
    its arguments to this function.
    """
    out = Path(out)
    check_precision(precision)
    check_block(block, cfg.frame, cfg.frontend.sample_rate)
    if model.frame != cfg.frame or model.sample_rate != cfg.frontend.sample_rate:
        raise ExportError("the model does not match its config (frame or sample rate differ)")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it (it is replaced only once the new bundle is complete)")
    if out.exists() and not (out / MANIFEST).is_file():
        raise ExportError(f"{out} exists and is not a bundle (no {MANIFEST}); refusing to replace it even with --force")
    if precision == "int8":
        if int8_activations not in ACTIVATION_TYPES:
            raise ExportError(
                f"unsupported int8 activations {int8_activations!r}; choose one of {', '.join(ACTIVATION_TYPES)}"
            )
        if calibration is None:
            raise ExportError("int8 export needs calibration audio (real audio from the training data or --calibration DIR)")
        calibration = check_calibration_audio(calibration, block)
    elif calibration is not None:
        calibration = None  # only int8 calibrates

    model = model.eval()
    source = {**(source or {}), "model_sha256": model_digest(model)}  # `wavae verify` checks it against its run
    folded = fold_model(model)
    fold_diff = check_fold(model, folded, block)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)  # and a killed export's leftovers of the same target are removed
    try:
        quant_info: dict[str, Any] | None = None
        lower = lower and precision == "fp32"
        if precision == "fp32":
            graphs = export_graphs(folded, block, tmp, progress, lower=lower)
        else:
            # fp16 and int8 graphs are made from an fp32 bundle, read back as the device reads it
            fp32 = export_fp32_bundle(folded, cfg, block, tmp / ".fp32", source, progress)
            graphs = bundle_graphs(folded, block, tmp)
            if precision == "int8":
                quant_info = quantize_bundle_graphs(
                    fp32, graphs, calibration, activations=int8_activations, progress=progress
                )
            else:
                quant_info = convert_bundle_graphs(fp32, graphs, progress=progress)
            shutil.rmtree(fp32.path)
        manifest = build_manifest(folded, cfg, block, precision, graphs, tmp, source, quant_info)
        manifest["export"] = {"fold_max_abs_diff": fold_diff, "lowered": lower}
        atomic_write_json(tmp / MANIFEST, manifest)
        _fsync_dir(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_fp32_bundle(
    folded: Wavae,
    cfg: Config,
    block: int,
    out_dir: Path,
    source: dict | None,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Write an fp32 bundle of an already folded model into the new folder ``out_dir``,
    every Conv kept as exported (the base of the int8 and fp16 graphs), and read it
    back with the device's reader (sizes, names and shapes checked; the files were
    just written, so no sha256 pass)."""
    out_dir.mkdir()
    graphs = export_graphs(folded, block, out_dir, progress, lower=False)
    atomic_write_json(out_dir / MANIFEST, build_manifest(folded, cfg, block, "fp32", graphs, out_dir, source, None))
    return load_bundle(out_dir, verify=False)


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's weights and buffers (names, dtypes, shapes, values): which run a bundle came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{a.dtype}:{tuple(a.shape)};".encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()


def stamp_model_card(path: Path, card: dict[str, str]) -> None:
    """Write ``card`` into the ONNX file's metadata (replacing an older card), atomically."""

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key not in card]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in card.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def build_manifest(
    model: Wavae,
    cfg: Config,
    block: int,
    precision: str,
    graphs: dict[str, GraphInfo],
    bundle_dir: Path,
    source: dict | None,
    quant_info: dict | None,
) -> dict[str, Any]:
    specs = {g: info.manifest_entry(bundle_dir) for g, info in graphs.items()}
    card = model_card({"sample_rate": model.sample_rate, "block": block, "frame": model.frame,
                       "latent_dim": model.latent_dim, "latency_samples": model.latency})
    for spec in specs.values():  # before the checksums: the card is part of what they cover
        stamp_model_card(bundle_dir / spec["file"], card)
    files = {}
    for spec in specs.values():
        p = bundle_dir / spec["file"]
        files[spec["file"]] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    scale = model.pca_scale.detach().double().cpu().numpy()
    src = {"run": None, "preset": cfg.name, "git_commit": git_commit()}
    src.update(source or {})
    src["created"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sample_rate": int(model.sample_rate),
        "block": int(block),
        "frame": int(model.frame),
        "latent_dim": int(model.latent_dim),
        "latency_samples": int(model.latency),
        "precision": precision,
        "opset": OPSET,
        "graphs": specs,
        "loudness": {"frame": int(model.frame), "db_floor": float(DB_FLOOR), **model.flattener.params()},
        # pca_scale is the per-dimension std of the training latents in PCA order
        "pca": {"explained_variance": [float(v) for v in scale**2]},
        # streaming state is always float32, also in int8/fp16 bundles: quantising
        # it would let errors accumulate from block to block
        "state_dtype": "float32",
        "files": files,
        "source": src,
    }
    if quant_info:
        manifest["quantization"] = quant_info
    return manifest


def _fsync_dir(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
