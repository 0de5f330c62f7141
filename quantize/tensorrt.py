"""TensorRT engines from a bundle, built on the Jetson itself (``wavae engine``).

    BUNDLE/engines/encoder.<precision>.plan
    BUNDLE/engines/decoder.<precision>.plan
    BUNDLE/engines/fingerprint.json   per precision: TensorRT version, GPU name,
                                      compute capability, sha256 of each source
                                      ONNX and of each plan

Engines are not portable between TensorRT versions or GPUs, so a plan whose
fingerprint differs from this machine's is rebuilt.  The fingerprint, its
comparison and the plan layout are the device's (``wavae.device.backends.tensorrt``):
the backend refuses at run time exactly the plans this module would rebuild.

Safety: TensorRT is imported only after ``require_gpu`` has found a CUDA GPU
(calling it without one can crash the process), and only from the system: it
comes with JetPack (``python3-libnvinfer``), never from pip.

Precision and typing (``build_settings``):

* fp32: no reduced precision, and TF32 cleared (TensorRT enables it by
  default; Orin's tensor cores would then round fp32 matmuls and convolutions
  to a 10-bit mantissa, and fp32 plans would no longer match onnxruntime).
* an fp16 bundle (mixed-precision ONNX whose front-end is fp32): a strongly
  typed network where TensorRT has them (9 and later), so the ONNX's types are
  kept and the mel front-end stays fp32.  TensorRT 8.6 builds it weakly typed
  with the FP16 flag.
* ``--fp16`` on an fp32 bundle, and int8 (explicit Q/DQ): weakly typed, with
  the FP16 (and INT8) builder flags: TensorRT picks per layer.
* TensorRT 11 removes the precision flags and builds every network strongly
  typed: precision then comes from the ONNX alone, so fp32, fp16 and int8
  bundles build as they are and ``--fp16`` on an fp32 bundle is refused.

The TensorRT 10 API is used where it differs (explicit batch is the default,
``set_memory_pool_limit``, ``build_serialized_network``); TensorRT 8.5/8.6 get
the explicit-batch flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from wavae.device.backends import BackendError
from wavae.device.backends.cuda import gpu_info, gpu_present
from wavae.device.backends.tensorrt import (
    fingerprint,
    fingerprint_path,
    import_tensorrt,
    onnx_sha256,
    plan_problems,
    read_fingerprints,
)
from wavae.device.bundle import BundleError, load_bundle
from wavae.errors import WavaeError
from wavae.fileio import atomic_write_bytes, atomic_write_json, file_sha256


class TensorRTError(WavaeError, RuntimeError):
    """No GPU, no TensorRT, or TensorRT refused the graph; the message lists why."""


# ----------------------------------------------------------------------------
# is there a GPU?
# ----------------------------------------------------------------------------
def require_gpu() -> None:
    """Refuse, before anything touches TensorRT or CUDA, when no CUDA GPU is visible."""
    ok, why = gpu_present()
    if not ok:
        raise TensorRTError(
            f"no CUDA GPU on this machine: {why}. TensorRT engines are built on the Jetson that runs them; "
            "copy the bundle there and run `wavae engine BUNDLE` on it. "
            "On a CPU device (Raspberry Pi) the bundle's ONNX runs in onnxruntime without engines."
        )


# ----------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------
def _logger(trt):
    class Collecting(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg):  # noqa: D401 - TensorRT callback
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append(f"{severity.name}: {msg}")

    return Collecting()


def parser_errors(parser, onnx_node_names: list[str]) -> list[str]:
    """One line per parser error, naming the ONNX node (index, name, operator)."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        idx = err.node()
        name = err.node_name() if hasattr(err, "node_name") else ""
        if not name and 0 <= idx < len(onnx_node_names):
            name = onnx_node_names[idx]
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f"node {idx}" + (f" {name}" if name else "") + (f" ({op})" if op else "") if idx >= 0 else "graph"
        out.append(f"{where}: {err.desc()} [{err.code()}]")
    return out


def build_settings(trt, bundle_precision: str, precision: str) -> dict[str, Any]:
    """How to build ``precision`` plans from a ``bundle_precision`` bundle with this TensorRT
    (see the module docstring): network creation flags, builder flags to set and to clear."""
    major = int(str(trt.__version__).split(".")[0])
    creation = trt.NetworkDefinitionCreationFlag
    network_flags = 0 if major >= 10 else 1 << int(creation.EXPLICIT_BATCH)
    clear = ["TF32"] if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32") else []
    onnx_typed = precision == bundle_precision  # the ONNX itself carries this precision
    if not hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 11+: every network is strongly typed
        if not onnx_typed:
            raise TensorRTError(
                f"TensorRT {trt.__version__} builds only strongly typed networks, whose precision is the ONNX's: "
                f"export an fp16 bundle (`wavae export RUN --precision fp16 --out BUNDLE`) and build it without --fp16"
            )
        return {"network_flags": network_flags, "set": [], "clear": clear, "strongly_typed": True}
    if precision == "fp16" and onnx_typed and hasattr(creation, "STRONGLY_TYPED"):
        network_flags |= 1 << int(creation.STRONGLY_TYPED)  # keeps the bundle's fp32 front-end in fp32
        return {"network_flags": network_flags, "set": [], "clear": clear, "strongly_typed": True}
    set_ = {"fp32": [], "fp16": ["FP16"], "int8": ["FP16", "INT8"]}[precision]  # int8 layers may fall back to fp16
    return {"network_flags": network_flags, "set": set_, "clear": clear, "strongly_typed": False}


def build_engine(trt, onnx_path: Path, settings: dict[str, Any], workspace_mb: int = 1024) -> bytes:
    """Parse one ONNX graph and build a serialized engine; errors listed per ONNX node."""
    import onnx

    from .trt_ops import prepare_for_tensorrt

    proto = prepare_for_tensorrt(onnx.load(str(onnx_path)))
    node_names = [n.name for n in proto.graph.node]
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(settings["network_flags"])
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        lines = parser_errors(parser, node_names) or logger.messages
        raise TensorRTError(f"TensorRT could not parse {onnx_path.name}:\n  " + "\n  ".join(lines))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in settings["set"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))  # explicit Q/DQ for INT8: no calibrator
    for flag in settings["clear"]:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(
            f"TensorRT could not build an engine for {onnx_path.name}:\n  " + "\n  ".join(logger.messages or ["(no message)"])
        )
    return bytes(plan)


def engine_precision(bundle_precision: str, fp16: bool, int8: bool) -> str:
    if int8:
        if bundle_precision != "int8":
            raise TensorRTError(
                f"--int8 needs an int8 bundle (explicit Q/DQ); this one is {bundle_precision}. "
                f"Re-export it with `wavae export RUN --precision int8 --out BUNDLE`"
            )
        return "int8"
    if fp16:
        if bundle_precision == "int8":
            raise TensorRTError("this bundle is int8 (Q/DQ); build it with --int8, or export an fp32/fp16 bundle for --fp16")
        return "fp16"
    return bundle_precision


def build_bundle_engines(
    bundle: Path,
    *,
    fp16: bool = False,
    int8: bool = False,
    force: bool = False,
    workspace_mb: int = 1024,
    progress: Callable[[str], None] | None = None,
    tensorrt=None,
    gpu: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build (or keep, when the fingerprint matches and the plans are intact) the engines of ``bundle``.

    ``tensorrt`` (the module) and ``gpu`` (``gpu_info()``) are found on this machine
    when not given; the tests pass fakes.  Returns
    ``{"rebuilt": bool, "fingerprint": {...}, "plans": {graph: path}}``.
    """
    from .trt_ops import check_bundle_for_tensorrt

    b = load_bundle(bundle)
    precision = engine_precision(b.precision, fp16, int8)
    problems = check_bundle_for_tensorrt(b.path)
    if problems:
        raise TensorRTError("the bundle's graphs are not TensorRT-ready:\n  " + "\n  ".join(problems))

    if tensorrt is None:
        require_gpu()  # before TensorRT is imported: without a GPU it can crash the process
        try:
            tensorrt = import_tensorrt()
        except BackendError as e:
            raise TensorRTError(str(e)) from e
    trt = tensorrt
    settings = build_settings(trt, b.precision, precision)
    want = fingerprint(trt.__version__, gpu_info() if gpu is None else gpu, precision, onnx_sha256(b))
    plans = {g: b.engine_file(g, precision) for g in b.graphs}
    try:
        record = read_fingerprints(b)
    except BundleError:
        record = {}  # unreadable: everything is rebuilt and the record rewritten
    if not force and not plan_problems(b, precision, want, record):
        return {"rebuilt": False, "fingerprint": want, "plans": {g: str(p) for g, p in plans.items()}}

    fingerprint_path(b).parent.mkdir(exist_ok=True)
    for g, spec in b.manifest["graphs"].items():
        if progress:
            progress(f"building {g} engine ({precision})")
        atomic_write_bytes(plans[g], build_engine(trt, b.path / spec["file"], settings, workspace_mb))
    record[precision] = {
        "fingerprint": want,
        "strongly_typed": settings["strongly_typed"],
        "plans": {g: p.name for g, p in plans.items()},
        "plan_sha256": {g: file_sha256(p) for g, p in plans.items()},
    }
    atomic_write_json(fingerprint_path(b), record)
    return {"rebuilt": True, "fingerprint": want, "plans": {g: str(p) for g, p in plans.items()}}

