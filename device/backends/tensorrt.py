"""The TensorRT backend: the Jetson's GPU, running plans built by ``wavae engine``.

Nothing here touches TensorRT (or CUDA beyond asking the driver how many GPUs
there are) until an NVIDIA GPU has been found: a TensorRT runtime without one
can crash the process while deserialising a plan.  ``gpu_present()`` asks
``libcuda`` through ctypes; no driver or no device gives a ``BackendError``
that says to use ``--backend onnxruntime``.

Memory.  On a Jetson (integrated GPU, ``canMapHostMemory``) every tensor lives
in page-locked, device-mapped host memory: the CPU writes the input block and
reads the output block where the GPU reads and writes them (zero copy).  On a
discrete GPU the host buffers are page-locked and copied asynchronously on the
step's stream.  State never leaves the GPU: two device-side sets alternate, the
``state_out_k`` of one step being the ``state_in_k`` of the next.

CUDA graphs.  One step is captured per state parity (two graphs per TensorRT
graph).  ``cuda_graph=None`` (the default) times both ways at start-up and keeps
the faster; ``True``/``False`` force it.

CUDA bindings: pycuda (JetPack's choice), falling back to cuda-python
(``cuda.bindings.runtime`` or the older ``cuda.cudart``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import time

import numpy as np

from wavae.device.bundle import Bundle, BundleError, GraphInfo

from . import Backend, BackendError

log = logging.getLogger(__name__)

NO_GPU = "the TensorRT backend needs an NVIDIA GPU (a Jetson); {why}. Use --backend onnxruntime on this machine"


GPU_DEVICE_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvgpu/igpu0/ctrl")
PLAN_PREFERENCE = ("int8", "fp16", "fp32")  # fastest first, when the caller does not choose


def gpu_present() -> tuple[bool, str]:
    """(True, what) if an NVIDIA GPU is visible and its driver reports it, else (False, why).

    Looks for the device nodes first (no library loaded), then asks ``libcuda``;
    TensorRT is never loaded here.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False, "CUDA_VISIBLE_DEVICES hides every GPU"
    if not any(os.path.exists(p) for p in GPU_DEVICE_NODES):
        return False, "no NVIDIA GPU device node (" + ", ".join(GPU_DEVICE_NODES) + ")"
    names = [ctypes.util.find_library("cuda"), "libcuda.so.1", "libcuda.so"]
    lib = None
    for n in names:
        if not n:
            continue
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError:
            continue
    if lib is None:
        return False, "no CUDA driver (libcuda) is installed"
    if lib.cuInit(0) != 0:
        return False, "the CUDA driver is installed but found no usable GPU (cuInit failed)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return False, "the CUDA driver reports no GPU"
    return True, f"{count.value} CUDA device(s)"


# ----------------------------------------------------------------------------
# CUDA shims: the few runtime calls the backend needs, from pycuda or cuda-python
# ----------------------------------------------------------------------------
class _PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.errors = (cuda.Error,)
        self.ctx = cuda.Device(0).retain_primary_context()
        self.ctx.push()
        self.integrated = bool(cuda.Device(0).get_attribute(cuda.device_attribute.INTEGRATED))
        self.stream = cuda.Stream()
        self.stream_handle = self.stream.handle
        self._keep = []

    def host_mapped(self, shape) -> tuple[np.ndarray, int]:
        arr = self.cuda.pagelocked_zeros(shape, np.float32, mem_flags=self.cuda.host_alloc_flags.DEVICEMAP)
        self._keep.append(arr)
        return arr, int(arr.base.get_device_pointer())

    def host_pinned(self, shape) -> np.ndarray:
        arr = self.cuda.pagelocked_zeros(shape, np.float32)
        self._keep.append(arr)
        return arr

    def device(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(max(nbytes, 4))
        self._keep.append(mem)
        self.cuda.memset_d8(mem, 0, max(nbytes, 4))
        return int(mem)

    def memset(self, ptr: int, nbytes: int) -> None:
        self.cuda.memset_d8(ptr, 0, nbytes)

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(ptr, arr, self.stream)

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(arr, ptr, self.stream)

    def sync(self) -> None:
        self.stream.synchronize()

    def capture(self, fn):
        import pycuda.driver as cuda

        self.stream.begin_capture(cuda.capture_mode.GLOBAL)
        try:
            fn()
        finally:
            graph = self.stream.end_capture()
        # pycuda has named this both ways across releases
        return graph.instantiate() if hasattr(graph, "instantiate") else graph.instance()

    def launch(self, graph) -> None:
        graph.launch(self.stream)

    def event(self):
        return self.cuda.Event()

    def record(self, ev) -> None:
        ev.record(self.stream)

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))  # both recorded, stream synced

    def close(self) -> None:
        self._keep.clear()
        self.ctx.pop()


class _CudaPython:
    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # older cuda-python
        self.rt = rt
        self.errors = (BackendError,)
        self._check(rt.cudaSetDevice(0))
        props = self._check(rt.cudaGetDeviceProperties(0))
        self.integrated = bool(props.integrated)
        self.stream_handle = self._check(rt.cudaStreamCreate())
        self._host, self._dev = [], []

    def _check(self, res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise BackendError(f"CUDA runtime error {err}; the GPU is not usable: use --backend onnxruntime")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def _host_alloc(self, shape, flags) -> tuple[np.ndarray, int]:
        n = int(np.prod(shape))
        ptr = int(self._check(self.rt.cudaHostAlloc(max(4 * n, 4), flags)))
        self._host.append(ptr)
        arr = np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)
        arr.fill(0.0)
        return arr, ptr

    def host_mapped(self, shape) -> tuple[np.ndarray, int]:
        arr, ptr = self._host_alloc(shape, self.rt.cudaHostAllocMapped)
        return arr, int(self._check(self.rt.cudaHostGetDevicePointer(ptr, 0)))

    def host_pinned(self, shape) -> np.ndarray:
        return self._host_alloc(shape, self.rt.cudaHostAllocDefault)[0]

    def device(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 4))))
        self._dev.append(ptr)
        self.memset(ptr, max(nbytes, 4))
        return ptr

    def memset(self, ptr: int, nbytes: int) -> None:
        self._check(self.rt.cudaMemset(ptr, 0, nbytes))

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind, self.stream_handle))

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(arr.ctypes.data, ptr, arr.nbytes, kind, self.stream_handle))

    def sync(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream_handle))

    def capture(self, fn):
        rt = self.rt
        self._check(rt.cudaStreamBeginCapture(self.stream_handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        fn()
        graph = self._check(rt.cudaStreamEndCapture(self.stream_handle))
        return self._check(rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph) -> None:
        self._check(self.rt.cudaGraphLaunch(graph, self.stream_handle))

    def event(self):
        return self._check(self.rt.cudaEventCreate())

    def record(self, ev) -> None:
        self._check(self.rt.cudaEventRecord(ev, self.stream_handle))

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(start, end)))

    def close(self) -> None:
        for p in self._host:
            self.rt.cudaFreeHost(p)
        for p in self._dev:
            self.rt.cudaFree(p)
        self._host.clear()
        self._dev.clear()


def _cuda_shim():
    try:
        return _PyCuda()
    except ImportError:
        pass
    try:
        return _CudaPython()
    except ImportError as e:
        raise BackendError(
            "the TensorRT backend needs CUDA bindings: install pycuda (JetPack: `pip install pycuda`) "
            "or cuda-python (`pip install cuda-python`)"
        ) from e


# ----------------------------------------------------------------------------
def find_plans(bundle: Bundle, precision: str | None = None) -> dict[str, "os.PathLike"]:
    """The plans to run: ``precision``'s, else the fastest precision built for every graph.

    Each plan's sha256 is checked against ``engines/fingerprint.json`` (written by
    ``wavae engine``).
    """
    from wavae.device.bundle import file_sha256

    fp_path = bundle.path / "engines" / "fingerprint.json"
    try:
        record = json.loads(fp_path.read_text()) if fp_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{fp_path} is not valid JSON ({e}); rebuild the engines with `wavae engine`") from e
    choices = [precision] if precision else list(PLAN_PREFERENCE)
    for p in choices:
        plans = {g: bundle.engine_file(g, p) for g in bundle.graphs}
        if all(f.is_file() for f in plans.values()):
            sums = (record.get(p) or {}).get("plan_sha256", {})
            for g, f in plans.items():
                if g in sums and file_sha256(f) != sums[g]:
                    raise BundleError(f"{f} does not match its sha256 in {fp_path}; rebuild it with `wavae engine`")
            return plans
    want = f"{precision} " if precision else ""
    raise BundleError(
        f"no {want}TensorRT plans in {bundle.path / 'engines'}; build them on this Jetson with "
        f"`wavae engine --bundle {bundle.path}` (add --fp16 for half precision)"
    )


class _TrtGraph:
    def __init__(self, info: GraphInfo, engine, cuda, trt):
        self.info = info
        self.engine = engine
        self.ctx = engine.create_execution_context()
        self.cuda = cuda
        io = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        want = set(info.input_names) | set(info.output_names)
        if io != want:
            raise BundleError(
                f"TensorRT plan for {info.name} has tensors {sorted(io)}, the manifest lists {sorted(want)}; "
                f"rebuild the plans with `wavae engine`"
            )
        zero_copy = cuda.integrated
        self.zero_copy = zero_copy
        self.inputs, self.outputs = {}, {}
        self._in_dev, self._out_dev = {}, {}
        for t in info.inputs:
            if zero_copy:
                self.inputs[t.name], self._in_dev[t.name] = cuda.host_mapped(t.shape)
            else:
                self.inputs[t.name] = cuda.host_pinned(t.shape)
                self._in_dev[t.name] = cuda.device(4 * int(np.prod(t.shape)))
            self.ctx.set_tensor_address(t.name, self._in_dev[t.name])
        for t in info.outputs:
            if zero_copy:
                self.outputs[t.name], self._out_dev[t.name] = cuda.host_mapped(t.shape)
            else:
                self.outputs[t.name] = cuda.host_pinned(t.shape)
                self._out_dev[t.name] = cuda.device(4 * int(np.prod(t.shape)))
            self.ctx.set_tensor_address(t.name, self._out_dev[t.name])
        # device-side state, two sets; host-side handles are tokens for the Backend API
        self._state_dev = [[cuda.device(4 * int(np.prod(s.shape))) for s in info.states] for _ in range(2)]
        self.tokens = [[np.zeros(0, np.float32) for _ in info.states] for _ in range(2)]
        self.graphs = [None, None]
        # GPU time of the last step (CUDA events around it on the step's stream)
        self._ev = (cuda.event(), cuda.event())
        self.last_gpu_ms: float | None = None

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
        self.cuda.record(self._ev[0])
        if self.graphs[p] is not None:
            self.bind_parity(p)
            self.cuda.launch(self.graphs[p])
        else:
            self.enqueue(p)
        self.cuda.record(self._ev[1])
        self.cuda.sync()
        self.last_gpu_ms = self.cuda.elapsed_ms(*self._ev)

    def zero_state(self, p: int) -> None:
        for s, ptr in zip(self.info.states, self._state_dev[p]):
            self.cuda.memset(ptr, 4 * int(np.prod(s.shape)))


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(
        self, bundle: Bundle, cuda_graph: bool | None = None, precision: str | None = None, threads: int | None = None
    ):
        ok, why = gpu_present()
        if not ok:
            raise BackendError(NO_GPU.format(why=why))
        try:
            import tensorrt as trt
        except ImportError as e:
            raise BackendError(
                "TensorRT's Python bindings are not importable; on a Jetson they come with JetPack "
                "(apt install python3-libnvinfer), or use --backend onnxruntime"
            ) from e
        plans = find_plans(bundle, precision)
        self.bundle = bundle
        self.cuda = _cuda_shim()
        self.last_gpu_ms: float | None = None
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._graphs: dict[str, _TrtGraph] = {}
        for name, info in bundle.graphs.items():
            engine = self._runtime.deserialize_cuda_engine(plans[name].read_bytes())
            if engine is None:
                raise BundleError(
                    f"TensorRT could not load {plans[name]} (built for another TensorRT version or GPU?); "
                    f"rebuild it on this device with `wavae engine --bundle {bundle.path}`"
                )
            self._graphs[name] = _TrtGraph(info, engine, self.cuda, trt)
        self.cuda_graph = self._choose_cuda_graph(cuda_graph)

    def _time_steps(self, n: int = 20) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            for g in self._graphs.values():
                g.run(i % 2)
        return (time.perf_counter() - t0) / n

    def _choose_cuda_graph(self, want: bool | None) -> bool:
        for g in self._graphs.values():  # TensorRT's lazy set-up happens outside any capture
            g.run(0)
            g.run(1)
        if want is False:
            return False
        plain = self._time_steps()
        try:
            for g in self._graphs.values():
                g.graphs = [self.cuda.capture(lambda g=g, p=p: g.enqueue(p)) for p in (0, 1)]
        except (BackendError, RuntimeError, AttributeError, TypeError, *self.cuda.errors) as e:  # no capture here
            for g in self._graphs.values():
                g.graphs = [None, None]
            if want:
                raise BackendError(f"CUDA graph capture failed: {e}") from e
            log.info("CUDA graph capture unavailable (%s); running steps directly", e)
            return False
        graphed = self._time_steps()
        use = bool(want) or graphed < plain
        log.info("TensorRT step: %.3f ms plain, %.3f ms as a CUDA graph -> %s", plain * 1e3, graphed * 1e3,
                 "graph" if use else "plain")
        if not use:
            for g in self._graphs.values():
                g.graphs = [None, None]
        return use

    def describe(self) -> str:
        g = next(iter(self._graphs.values()))
        mem = "zero-copy mapped memory" if g.zero_copy else "pinned host buffers"
        return f"tensorrt ({self.cuda.name}, {mem}, cuda_graph={self.cuda_graph})"

    def input_buffers(self, graph):
        return self._graphs[graph].inputs

    def init_state(self, graph):
        g = self._graphs[graph]
        g.zero_state(0)
        return g.tokens[0]

    def process(self, graph, inputs, state):
        g = self._graphs[graph]
        self._stage(g.inputs, inputs)
        p = self._parity(state, g.tokens)
        if p is None:
            raise BackendError("the TensorRT backend keeps its state on the GPU: pass the state it returned")
        g.run(p)
        self.last_gpu_ms = g.last_gpu_ms  # read by `wavae profile` to split GPU from wall time
        return g.outputs, g.tokens[1 - p]

    def close(self) -> None:
        self._graphs.clear()
        self.cuda.close()
