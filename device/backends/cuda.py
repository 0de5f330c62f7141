"""The CUDA calls the TensorRT backend makes, from cuda-python or pycuda.

A *binding* owns one stream on one GPU and everything allocated for it: mapped
or pinned host buffers, device buffers, events and captured graphs.  The
backend sees only this interface (``CudaBinding``); the fakes in the tests
stand in for the modules underneath it (``cuda.bindings.runtime``,
``pycuda.driver``), so the code here is what the tests run.

cuda-python first.  Its runtime API binds the device's primary context to
whichever thread calls it, so the ``worker`` threading mode needs nothing
special; it has stream capture, so CUDA graphs; and it is what TensorRT 10's
own samples use.  ``cuda.bindings.runtime`` (cuda-python 12.6 and later) is
tried before ``cuda.cudart`` (earlier releases; gone in cuda-bindings 13).

pycuda second, without CUDA graphs: no released pycuda has stream capture (the
pull requests that add it are unmerged).  pycuda works with an explicit context
stack, and aborts the process at exit when that stack is not empty; so the
primary context is pushed for the length of each call and popped at its end, on
whichever thread makes the call (``current()``), and never left pushed.

Memory that numpy views (the input and output buffers the engine reads and
writes) is freed when the last view is gone, not by ``close()``: closing the
backend before the engine that holds its buffers must not leave the engine
writing into freed memory.  Device memory, events, graphs and the stream, which
nothing outside sees, are released by ``close()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import threading
import weakref
from pathlib import Path

import numpy as np

from .base import BackendError

log = logging.getLogger(__name__)

GPU_DEVICE_NODES = (
    "/dev/nvidia0",  # desktop / server GPUs
    "/dev/nvhost-ctrl-gpu",  # Jetson (JetPack 4/5)
    "/dev/nvhost-gpu",
    "/dev/nvgpu/igpu0/ctrl",  # Jetson Orin (JetPack 6)
)
NO_BINDINGS = (
    "the TensorRT backend needs CUDA's Python bindings: `pip install cuda-python` (preferred; it also gives "
    "CUDA graphs) or `pip install pycuda`"
)
NO_GRAPHS_PYCUDA = "pycuda has no stream capture; CUDA graphs need cuda-python (`pip install cuda-python`)"


def gpu_present() -> tuple[bool, str]:
    """(True, what) if an NVIDIA GPU is visible and its driver reports it, else (False, why).

    Looks for the device nodes first (no library loaded), then asks ``libcuda``
    through ctypes; neither TensorRT nor any CUDA binding is loaded here: a
    TensorRT runtime without a GPU can crash the process.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False, "CUDA_VISIBLE_DEVICES hides every GPU"
    if not any(os.path.exists(p) for p in GPU_DEVICE_NODES):
        return False, "no NVIDIA GPU device node (" + ", ".join(GPU_DEVICE_NODES) + ")"
    lib = None
    for n in (ctypes.util.find_library("cuda"), "libcuda.so.1", "libcuda.so"):
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


def import_runtime():
    """cuda-python's runtime module: ``cuda.bindings.runtime``, else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 - cuda-python >= 12.6, the only path in 13
    except ImportError:
        from cuda import cudart as runtime  # noqa: PLC0415 - cuda-python < 12.6
    return runtime


def import_pycuda():
    import pycuda.driver as driver  # noqa: PLC0415

    return driver


def _runtime_gpu(props) -> dict[str, str]:
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def _pycuda_gpu(dev) -> dict[str, str]:
    major, minor = dev.compute_capability()
    return {"name": str(dev.name()), "compute_capability": f"{major}.{minor}"}


def gpu_info() -> dict[str, str]:
    """GPU name and compute capability, asked the way the backend will ask at run time.

    The engines' fingerprint records this when ``wavae engine`` builds them and
    the backend compares it when it loads them, so both sides try the same
    sources in the same order: cuda-python, pycuda, ``nvidia-smi``, the board's
    device tree.
    """
    try:
        rt = import_runtime()
    except ImportError:
        rt = None
    if rt is not None:
        err, props = rt.cudaGetDeviceProperties(0)
        if int(err) == 0:
            return _runtime_gpu(props)
    try:
        drv = import_pycuda()
    except ImportError:
        drv = None
    if drv is not None:
        try:
            drv.init()
            return _pycuda_gpu(drv.Device(0))
        except drv.Error:
            pass  # the next source may still know
    if shutil.which("nvidia-smi"):
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
        if r.returncode == 0 and r.stdout.strip():
            name, _, cc = r.stdout.strip().splitlines()[0].partition(",")
            return {"name": name.strip(), "compute_capability": cc.strip()}
    model = Path("/proc/device-tree/model")
    if model.is_file():  # a Jetson without CUDA bindings: the board names the GPU
        return {"name": model.read_text(errors="replace").strip("\x00\n "), "compute_capability": "unknown"}
    return {"name": "unknown", "compute_capability": "unknown"}


class CudaBinding:
    """One stream on one GPU and what is allocated for it (see the module docstring).

    ``stream_handle`` is the stream as the integer TensorRT's ``execute_async_v3``
    takes.  Every call below must run inside ``with binding.current():`` on the
    calling thread.  ``close()`` may be called any number of times.
    """

    name = "abstract"
    graphs = False  # stream capture available
    no_graphs = ""  # why not, when it is not
    integrated = False  # zero copy: mapped host memory is device memory
    stream_handle = 0

    def current(self):
        """A reusable context manager that makes this binding's context current on the calling thread."""
        raise NotImplementedError

    def gpu(self) -> dict[str, str]:
        raise NotImplementedError

    def host_mapped(self, shape) -> tuple[np.ndarray, int]:
        """Zeroed float32 host memory the GPU reads and writes in place: (array, device pointer)."""
        raise NotImplementedError

    def host_pinned(self, shape) -> np.ndarray:
        """Zeroed page-locked float32 host memory, for asynchronous copies."""
        raise NotImplementedError

    def device(self, nbytes: int) -> int:
        """``nbytes`` of zeroed device memory (zeroed on the stream)."""
        raise NotImplementedError

    def memset(self, ptr: int, nbytes: int) -> None:
        """Zero device memory, on the stream."""
        raise NotImplementedError

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        raise NotImplementedError

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def event(self):
        raise NotImplementedError

    def record(self, ev) -> None:
        raise NotImplementedError

    def elapsed_ms(self, start, end) -> float:
        raise NotImplementedError

    def capture(self, enqueue):
        """Capture what ``enqueue()`` puts on the stream as an executable graph.

        On any failure the capture is ended, a partial graph destroyed and the
        error cleared before ``BackendError`` is raised, so the stream works as
        before (trtexec's ``endCaptureOnError``).
        """
        raise BackendError(self.no_graphs)

    def launch(self, graph) -> None:
        raise NotImplementedError

    def destroy_graph(self, graph) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------
# cuda-python
# ----------------------------------------------------------------------------
def _free_host(rt, ptr: int) -> None:
    """Free page-locked host memory once nothing views it (a weakref finalizer)."""
    rt.cudaFreeHost(ptr)  # an error code at interpreter exit (driver unloading) is nothing to act on


class _DeviceOnThisThread:
    """cuda-python: set the device once per thread; the runtime then binds its primary context there."""

    def __init__(self, binding: "CudaPython"):
        self._binding = binding

    def __enter__(self):
        b = self._binding
        if threading.get_ident() not in b._threads:
            b._bind_thread()
        return self

    def __exit__(self, *exc) -> None:
        return None


class CudaPython(CudaBinding):
    name = "cuda-python"
    graphs = True

    def __init__(self, runtime=None, device: int = 0):
        self.rt = import_runtime() if runtime is None else runtime
        self.device_index = device
        self._threads: set[int] = set()
        self._current = _DeviceOnThisThread(self)
        self._dev: list[int] = []
        self._events: list = []
        self._execs: list = []
        self._stream = None
        self._closed = False
        try:
            self._bind_thread()
            props = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
            self._gpu = _runtime_gpu(props)
            self.integrated = bool(props.integrated) and bool(props.canMapHostMemory)
            self._stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
            self.stream_handle = int(self._stream)  # once: TensorRT takes the handle as an integer
        except BaseException:
            self.close()
            raise

    def _bind_thread(self) -> None:
        self._check(self.rt.cudaSetDevice(self.device_index), "cudaSetDevice")
        self._threads.add(threading.get_ident())

    def _check(self, res, what: str):
        err, *rest = res
        if int(err) != 0:
            raise BackendError(
                f"CUDA {what} failed ({getattr(err, 'name', err)}); the GPU is not usable as it is: "
                f"check `dmesg` and `sudo tegrastats`, or use --backend onnxruntime"
            )
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def current(self):
        return self._current

    def gpu(self) -> dict[str, str]:
        return dict(self._gpu)

    def _host_alloc(self, shape, flags) -> tuple[np.ndarray, int]:
        n = int(np.prod(shape))
        ptr = int(self._check(self.rt.cudaHostAlloc(max(4 * n, 4), flags), "cudaHostAlloc"))
        raw = (ctypes.c_float * max(n, 1)).from_address(ptr)
        weakref.finalize(raw, _free_host, self.rt, ptr)  # freed with the last view, not before
        arr = np.ctypeslib.as_array(raw)[:n].reshape(shape)
        arr.fill(0.0)
        return arr, ptr

    def host_mapped(self, shape) -> tuple[np.ndarray, int]:
        arr, ptr = self._host_alloc(shape, self.rt.cudaHostAllocMapped)
        return arr, int(self._check(self.rt.cudaHostGetDevicePointer(ptr, 0), "cudaHostGetDevicePointer"))

    def host_pinned(self, shape) -> np.ndarray:
        return self._host_alloc(shape, self.rt.cudaHostAllocDefault)[0]

    def device(self, nbytes: int) -> int:
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 4)), "cudaMalloc"))
        self._dev.append(ptr)
        self.memset(ptr, max(nbytes, 4))
        return ptr

    def memset(self, ptr: int, nbytes: int) -> None:
        self._check(self.rt.cudaMemsetAsync(ptr, 0, nbytes, self._stream), "cudaMemsetAsync")

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind, self._stream), "cudaMemcpyAsync")

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(arr.ctypes.data, ptr, arr.nbytes, kind, self._stream), "cudaMemcpyAsync")

    def sync(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def event(self):
        ev = self._check(self.rt.cudaEventCreate(), "cudaEventCreate")
        self._events.append(ev)
        return ev

    def record(self, ev) -> None:
        self._check(self.rt.cudaEventRecord(ev, self._stream), "cudaEventRecord")

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def capture(self, enqueue):
        rt = self.rt
        # thread-local, as trtexec: only this thread's unsafe calls can invalidate the capture
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(rt.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        except BaseException:
            self._abandon_capture()
            raise
        err, graph = rt.cudaStreamEndCapture(self._stream)
        if int(err) != 0:  # invalidated: no graph comes back
            rt.cudaGetLastError()
            raise BackendError(f"CUDA graph capture was invalidated ({getattr(err, 'name', err)})")
        try:
            err, graph_exec = rt.cudaGraphInstantiate(graph, 0)
        finally:
            rt.cudaGraphDestroy(graph)  # the executable graph keeps what it needs
        if int(err) != 0:
            rt.cudaGetLastError()
            raise BackendError(f"CUDA graph instantiation failed ({getattr(err, 'name', err)})")
        self._execs.append(graph_exec)
        return graph_exec

    def _abandon_capture(self) -> None:
        """End a capture whose enqueue failed: destroy what was captured, clear the error."""
        rt = self.rt
        err, graph = rt.cudaStreamEndCapture(self._stream)
        if int(err) == 0 and graph is not None and int(graph) != 0:
            rt.cudaGraphDestroy(graph)
        rt.cudaGetLastError()

    def launch(self, graph) -> None:
        self._check(self.rt.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")

    def destroy_graph(self, graph) -> None:
        if graph in self._execs:
            self._execs.remove(graph)
            self.rt.cudaGraphExecDestroy(graph)

    def close(self) -> None:
        """Release the stream and what only it used; host buffers go with their last view."""
        if self._closed:
            return
        self._closed = True
        rt = self.rt
        if self._stream is not None:
            rt.cudaStreamSynchronize(self._stream)  # nothing may still be reading what is freed below
        for g in self._execs:
            rt.cudaGraphExecDestroy(g)
        for p in self._dev:
            rt.cudaFree(p)
        for ev in self._events:
            rt.cudaEventDestroy(ev)
        if self._stream is not None:
            rt.cudaStreamDestroy(self._stream)
        self._execs.clear()
        self._dev.clear()
        self._events.clear()
        self._stream = None


# ----------------------------------------------------------------------------
# pycuda
# ----------------------------------------------------------------------------
class _Pushed:
    """pycuda: the primary context pushed for the length of one call, on the calling thread."""

    def __init__(self, binding: "PyCuda"):
        self._binding = binding

    def __enter__(self):
        self._binding.ctx.push()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        cuda = self._binding.cuda
        cuda.Context.pop()
        if isinstance(exc, cuda.Error):  # pycuda's own errors, as the backend's
            raise _pycuda_error(exc) from exc


def _pycuda_error(e: Exception) -> BackendError:
    return BackendError(
        f"CUDA (pycuda) failed: {e}; the GPU is not usable as it is: check `dmesg` and `sudo tegrastats`, "
        f"or use --backend onnxruntime"
    )


class PyCuda(CudaBinding):
    name = "pycuda"
    graphs = False
    no_graphs = NO_GRAPHS_PYCUDA

    def __init__(self, driver=None, device: int = 0):
        cuda = import_pycuda() if driver is None else driver
        self.cuda = cuda
        self._closed = False
        self._dev: list = []
        self._host: list = []
        self._events: list = []
        self._stream = None
        try:
            cuda.init()
            dev = cuda.Device(device)
            self._gpu = _pycuda_gpu(dev)
            self.ctx = dev.retain_primary_context()  # not pushed: see current()
        except cuda.Error as e:
            raise _pycuda_error(e) from e
        self._current = _Pushed(self)
        with self._current:
            try:
                attr = cuda.device_attribute
                self.integrated = bool(dev.get_attribute(attr.INTEGRATED)) and bool(
                    dev.get_attribute(attr.CAN_MAP_HOST_MEMORY))
                self._stream = cuda.Stream()
                self.stream_handle = int(self._stream.handle)
            except BaseException:
                self._release()
                raise

    def current(self):
        return self._current

    def gpu(self) -> dict[str, str]:
        return dict(self._gpu)

    def host_mapped(self, shape) -> tuple[np.ndarray, int]:
        arr = self.cuda.pagelocked_zeros(shape, np.float32, mem_flags=self.cuda.host_alloc_flags.DEVICEMAP)
        self._host.append(arr)
        return arr, int(arr.base.get_device_pointer())

    def host_pinned(self, shape) -> np.ndarray:
        arr = self.cuda.pagelocked_zeros(shape, np.float32)
        self._host.append(arr)
        return arr

    def device(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(max(nbytes, 4))
        self._dev.append(mem)
        self.memset(int(mem), max(nbytes, 4))
        return int(mem)

    def memset(self, ptr: int, nbytes: int) -> None:
        self.cuda.memset_d8_async(ptr, 0, nbytes, self._stream)

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(ptr, arr, self._stream)

    def dtoh(self, arr: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(arr, ptr, self._stream)

    def sync(self) -> None:
        self._stream.synchronize()

    def event(self):
        ev = self.cuda.Event()
        self._events.append(ev)
        return ev

    def record(self, ev) -> None:
        ev.record(self._stream)

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))  # both recorded, stream synced

    def launch(self, graph) -> None:
        raise BackendError(self.no_graphs)

    def destroy_graph(self, graph) -> None:
        return None

    def _release(self) -> None:
        """Free device memory and drop the stream and events (inside ``current()``: pycuda's
        destructors need the context); host buffers are freed by pycuda with their last view."""
        if self._stream is not None:
            self._stream.synchronize()
        for mem in self._dev:
            mem.free()
        self._dev.clear()
        self._events.clear()
        self._host.clear()
        self._stream = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._current:
            self._release()


def open_cuda(device: int = 0) -> CudaBinding:
    """cuda-python if it is installed, else pycuda (see the module docstring)."""
    try:
        rt = import_runtime()
    except ImportError:
        rt = None
    if rt is not None:
        return CudaPython(rt, device)
    try:
        drv = import_pycuda()
    except ImportError as e:
        raise BackendError(NO_BINDINGS) from e
    log.info("CUDA through pycuda: %s", NO_GRAPHS_PYCUDA)
    return PyCuda(drv, device)
