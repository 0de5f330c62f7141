"""The TensorRT backend: the Jetson's GPU, running plans built by ``wavae engine``.

Nothing here touches TensorRT or a CUDA binding until ``gpu_present()`` has found
an NVIDIA GPU: a TensorRT runtime without one can crash the process while
deserialising a plan.  No driver or no device gives a ``BackendError`` that says
to use ``--backend onnxruntime``.

Plans.  ``wavae engine BUNDLE`` writes ``engines/<graph>.<precision>.plan`` and
``engines/fingerprint.json``: per precision, the TensorRT version, GPU, compute
capability and ONNX sha256 the plans were built under, and each plan's sha256.
Plans are not portable between TensorRT versions or GPUs, so ``find_plans``
runs only plans whose fingerprint is this machine's and whose bytes are intact,
and ``check_engine_io`` compares each plan's tensors (name, direction, shape,
dtype) with the manifest before a buffer is bound: the buffers are sized from
the manifest, and a plan for another block size would read and write past them.
Both name the command that rebuilds the plans (``engine_command``).

Memory.  On a Jetson (integrated GPU that maps host memory) every input and
output lives in page-locked, device-mapped host memory: the CPU writes the input
block and reads the output block where the GPU reads and writes them (zero
copy).  On a discrete GPU the host buffers are page-locked and copied
asynchronously on the step's stream.  State never leaves the GPU: two
device-side sets alternate, the ``state_out_k`` of one step being the
``state_in_k`` of the next.

CUDA graphs.  One step is captured per state parity (two graphs per TensorRT
graph).  ``cuda_graph=None`` (the default) times both ways at start-up and
keeps the faster; ``True``/``False`` force it.  A capture that fails is ended
and its partial graph destroyed (``CudaBinding.capture``); with the default the
backend then runs steps directly, with ``True`` it refuses.  Graphs need
cuda-python; with pycuda they are off (the default) or refused (``True``).

Threads and closing.  Every call into CUDA runs inside the binding's
``current()`` on the calling thread, so ``threading = "worker"`` (steps on the
``wavae-inference`` thread) finds its context, and pycuda's context stack is
empty between calls.  The backend is a context manager; ``close()`` may be
called any number of times, and an error in ``__init__`` closes what it had
opened before it propagates.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

from wavae.device.bundle import Bundle, BundleError, GraphInfo
from wavae.fileio import file_sha256

from .base import Backend, BackendError
from .cuda import CudaBinding, gpu_present, open_cuda

log = logging.getLogger(__name__)

NO_GPU = "the TensorRT backend needs an NVIDIA GPU (a Jetson); {why}. Use --backend onnxruntime on this machine"
PLAN_PREFERENCE = ("int8", "fp16", "fp32")  # fastest first, when the caller does not choose
FINGERPRINT = "fingerprint.json"
FINGERPRINT_FIELDS = {  # field -> how a message names it
    "tensorrt": "TensorRT",
    "gpu": "GPU",
    "compute_capability": "compute capability",
    "precision": "precision",
}


def import_tensorrt():
    """The system TensorRT (JetPack); call only after ``gpu_present()`` has found a GPU."""
    try:
        import tensorrt  # noqa: PLC0415 - imported only on a GPU machine
    except ImportError as e:
        raise BackendError(
            "TensorRT's Python bindings are not importable. On a Jetson they come with JetPack "
            "(`sudo apt install python3-libnvinfer`, part of nvidia-jetpack), never from pip; a virtual "
            "environment must be created with --system-site-packages to see them. Without TensorRT, run "
            f"with --backend onnxruntime. ({e})"
        ) from e
    return tensorrt


# ----------------------------------------------------------------------------
# plans and their fingerprint
# ----------------------------------------------------------------------------
def engine_command(bundle: Bundle, precision: str | None = None, force: bool = False) -> str:
    """The ``wavae engine`` command line that (re)builds ``bundle``'s ``precision`` plans."""
    cmd = f"wavae engine {shlex.quote(str(bundle.path))}"
    if precision == "fp16" and bundle.precision != "fp16":
        cmd += " --fp16"  # any other precision is the bundle's own, the default
    return cmd + (" --force" if force else "")


def fingerprint_path(bundle: Bundle) -> Path:
    return bundle.engine_file(next(iter(bundle.graphs))).with_name(FINGERPRINT)


def onnx_sha256(bundle: Bundle) -> dict[str, str]:
    """The manifest's sha256 of each graph's ONNX file (what the plans were built from)."""
    files, graphs = bundle.manifest["files"], bundle.manifest["graphs"]
    return {g: files[graphs[g]["file"]]["sha256"] for g in sorted(bundle.graphs)}


def fingerprint(tensorrt_version: str, gpu: dict[str, str], precision: str, onnx_sha: dict[str, str]) -> dict[str, Any]:
    """What a plan depends on: TensorRT, the GPU, the precision and the ONNX it came from."""
    return {
        "tensorrt": str(tensorrt_version),
        "gpu": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
        "precision": precision,
        "onnx_sha256": dict(sorted(onnx_sha.items())),
    }


def read_fingerprints(bundle: Bundle) -> dict[str, Any]:
    """``engines/fingerprint.json``: ``{precision: {"fingerprint", "plans", "plan_sha256"}}``; {} if absent."""
    path = fingerprint_path(bundle)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); rebuild the plans: `{engine_command(bundle, force=True)}`") from e
    if not isinstance(record, dict):
        raise BundleError(f"{path} is not a fingerprint record; rebuild the plans: `{engine_command(bundle, force=True)}`")
    return record


def fingerprint_differences(recorded: Any, current: dict[str, Any]) -> list[str]:
    """What differs between the fingerprint plans were built under and ``current``, in words ([] if nothing)."""
    if not isinstance(recorded, dict):
        return ["no fingerprint was recorded for them"]
    out = [
        f"{label} {recorded.get(k)} when built, {current.get(k)} here"
        for k, label in FINGERPRINT_FIELDS.items()
        if recorded.get(k) != current.get(k)
    ]
    if recorded.get("onnx_sha256") != current.get("onnx_sha256"):
        out.append("the bundle's ONNX graphs changed since (re-exported)")
    return out


def plan_problems(bundle: Bundle, precision: str, current: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Why ``bundle``'s ``precision`` plans cannot run under ``current`` ([] when they can):
    a plan missing or altered, or built under another fingerprint."""
    entry = record.get(precision)
    if not isinstance(entry, dict):
        entry = {}
    sums = entry.get("plan_sha256") if isinstance(entry.get("plan_sha256"), dict) else {}
    out = []
    for g in bundle.graphs:
        f = bundle.engine_file(g, precision)
        if not f.is_file():
            out.append(f"{f.name} is missing")
        elif file_sha256(f) != sums.get(g):
            out.append(f"{f.name} does not match its sha256 in {FINGERPRINT}")
    return out + fingerprint_differences(entry.get("fingerprint"), current)


def find_plans(
    bundle: Bundle, precision: str | None = None, *, tensorrt_version: str, gpu: dict[str, str]
) -> tuple[str, dict[str, Path]]:
    """``(precision, {graph: plan})``: ``precision``'s plans, else the fastest precision
    whose plans run here.  Plans built under another fingerprint (TensorRT, GPU,
    ONNX) or altered since are refused with the command that rebuilds them."""
    record = read_fingerprints(bundle)
    onnx = onnx_sha256(bundle)
    refused: dict[str, list[str]] = {}
    for p in [precision] if precision else PLAN_PREFERENCE:
        plans = {g: bundle.engine_file(g, p) for g in bundle.graphs}
        if not any(f.is_file() for f in plans.values()):
            continue
        problems = plan_problems(bundle, p, fingerprint(tensorrt_version, gpu, p, onnx), record)
        if not problems:
            for q, why in refused.items():
                log.warning("skipping the %s TensorRT plans (%s); running %s", q, "; ".join(why), p)
            return p, plans
        refused[p] = problems
    engines = fingerprint_path(bundle).parent
    if refused:
        p, why = next(iter(refused.items()))
        raise BundleError(
            f"the {p} TensorRT plans in {engines} cannot run on this device: {'; '.join(why)}. "
            f"Rebuild them here: `{engine_command(bundle, p)}`"
        )
    want = f"{precision} " if precision else ""
    raise BundleError(
        f"no {want}TensorRT plans in {engines}; build them on this Jetson: `{engine_command(bundle, precision)}`"
        + ("" if precision else " (add --fp16 for half precision)")
    )


def check_engine_io(trt, engine, info: GraphInfo, plan: Path, rebuild: str) -> None:
    """Refuse a plan whose tensors differ from the manifest's in name, direction, shape or dtype."""
    want: dict[str, tuple[Any, tuple[int, ...]]] = {}
    for t in info.inputs:
        want[t.name] = (trt.TensorIOMode.INPUT, t.shape)
    for t in info.outputs:
        want[t.name] = (trt.TensorIOMode.OUTPUT, t.shape)
    for s in info.states:
        want[s.input] = (trt.TensorIOMode.INPUT, s.shape)
        want[s.output] = (trt.TensorIOMode.OUTPUT, s.shape)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if set(names) != set(want):
        raise BundleError(
            f"{plan} has tensors {sorted(names)}, the manifest lists {sorted(want)}; rebuild the plans: `{rebuild}`"
        )
    problems = []
    for n in names:
        mode, shape, dtype = engine.get_tensor_mode(n), tuple(engine.get_tensor_shape(n)), engine.get_tensor_dtype(n)
        want_mode, want_shape = want[n]
        if mode != want_mode:
            problems.append(f"{n} is an {mode.name.lower()} in the plan, an {want_mode.name.lower()} in the manifest")
        if shape != tuple(want_shape):
            problems.append(f"{n} has shape {list(shape)} in the plan, {list(want_shape)} in the manifest")
        if dtype != trt.DataType.FLOAT:
            problems.append(f"{n} is {dtype.name} in the plan; bundle I/O is float32")
    if problems:
        raise BundleError(f"{plan} does not fit the bundle: {'; '.join(problems)}; rebuild the plans: `{rebuild}`")


# ----------------------------------------------------------------------------
# the backend
# ----------------------------------------------------------------------------
class _TrtGraph:
    """One graph: its execution context, I/O buffers, two device-side state sets and CUDA graphs."""

    def __init__(self, info: GraphInfo, engine, cuda: CudaBinding):
        self.info = info
        self.engine = engine
        self.cuda = cuda
        self.graphs: list[Any] = [None, None]
        self.ctx = engine.create_execution_context()
        if self.ctx is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {info.name} (out of GPU memory?); "
                f"stop other GPU programs or use --backend onnxruntime"
            )
        self.zero_copy = cuda.integrated
        self.inputs, self.outputs = {}, {}
        self._in_dev, self._out_dev = {}, {}
        for t in info.inputs:
            self.inputs[t.name], self._in_dev[t.name] = self._buffer(t.shape)
            self.ctx.set_tensor_address(t.name, self._in_dev[t.name])
        for t in info.outputs:
            self.outputs[t.name], self._out_dev[t.name] = self._buffer(t.shape)
            self.ctx.set_tensor_address(t.name, self._out_dev[t.name])
        # device-side state, two sets; host-side handles are tokens for the Backend API
        self._state_dev = [[cuda.device(4 * int(np.prod(s.shape))) for s in info.states] for _ in range(2)]
        self.tokens = [[np.zeros(0, np.float32) for _ in info.states] for _ in range(2)]
        # GPU time of the last step (CUDA events around it on the step's stream)
        self._ev = (cuda.event(), cuda.event())
        self.last_gpu_ms: float | None = None

    def _buffer(self, shape) -> tuple[np.ndarray, int]:
        if self.zero_copy:
            return self.cuda.host_mapped(shape)
        return self.cuda.host_pinned(shape), self.cuda.device(4 * int(np.prod(shape)))

    def bind_parity(self, p: int) -> None:
        for s, a, b in zip(self.info.states, self._state_dev[p], self._state_dev[1 - p]):
            self.ctx.set_tensor_address(s.input, a)
            self.ctx.set_tensor_address(s.output, b)

    def enqueue(self, p: int) -> None:
        cuda = self.cuda
        if not self.zero_copy:
            for name, arr in self.inputs.items():
                cuda.htod(self._in_dev[name], arr)
        self.bind_parity(p)
        if not self.ctx.execute_async_v3(cuda.stream_handle):
            raise BackendError(f"TensorRT failed to run the {self.info.name} step")
        if not self.zero_copy:
            for name, arr in self.outputs.items():
                cuda.dtoh(arr, self._out_dev[name])

    def run(self, p: int) -> None:
        cuda = self.cuda
        cuda.record(self._ev[0])
        if self.graphs[p] is not None:
            cuda.launch(self.graphs[p])  # the graph holds the addresses bound when it was captured
        else:
            self.enqueue(p)
        cuda.record(self._ev[1])
        cuda.sync()
        self.last_gpu_ms = cuda.elapsed_ms(*self._ev)

    def zero_state(self, p: int) -> None:
        for s, ptr in zip(self.info.states, self._state_dev[p]):
            self.cuda.memset(ptr, 4 * int(np.prod(s.shape)))

    def drop_graphs(self) -> None:
        for g in self.graphs:
            if g is not None:
                self.cuda.destroy_graph(g)
        self.graphs = [None, None]

    def release(self) -> None:
        """Destroy the CUDA graphs, then TensorRT's context and engine (with the CUDA context current);
        the events go with the binding's own references."""
        self.drop_graphs()
        self.ctx = None
        self.engine = None
        self._ev = ()


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        cuda_graph: bool | None = None,
        precision: str | None = None,
        threads: int | None = None,  # CPU threads do not apply: the graphs run on the GPU
        *,
        tensorrt=None,
        cuda: CudaBinding | None = None,
    ):
        """``tensorrt`` (the module) and ``cuda`` (a binding, which the backend then owns and
        closes) are found on this machine when not given; the tests pass fakes of them."""
        self._closed = False
        self._graphs: dict[str, _TrtGraph] = {}
        self._logger = self._runtime = None
        self.cuda = cuda
        self.cuda_graph = False
        self.last_gpu_ms: float | None = None
        try:
            if tensorrt is None:
                ok, why = gpu_present()
                if not ok:
                    raise BackendError(NO_GPU.format(why=why))
                tensorrt = import_tensorrt()
            if self.cuda is None:
                self.cuda = open_cuda()
            self._current = self.cuda.current()
            with self._current:
                self._load(bundle, tensorrt, precision)
                self.cuda_graph = self._choose_cuda_graph(cuda_graph)
        except BaseException:
            self.close()
            raise

    def _load(self, bundle: Bundle, trt, precision: str | None) -> None:
        self.bundle = bundle
        self.tensorrt_version = str(trt.__version__)
        self.precision, plans = find_plans(bundle, precision, tensorrt_version=self.tensorrt_version, gpu=self.cuda.gpu())
        rebuild = engine_command(bundle, self.precision, force=True)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        for name, info in bundle.graphs.items():
            engine = self._runtime.deserialize_cuda_engine(plans[name].read_bytes())
            if engine is None:
                raise BundleError(
                    f"TensorRT {self.tensorrt_version} could not load {plans[name]} although its fingerprint "
                    f"matches this device (TensorRT's message above says why); rebuild it: `{rebuild}`"
                )
            check_engine_io(trt, engine, info, plans[name], rebuild)
            self._graphs[name] = _TrtGraph(info, engine, self.cuda)

    def _time_steps(self, n: int = 20) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            for g in self._graphs.values():
                g.run(i % 2)
        return (time.perf_counter() - t0) / n

    def _drop_graphs(self) -> None:
        for g in self._graphs.values():
            g.drop_graphs()

    def _choose_cuda_graph(self, want: bool | None) -> bool:
        for g in self._graphs.values():  # TensorRT's lazy set-up happens outside any capture
            g.run(0)
            g.run(1)
        if want is False:
            return False
        if not self.cuda.graphs:
            if want:
                raise BackendError(f"cuda_graph=True cannot be honoured: {self.cuda.no_graphs}")
            log.info("CUDA graphs off: %s", self.cuda.no_graphs)
            return False
        plain = self._time_steps()
        try:
            for g in self._graphs.values():
                for p in (0, 1):
                    g.graphs[p] = self.cuda.capture(lambda g=g, p=p: g.enqueue(p))
        except BackendError as e:  # the capture was ended and its partial graph destroyed
            self._drop_graphs()
            if want:
                raise BackendError(f"CUDA graph capture failed: {e}") from e
            log.warning("CUDA graph capture failed (%s); running TensorRT steps directly", e)
            return False
        graphed = self._time_steps()
        use = bool(want) or graphed < plain
        log.info("TensorRT step: %.3f ms plain, %.3f ms as a CUDA graph -> %s", plain * 1e3, graphed * 1e3,
                 "graph" if use else "plain")
        if not use:
            self._drop_graphs()
        return use

    def describe(self) -> str:
        g = next(iter(self._graphs.values()), None)
        mem = "closed" if g is None else "zero-copy mapped memory" if g.zero_copy else "pinned host buffers"
        return f"tensorrt {self.tensorrt_version} ({self.precision}, {self.cuda.name}, {mem}, cuda_graph={self.cuda_graph})"

    def _graph(self, name: str) -> _TrtGraph:
        g = self._graphs.get(name)
        if g is None:
            raise BackendError("the TensorRT backend is closed" if self._closed else f"no graph {name!r} in this bundle")
        return g

    def input_buffers(self, graph):
        return self._graph(graph).inputs

    def init_state(self, graph):
        g = self._graph(graph)
        with self._current:
            g.zero_state(0)
        return g.tokens[0]

    def process(self, graph, inputs, state):
        g = self._graph(graph)
        self._stage(g.inputs, inputs)
        p = self._parity(state, g.tokens)
        if p is None:
            raise BackendError("the TensorRT backend keeps its state on the GPU: pass the state it returned")
        with self._current:
            g.run(p)
        self.last_gpu_ms = g.last_gpu_ms  # read by `wavae profile` to split GPU from wall time
        return g.outputs, g.tokens[1 - p]

    def close(self) -> None:
        """Release TensorRT and CUDA (idempotent); buffers the engine still views live until it drops them."""
        if self._closed:
            return
        self._closed = True
        cuda, self.cuda_graph = self.cuda, False
        if cuda is None:
            return
        try:
            with cuda.current():  # TensorRT and pycuda free their objects with the context current
                for name in list(self._graphs):
                    self._graphs.pop(name).release()
                self._runtime = None
        finally:
            cuda.close()
