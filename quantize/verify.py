"""Compare a bundle streaming in onnxruntime with the torch streaming reference.

    verify(bundle, model, audio) -> {max_abs_diff, snr_db, mel_distance, alignment, macs, bytes, ...}

* Both sides stream from zero state, block by block, so an exact bundle is
  sample-aligned with the reference; the lag is still searched by
  cross-correlation within +-latency and reported, so a graph that shifted its
  output would show up as a non-zero lag rather than as noise.
* ``mel_distance`` is the mean absolute difference of the model's own
  (un-normalised) log-mel of the two outputs, in natural-log units.
* MACs are counted from the ONNX graphs (what the device actually runs):
  Conv, ConvTranspose, MatMul, Gemm and Einsum, per graph call and per second of
  audio.  Quantize/Dequantize, activations and elementwise ops are not counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from wavae.device.bundle import Bundle, BundleError, load_bundle

from .bundle import BundleStreamer, verify_bundle_files
from .export import model_digest

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


# ----------------------------------------------------------------------------
# MACs from an ONNX graph
# ----------------------------------------------------------------------------
def _shapes(proto) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def onnx_macs(path: Path) -> dict[str, int]:
    """Multiply-accumulates of one call of an ONNX graph, by op type and in total."""
    import onnx

    proto = onnx.load(str(path))
    shapes = _shapes(proto)
    # weights of an int8 graph come out of a DequantizeLinear; its shape is the initializer's
    for n in proto.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in shapes:
            shapes.setdefault(n.output[0], shapes[n.input[0]])
    by_op: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type not in COUNTED_OPS:
            continue
        try:
            if n.op_type == "Conv":
                w = shapes[n.input[1]]  # [out, in/groups, k...]
                y = shapes[n.output[0]]
                macs = math.prod(y) * math.prod(w[1:])
            elif n.op_type == "ConvTranspose":
                w = shapes[n.input[1]]  # [in, out/groups, k...]
                x = shapes[n.input[0]]
                macs = math.prod(x) * math.prod(w[1:])
            elif n.op_type in ("MatMul", "Gemm"):
                a = shapes[n.input[0]]
                y = shapes[n.output[0]]
                k = a[-1] if not (n.op_type == "Gemm" and _attr(n, "transA", 0)) else a[0]
                macs = math.prod(y) * k
            else:  # Einsum: product of the sizes of every index
                eq = _attr(n, "equation", b"")
                eq = eq.decode() if isinstance(eq, bytes) else eq
                lhs = eq.replace(" ", "").split("->")[0].split(",")
                sizes: dict[str, int] = {}
                for term, inp in zip(lhs, n.input):
                    for letter, size in zip(term, shapes[inp]):
                        sizes[letter] = size
                macs = math.prod(sizes.values())
        except KeyError as e:
            raise BundleError(f"{Path(path).name}: no static shape for {e} of node {n.name}; cannot count MACs") from e
        by_op[n.op_type] = by_op.get(n.op_type, 0) + int(macs)
    by_op["total"] = sum(by_op.values())
    return by_op


def bundle_macs(bundle: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """MACs per graph call and per second of audio of a bundle."""
    bundle = Path(bundle)
    manifest = manifest or verify_bundle_files(bundle)
    calls_per_second = manifest["sample_rate"] / manifest["block"]
    out: dict[str, Any] = {}
    total = 0
    for g, spec in manifest["graphs"].items():
        m = onnx_macs(bundle / spec["file"])
        out[g] = {"per_call": m["total"], "per_second": int(round(m["total"] * calls_per_second)), "by_op": m}
        total += m["total"]
    out["per_second"] = int(round(total * calls_per_second))
    return out


# ----------------------------------------------------------------------------
# signal comparison
# ----------------------------------------------------------------------------
def best_lag(ref: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """The lag L in [-max_lag, max_lag] maximising sum(ref[t] * y[t + L])."""
    ref = ref.astype(np.float64)
    y = y.astype(np.float64)
    best, best_val = 0, -np.inf
    n = len(ref)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            v = float(np.dot(ref[: n - lag], y[lag:]))
        else:
            v = float(np.dot(ref[-lag:], y[: n + lag]))
        if v > best_val + 1e-12 * max(1.0, abs(best_val)):
            best, best_val = lag, v
    return best


def align(ref: np.ndarray, y: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    if lag >= 0:
        return ref[: len(ref) - lag], y[lag:]
    return ref[-lag:], y[: len(y) + lag]


def snr_db(ref: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.sum((y.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * math.log10(signal / noise)


def mel_distance(frontend, ref: np.ndarray, y: np.ndarray) -> float:
    """Mean |log-mel(ref) - log-mel(y)| with the model's own front-end (natural log)."""
    import torch

    hop = frontend.hop
    n = (min(len(ref), len(y)) // hop) * hop
    if n == 0:
        return float("nan")
    with torch.no_grad():
        a = frontend.raw_log_mel(torch.from_numpy(np.ascontiguousarray(ref[:n], np.float32)).view(1, 1, -1))
        b = frontend.raw_log_mel(torch.from_numpy(np.ascontiguousarray(y[:n], np.float32)).view(1, 1, -1))
    return float((a - b).abs().mean())


def compare(ref: np.ndarray, y: np.ndarray, max_lag: int, frontend=None) -> dict[str, Any]:
    lag = best_lag(ref, y, max_lag) if max_lag > 0 else 0
    r, o = align(ref, y, lag)
    out = {
        "alignment_samples": lag,
        "max_abs_diff": float(np.max(np.abs(r.astype(np.float64) - o))) if len(r) else float("nan"),
        "snr_db": snr_db(r, o),
    }
    if frontend is not None:
        out["mel_distance"] = mel_distance(frontend, r, o)
    return out


def torch_reference(model, audio: np.ndarray, block: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).view(1, 1, -1)
        return model.stream(x, block).view(-1).numpy()


def pad_to_block(audio: np.ndarray, block: int) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    rest = (-audio.size) % block
    return np.concatenate([audio, np.zeros(rest, np.float32)]) if rest else audio


def check_matches(manifest: dict[str, Any], model) -> None:
    """Refuse to compare a bundle with a model it was not exported from."""
    source = manifest.get("source") or {}
    want = source.get("model_sha256")
    if want is not None and want != model_digest(model):
        raise BundleError(
            f"the bundle was not exported from this run's model (it comes from {source.get('run')!r} at "
            f"{source.get('vae_steps')} VAE / {source.get('vocoder_steps')} vocoder steps, and the weights "
            f"differ); verify a bundle against the run it was exported from, or re-export it"
        )
    for key, value in (("sample_rate", model.sample_rate), ("frame", model.frame), ("latent_dim", model.latent_dim)):
        if manifest.get(key) != value:
            raise BundleError(
                f"the bundle's {key} is {manifest.get(key)} but the run's model has {value}; "
                f"verify a bundle against the run it was exported from"
            )


def verify(bundle: Path | Bundle, model, audio: np.ndarray, threads: int = 1) -> dict[str, Any]:
    """Stream ``audio`` (mono, model rate) through the bundle (a path, checked here, or a
    ``Bundle`` already checked by ``load_bundle``) and through ``model``."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    manifest = bundle.manifest
    check_matches(manifest, model)
    block = bundle.block
    audio = pad_to_block(audio, block)
    if audio.size == 0:
        raise BundleError("the input holds no audio")
    ref = torch_reference(model.eval(), audio, block)
    y = BundleStreamer(bundle, threads=threads).stream(audio)
    result: dict[str, Any] = {
        "bundle": str(bundle.path),
        "precision": manifest["precision"],
        "sample_rate": manifest["sample_rate"],
        "block": block,
        "latency_samples": manifest.get("latency_samples"),
        "seconds": audio.size / manifest["sample_rate"],
    }
    result.update(compare(ref, y, int(manifest.get("latency_samples") or 0), model.frontend))
    result["macs"] = bundle_macs(bundle.path, manifest)
    files = {k: v["bytes"] for k, v in manifest["files"].items()}
    result["bytes"] = {**files, "total": sum(files.values())}
    return result
