"""TensorRT engines from a bundle, built on the Jetson itself (``wavae engine``).

    BUNDLE/engines/encoder.<precision>.plan
    BUNDLE/engines/decoder.<precision>.plan
    BUNDLE/engines/fingerprint.json   per precision: TensorRT version, GPU name,
                                      compute capability, sha256 of each source
                                      ONNX and of each plan

Engines are not portable between TensorRT versions or GPUs, so a plan whose
fingerprint differs from this machine's is rebuilt.

Safety: TensorRT is imported only after ``require_gpu`` has found a CUDA GPU
(calling it without one can crash the process), and only from the system: it
comes with JetPack (``python3-libnvinfer``), never from pip.

The TensorRT 10 API is used where it differs (explicit batch is the default,
``set_memory_pool_limit``, ``build_serialized_network``); TensorRT 8.5/8.6
(JetPack 5) get the explicit-batch flag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from wavae.errors import WavaeError

from wavae.fileio import atomic_write_bytes, atomic_write_json, file_sha256

from .bundle import verify_bundle_files

ENGINES = "engines"
FINGERPRINT = "fingerprint.json"
GPU_DEVICE_NODES = (
    "/dev/nvidia0",  # desktop / server GPUs
    "/dev/nvhost-ctrl-gpu",  # Jetson (JetPack 4/5)
    "/dev/nvhost-gpu",
    "/dev/nvgpu/igpu0/ctrl",  # Jetson Orin (JetPack 6)
)


class TensorRTError(WavaeError, RuntimeError):
    """No GPU, no TensorRT, or TensorRT refused the graph; the message lists why."""


# ----------------------------------------------------------------------------
# is there a GPU, and TensorRT?
# ----------------------------------------------------------------------------
def gpu_device_nodes() -> list[str]:
    return [p for p in GPU_DEVICE_NODES if os.path.exists(p)]


def require_gpu() -> None:
    """Refuse, before anything touches TensorRT or CUDA, when no CUDA GPU is visible."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        raise TensorRTError("no CUDA GPU: CUDA_VISIBLE_DEVICES hides every GPU; TensorRT engines need the Jetson's GPU")
    if not gpu_device_nodes():
        raise TensorRTError(
            "no CUDA GPU found on this machine (none of "
            + ", ".join(GPU_DEVICE_NODES)
            + " exists). TensorRT engines are built on the Jetson that runs them; "
            "copy the bundle there and run `wavae engine BUNDLE` on it. "
            "On a CPU device (Raspberry Pi) the bundle's ONNX runs in onnxruntime without engines."
        )


def import_tensorrt():
    """The system TensorRT (JetPack); call ``require_gpu`` first."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - imported only on a GPU machine
    except ImportError as e:
        raise TensorRTError(
            "TensorRT's Python bindings are not installed. TensorRT comes with JetPack on a Jetson "
            "(`sudo apt install nvidia-jetpack`, or python3-libnvinfer); it is never installed from pip. "
            "If wavae runs in a virtual environment, create it with --system-site-packages so it sees "
            f"JetPack's tensorrt module. ({e})"
        ) from e
    return trt


def gpu_info() -> dict[str, str]:
    """GPU name and compute capability, from whichever source this machine has."""
    try:  # cuda-python (JetPack 6 ships it)
        from cuda import cudart  # noqa: PLC0415

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"name": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}
    except ImportError:
        pass
    try:
        import pycuda.driver as drv  # noqa: PLC0415

        drv.init()
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
        if r.returncode == 0 and r.stdout.strip():
            name, _, cc = r.stdout.strip().splitlines()[0].partition(",")
            return {"name": name.strip(), "compute_capability": cc.strip()}
    model = Path("/proc/device-tree/model")
    if model.is_file():  # a Jetson without cuda-python: the board names the GPU
        return {"name": model.read_text(errors="replace").strip("\x00\n "), "compute_capability": "unknown"}
    return {"name": "unknown", "compute_capability": "unknown"}


# ----------------------------------------------------------------------------
# fingerprint
# ----------------------------------------------------------------------------
def fingerprint(trt_version: str, gpu: dict[str, str], precision: str, onnx_sha: dict[str, str]) -> dict[str, Any]:
    return {
        "tensorrt": trt_version,
        "gpu": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
        "precision": precision,
        "onnx_sha256": dict(sorted(onnx_sha.items())),
    }


def read_fingerprint(engines: Path) -> dict[str, Any] | None:
    path = engines / FINGERPRINT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def plan_name(graph: str, precision: str) -> str:
    return f"{graph}.{precision}.plan"


def engines_up_to_date(bundle: Path, want: dict[str, Any], graphs: list[str]) -> bool:
    """Plans for ``want["precision"]`` exist, are intact, and were built under ``want``."""
    engines = Path(bundle) / ENGINES
    entry = (read_fingerprint(engines) or {}).get(want["precision"])
    if not isinstance(entry, dict) or entry.get("fingerprint") != want:
        return False
    for g in graphs:
        plan = engines / plan_name(g, want["precision"])
        if not plan.is_file() or file_sha256(plan) != entry.get("plan_sha256", {}).get(g):
            return False
    return True


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


def build_engine(trt, onnx_path: Path, precision: str, workspace_mb: int = 1024) -> bytes:
    """Parse one ONNX graph and build a serialized engine; errors listed per ONNX node."""
    import onnx

    from .trt_ops import prepare_for_tensorrt

    proto = prepare_for_tensorrt(onnx.load(str(onnx_path)))
    node_names = [n.name for n in proto.graph.node]
    logger = _logger(trt)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        lines = parser_errors(parser, node_names) or logger.messages
        raise TensorRTError(f"TensorRT could not parse {onnx_path.name}:\n  " + "\n  ".join(lines))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers may fall back to fp16, not fp32
    if precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: no calibrator
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
) -> dict[str, Any]:
    """Build (or keep, when the fingerprint matches) the engines of ``bundle``.

    Returns ``{"rebuilt": bool, "fingerprint": {...}, "plans": {graph: path}}``.
    """
    from .trt_ops import check_bundle_for_tensorrt

    bundle = Path(bundle)
    manifest = verify_bundle_files(bundle)
    precision = engine_precision(manifest["precision"], fp16, int8)
    problems = check_bundle_for_tensorrt(bundle)
    if problems:
        raise TensorRTError("the bundle's graphs are not TensorRT-ready:\n  " + "\n  ".join(problems))

    require_gpu()  # before TensorRT is imported: without a GPU it can crash the process
    trt = import_tensorrt()
    graphs = list(manifest["graphs"])
    # verify_bundle_files just checked every file against these
    onnx_sha = {g: manifest["files"][manifest["graphs"][g]["file"]]["sha256"] for g in graphs}
    want = fingerprint(trt.__version__, gpu_info(), precision, onnx_sha)
    engines = bundle / ENGINES
    plans = {g: str(engines / plan_name(g, precision)) for g in graphs}
    if not force and engines_up_to_date(bundle, want, graphs):
        return {"rebuilt": False, "fingerprint": want, "plans": plans}

    engines.mkdir(exist_ok=True)
    for g in graphs:
        if progress:
            progress(f"building {g} engine ({precision})")
        plan = build_engine(trt, bundle / manifest["graphs"][g]["file"], precision, workspace_mb)
        atomic_write_bytes(plans[g], plan)
    record = read_fingerprint(engines) or {}
    record[precision] = {
        "fingerprint": want,
        "plans": {g: Path(p).name for g, p in plans.items()},
        "plan_sha256": {g: file_sha256(Path(p)) for g, p in plans.items()},
    }
    atomic_write_json(engines / FINGERPRINT, record)
    return {"rebuilt": True, "fingerprint": want, "plans": plans}
