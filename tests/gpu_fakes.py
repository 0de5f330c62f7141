"""Fakes at the GPU boundary, for the TensorRT backend's tests on machines without one.

Three stand-ins for the modules the backend imports, never for our own code:

- ``FakeRuntime``: cuda-python's ``cuda.bindings.runtime`` (the calls the
  backend makes, returning ``(err, value)`` tuples as cuda-python does);
- ``FakeDriver``: ``pycuda.driver``, with pycuda's per-thread context stack: a
  call that needs a context on a thread where none is pushed raises
  ``LogicError`` ("invalid device context"), and ``Context.pop()`` on an empty
  stack raises, as pycuda does;
- ``FakeTensorRT``: the ``tensorrt`` module: builder, ONNX parser, runtime and
  engines with the tensor-name API.

All three share one ``FakeGpu``: memory is real host memory (ctypes), so
buffers the backend hands out can be read and written, and a fake engine
computes each step for real.  A stream runs what is put on it at once, except
while it is capturing, when it records instead, as CUDA does; a graph launch
replays what was captured.  Every call is recorded as ``(thread name, call)``
in ``gpu.calls``; ``gpu.fail[call] = code`` makes the next such call return
that CUDA error.  Nothing is ever given back to the system while the fake
lives, so a use after a free is recorded in ``gpu.violations`` instead of
crashing the test.

A fake engine's step, for every graph: each ``state_out_k = state_in_k + 1``,
and every other output is filled with the sum of the means of the non-state
inputs plus the first element of each state input.  From zero state, step
``k`` (0-based) therefore outputs ``sum(mean(input)) + n_states * k``
(``expected_output``): a step run with the wrong state set, a lost state or a
stale input shows up in the numbers.
"""

from __future__ import annotations

import ctypes
import enum
import json
import threading
import time

import numpy as np

# ----------------------------------------------------------------------------
# the device
# ----------------------------------------------------------------------------


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


OK = cudaError_t.cudaSuccess


class FakeGpu:
    """One fake GPU: memory, streams, graphs and events, every call recorded."""

    def __init__(self, integrated: bool = True, name: str = "Orin (fake)", cc: tuple[int, int] = (8, 7)):
        self.integrated = integrated
        self.name = name
        self.cc = cc
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, int] = {}
        self.violations: list[str] = []
        self.last_error = OK
        self._lock = threading.Lock()
        self._next = 0x1000
        self.memory: dict[int, tuple[object, int]] = {}  # address -> (keep-alive object, bytes); never shrinks
        self.live: dict[int, str] = {}  # address -> "host" | "device", until freed
        self.freed: list[int] = []
        self.streams: dict[int, list | None] = {}  # handle -> captured ops while capturing, else None
        self.invalidated: set[int] = set()
        self.graphs: dict[int, list] = {}  # captured, not yet destroyed
        self.execs: dict[int, list] = {}  # instantiated, not yet destroyed
        self.events: dict[int, float | None] = {}
        self.graph_launches = 0

    def info(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": f"{self.cc[0]}.{self.cc[1]}"}

    # bookkeeping
    def handle(self) -> int:
        with self._lock:
            self._next += 16
            return self._next

    def call(self, name: str) -> int:
        """Record a call; the error code it must return (0 unless asked to fail)."""
        self.calls.append((threading.current_thread().name, name))
        code = self.fail.pop(name, OK)
        if code != OK:
            self.last_error = cudaError_t(code)
        return cudaError_t(code)

    def count(self, name: str, thread: str | None = None) -> int:
        return sum(1 for t, c in self.calls if c == name and (thread is None or t == thread))

    def error(self, code: cudaError_t) -> cudaError_t:
        self.last_error = code
        return code

    # memory
    def alloc(self, nbytes: int, kind: str) -> int:
        buf = ctypes.create_string_buffer(max(int(nbytes), 4))
        addr = ctypes.addressof(buf)
        self.memory[addr] = (buf, len(buf))
        self.live[addr] = kind
        return addr

    def adopt(self, addr: int, nbytes: int, kind: str) -> None:
        """Memory that another object owns and frees (pycuda's page-locked arrays, freed with
        their last view, as pycuda does)."""
        self.memory[addr] = (None, nbytes)
        self.live[addr] = kind

    def free(self, addr: int, kind: str) -> cudaError_t:
        if self.live.get(int(addr)) != kind:
            self.violations.append(f"free of {kind} memory {int(addr):#x} that is not live")
            return self.error(cudaError_t.cudaErrorInvalidValue)
        del self.live[int(addr)]
        self.freed.append(int(addr))
        return OK

    def valid(self, addr: int, nbytes: int) -> bool:
        """Whether [addr, addr + nbytes) lies in live memory (else a violation is recorded)."""
        for base, (_, size) in self.memory.items():
            if base <= addr and addr + nbytes <= base + size:
                if base in self.live:
                    return True
                self.violations.append(f"use of freed memory at {addr:#x}")
                return False
        self.violations.append(f"use of unknown memory at {addr:#x}")
        return False

    def view(self, addr: int, shape) -> np.ndarray | None:
        n = int(np.prod(shape))
        if not self.valid(int(addr), 4 * n):
            return None
        return np.ctypeslib.as_array((ctypes.c_float * n).from_address(int(addr))).reshape(shape)

    # streams
    def new_stream(self) -> int:
        h = self.handle()
        self.streams[h] = None
        return h

    def capturing(self, stream: int) -> bool:
        return self.streams.get(int(stream)) is not None

    def submit(self, stream: int, op) -> cudaError_t:
        """Run ``op`` now, or record it when the stream is capturing."""
        s = int(stream)
        if s not in self.streams:
            return self.error(cudaError_t.cudaErrorInvalidResourceHandle)
        ops = self.streams[s]
        if ops is None:
            op()
            return OK
        if s in self.invalidated:
            return self.error(cudaError_t.cudaErrorStreamCaptureInvalidated)
        ops.append(op)
        return OK

    def invalidate(self, stream: int) -> None:
        """What CUDA does to a capture when something illegal happens in it."""
        self.invalidated.add(int(stream))

    def memset(self, addr: int, value: int, nbytes: int) -> None:
        if self.valid(int(addr), nbytes):
            ctypes.memset(int(addr), value, nbytes)

    def memcpy(self, dst: int, src: int, nbytes: int) -> None:
        if self.valid(int(dst), nbytes) and self.valid(int(src), nbytes):
            ctypes.memmove(int(dst), int(src), nbytes)

    def launch(self, ops: list) -> None:
        self.graph_launches += 1
        for op in ops:
            op()

    def record_event(self, ev: int) -> None:
        self.events[ev] = time.perf_counter()


# ----------------------------------------------------------------------------
# cuda-python's runtime
# ----------------------------------------------------------------------------
class _Props:
    def __init__(self, gpu: FakeGpu):
        self.name = gpu.name.encode() + b"\x00" * 8
        self.major, self.minor = gpu.cc
        self.integrated = int(gpu.integrated)
        self.canMapHostMemory = 1


class FakeRuntime:
    """``cuda.bindings.runtime``: the calls the backend makes, as cuda-python returns them."""

    cudaError_t = cudaError_t
    cudaHostAllocDefault = 0
    cudaHostAllocMapped = 2

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
        cudaStreamCaptureModeGlobal = 0
        cudaStreamCaptureModeThreadLocal = 1
        cudaStreamCaptureModeRelaxed = 2

    class cudaStreamCaptureStatus(enum.IntEnum):  # noqa: N801
        cudaStreamCaptureStatusNone = 0
        cudaStreamCaptureStatusActive = 1
        cudaStreamCaptureStatusInvalidated = 2

    def __init__(self, gpu: FakeGpu):
        self.gpu = gpu

    def cudaSetDevice(self, device):
        return (self.gpu.call("cudaSetDevice"),)

    def cudaGetDeviceProperties(self, device):
        err = self.gpu.call("cudaGetDeviceProperties")
        return (err, _Props(self.gpu) if err == OK else None)

    def cudaGetLastError(self):
        self.gpu.call("cudaGetLastError")
        err, self.gpu.last_error = self.gpu.last_error, OK
        return (err,)

    # streams and capture
    def cudaStreamCreate(self):
        err = self.gpu.call("cudaStreamCreate")
        return (err, self.gpu.new_stream() if err == OK else None)

    def cudaStreamDestroy(self, stream):
        err = self.gpu.call("cudaStreamDestroy")
        if err == OK and self.gpu.streams.pop(int(stream), "gone") == "gone":
            err = self.gpu.error(cudaError_t.cudaErrorInvalidResourceHandle)
        return (err,)

    def cudaStreamSynchronize(self, stream):
        err = self.gpu.call("cudaStreamSynchronize")
        if err == OK and self.gpu.capturing(stream):  # illegal while capturing: it invalidates the capture
            self.gpu.invalidate(stream)
            err = self.gpu.error(cudaError_t.cudaErrorStreamCaptureUnsupported)
        return (err,)

    def cudaStreamBeginCapture(self, stream, mode):
        err = self.gpu.call("cudaStreamBeginCapture")
        if err == OK:
            if self.gpu.capturing(stream):
                err = self.gpu.error(cudaError_t.cudaErrorIllegalState)
            else:
                self.gpu.streams[int(stream)] = []
                self.gpu.capture_mode = mode
        return (err,)

    def cudaStreamIsCapturing(self, stream):
        self.gpu.call("cudaStreamIsCapturing")
        s = self.cudaStreamCaptureStatus
        if not self.gpu.capturing(stream):
            return (OK, s.cudaStreamCaptureStatusNone)
        invalid = int(stream) in self.gpu.invalidated
        return (OK, s.cudaStreamCaptureStatusInvalidated if invalid else s.cudaStreamCaptureStatusActive)

    def cudaStreamEndCapture(self, stream):
        err = self.gpu.call("cudaStreamEndCapture")
        if err != OK:
            return (err, None)
        if not self.gpu.capturing(stream):
            return (self.gpu.error(cudaError_t.cudaErrorIllegalState), None)
        ops = self.gpu.streams[int(stream)]
        self.gpu.streams[int(stream)] = None
        if int(stream) in self.gpu.invalidated:
            self.gpu.invalidated.discard(int(stream))
            return (self.gpu.error(cudaError_t.cudaErrorStreamCaptureInvalidated), None)
        g = self.gpu.handle()
        self.gpu.graphs[g] = ops
        return (OK, g)

    def cudaGraphInstantiate(self, graph, flags):
        err = self.gpu.call("cudaGraphInstantiate")
        if err != OK:
            return (err, None)
        if int(graph) not in self.gpu.graphs:
            return (self.gpu.error(cudaError_t.cudaErrorInvalidValue), None)
        e = self.gpu.handle()
        self.gpu.execs[e] = list(self.gpu.graphs[int(graph)])
        return (OK, e)

    def cudaGraphDestroy(self, graph):
        err = self.gpu.call("cudaGraphDestroy")
        if err == OK and self.gpu.graphs.pop(int(graph), None) is None:
            self.gpu.violations.append(f"cudaGraphDestroy of unknown graph {graph}")
            err = self.gpu.error(cudaError_t.cudaErrorInvalidValue)
        return (err,)

    def cudaGraphExecDestroy(self, graph_exec):
        err = self.gpu.call("cudaGraphExecDestroy")
        if err == OK and self.gpu.execs.pop(int(graph_exec), None) is None:
            self.gpu.violations.append(f"cudaGraphExecDestroy of unknown graph exec {graph_exec}")
            err = self.gpu.error(cudaError_t.cudaErrorInvalidValue)
        return (err,)

    def cudaGraphLaunch(self, graph_exec, stream):
        err = self.gpu.call("cudaGraphLaunch")
        if err == OK:
            ops = self.gpu.execs.get(int(graph_exec))
            if ops is None:
                return (self.gpu.error(cudaError_t.cudaErrorInvalidValue),)
            err = self.gpu.submit(stream, lambda: self.gpu.launch(ops))
        return (err,)

    # memory
    def cudaHostAlloc(self, nbytes, flags):
        err = self.gpu.call("cudaHostAlloc")
        return (err, self.gpu.alloc(nbytes, "host") if err == OK else None)

    def cudaHostGetDevicePointer(self, ptr, flags):
        err = self.gpu.call("cudaHostGetDevicePointer")
        return (err, int(ptr) if err == OK else None)  # one address space, as on a Jetson

    def cudaFreeHost(self, ptr):
        err = self.gpu.call("cudaFreeHost")
        return (self.gpu.free(ptr, "host") if err == OK else err,)

    def cudaMalloc(self, nbytes):
        err = self.gpu.call("cudaMalloc")
        return (err, self.gpu.alloc(nbytes, "device") if err == OK else None)

    def cudaFree(self, ptr):
        err = self.gpu.call("cudaFree")
        return (self.gpu.free(ptr, "device") if err == OK else err,)

    def cudaMemsetAsync(self, ptr, value, nbytes, stream):
        err = self.gpu.call("cudaMemsetAsync")
        if err == OK:
            err = self.gpu.submit(stream, lambda: self.gpu.memset(ptr, value, nbytes))
        return (err,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        err = self.gpu.call("cudaMemcpyAsync")
        if err == OK:
            err = self.gpu.submit(stream, lambda: self.gpu.memcpy(dst, src, nbytes))
        return (err,)

    # events
    def cudaEventCreate(self):
        err = self.gpu.call("cudaEventCreate")
        if err != OK:
            return (err, None)
        ev = self.gpu.handle()
        self.gpu.events[ev] = None
        return (OK, ev)

    def cudaEventDestroy(self, ev):
        err = self.gpu.call("cudaEventDestroy")
        if err == OK and ev not in self.gpu.events:
            err = self.gpu.error(cudaError_t.cudaErrorInvalidResourceHandle)
        self.gpu.events.pop(ev, None)
        return (err,)

    def cudaEventRecord(self, ev, stream):
        err = self.gpu.call("cudaEventRecord")
        if err == OK:
            err = self.gpu.submit(stream, lambda: self.gpu.record_event(ev))
        return (err,)

    def cudaEventElapsedTime(self, start, end):
        err = self.gpu.call("cudaEventElapsedTime")
        a, b = self.gpu.events.get(start), self.gpu.events.get(end)
        if err == OK and (a is None or b is None):
            err = self.gpu.error(cudaError_t.cudaErrorInvalidResourceHandle)
        return (err, (b - a) * 1e3 if err == OK else None)


# ----------------------------------------------------------------------------
# pycuda's driver
# ----------------------------------------------------------------------------
class FakeDriver:
    """``pycuda.driver``: memory, streams and events that need a pushed context, as pycuda's do."""

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class device_attribute(enum.IntEnum):  # noqa: N801
        INTEGRATED = 18
        CAN_MAP_HOST_MEMORY = 19

    class host_alloc_flags:  # noqa: N801
        DEVICEMAP = 2

    def __init__(self, gpu: FakeGpu):
        self.gpu = gpu
        self._stacks = threading.local()
        drv = self

        class Context:
            def __init__(self):
                self.detached = False

            def push(self):
                drv.gpu.call("push")
                drv._stack().append(self)

            @staticmethod
            def pop():
                drv.gpu.call("pop")
                stack = drv._stack()
                if not stack:
                    raise drv.LogicError("context::pop failed: invalid device context - cannot pop non-current context")
                stack.pop()

        class Device:
            def __init__(self, index):
                self.index = index

            def name(self):
                return drv.gpu.name

            def compute_capability(self):
                return drv.gpu.cc

            def get_attribute(self, attr):
                if attr == drv.device_attribute.INTEGRATED:
                    return int(drv.gpu.integrated)
                return 1

            def retain_primary_context(self):
                drv.gpu.call("retain_primary_context")
                return Context()

        class Stream:
            def __init__(self, flags=0):
                drv._need_context("Stream")
                self.handle = drv.gpu.new_stream()

            def synchronize(self):
                drv._need_context("Stream.synchronize")

            def __del__(self):  # pycuda destroys a stream with its last reference
                drv.gpu.streams.pop(self.handle, None)

        class Event:
            def __init__(self, flags=0):
                drv._need_context("Event")
                self.handle = drv.gpu.handle()
                drv.gpu.events[self.handle] = None

            def record(self, stream=None):
                drv._need_context("Event.record")
                drv.gpu.submit(stream.handle, lambda: drv.gpu.record_event(self.handle))
                return self

            def time_since(self, start):
                drv._need_context("Event.time_since")
                return (drv.gpu.events[self.handle] - drv.gpu.events[start.handle]) * 1e3

            def __del__(self):
                drv.gpu.events.pop(self.handle, None)

        class DeviceAllocation:
            def __init__(self, nbytes):
                self.ptr = drv.gpu.alloc(nbytes, "device")

            def __int__(self):
                return self.ptr

            def free(self):
                drv._need_context("DeviceAllocation.free")
                drv.gpu.free(self.ptr, "device")

        class HostAllocation(bytearray):
            freed = False

            def get_device_pointer(self):
                return self.address

            def free(self):
                drv.gpu.free(self.address, "host")
                self.freed = True

            def __del__(self):  # pycuda frees page-locked memory with its last view
                if not self.freed:
                    drv.gpu.free(self.address, "host")

        self.Context, self.Device, self.Stream, self.Event = Context, Device, Stream, Event
        self._DeviceAllocation, self._HostAllocation = DeviceAllocation, HostAllocation

    def _stack(self) -> list:
        if not hasattr(self._stacks, "s"):
            self._stacks.s = []
        return self._stacks.s

    def depth(self) -> int:
        """Contexts pushed on the calling thread (pycuda aborts at exit unless 0)."""
        return len(self._stack())

    def _need_context(self, what: str) -> None:
        self.gpu.call(what)
        if not self._stack():
            raise self.LogicError(f"{what} failed: invalid device context")

    def init(self, flags=0):
        self.gpu.call("init")

    def pagelocked_zeros(self, shape, dtype, order="C", mem_flags=0):
        self._need_context("pagelocked_zeros")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        alloc = self._HostAllocation(max(nbytes, 4))
        alloc.address = ctypes.addressof((ctypes.c_char * len(alloc)).from_buffer(alloc))
        self.gpu.adopt(alloc.address, len(alloc), "host")
        return np.ndarray(shape, dtype, buffer=alloc)

    def mem_alloc(self, nbytes):
        self._need_context("mem_alloc")
        return self._DeviceAllocation(nbytes)

    def memset_d8_async(self, ptr, value, nbytes, stream=None):
        self._need_context("memset_d8_async")
        self.gpu.submit(stream.handle, lambda: self.gpu.memset(int(ptr), value, nbytes))

    def memcpy_htod_async(self, dst, src, stream=None):
        self._need_context("memcpy_htod_async")
        self.gpu.submit(stream.handle, lambda: self.gpu.memcpy(int(dst), src.ctypes.data, src.nbytes))

    def memcpy_dtoh_async(self, dst, src, stream=None):
        self._need_context("memcpy_dtoh_async")
        self.gpu.submit(stream.handle, lambda: self.gpu.memcpy(dst.ctypes.data, int(src), dst.nbytes))


# ----------------------------------------------------------------------------
# TensorRT
# ----------------------------------------------------------------------------
class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class _ILogger:
    Severity = _Severity

    def __init__(self, min_severity=_Severity.WARNING):
        self.min_severity = min_severity

    def log(self, severity, msg):
        pass


class _Logger(_ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = tuple(_Severity)


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


def expected_output(inputs: dict[str, np.ndarray], n_states: int, k: int) -> float:
    """What every non-state output of a fake engine holds after step ``k`` from zero state."""
    return sum(float(np.mean(x, dtype=np.float64)) for x in inputs.values()) + n_states * k


class FakeTensorRT:
    """The ``tensorrt`` module, version ``version``; ``strong_only`` is TensorRT 11's builder
    (no FP16/INT8 flags: every network strongly typed); ``strong_flag=False`` is TensorRT
    8.6's (no STRONGLY_TYPED network flag).

    ``capture_failure``: what an engine does when enqueued on a capturing stream:
    ``None`` (captures fine), ``"false"`` (``execute_async_v3`` returns False) or
    ``"invalidate"`` (the capture becomes invalid, as when an illegal call is made in it).
    ``edit_plan``: a function applied to each plan's tensor list when it is built
    (to build a plan that does not fit the manifest).
    """

    ILogger = _ILogger
    Logger = _Logger
    TensorIOMode = TensorIOMode
    DataType = DataType

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    def __init__(self, gpu: FakeGpu, version: str = "10.3.0", strong_only: bool = False, strong_flag: bool = True):
        self.gpu = gpu
        self.__version__ = version
        self.capture_failure: str | None = None
        self.edit_plan = None
        self.built: list[dict] = []
        self.engines: list = []
        if strong_only:
            self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
            self.BuilderFlag = enum.IntEnum("BuilderFlag", {"TF32": 1, "REFIT": 2})
        else:
            creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if strong_flag else {"EXPLICIT_BATCH": 0}
            self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
            self.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "TF32": 7, "REFIT": 2})
        trt = self

        class Runtime:
            def __init__(self, logger):
                self.logger = logger

            def deserialize_cuda_engine(self, data):
                try:
                    plan = json.loads(bytes(data))
                except (ValueError, UnicodeDecodeError):
                    return None
                if plan.get("tensorrt") != trt.__version__:
                    return None  # TensorRT refuses a plan from another version
                engine = _Engine(trt, plan)
                trt.engines.append(engine)
                return engine

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0

            def parse(self, data):
                import onnx

                proto = onnx.load_from_string(bytes(data))
                dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
                self.network.tensors = (
                    [[i.name, "INPUT", dims(i), "FLOAT"] for i in proto.graph.input]
                    + [[o.name, "OUTPUT", dims(o), "FLOAT"] for o in proto.graph.output]
                )
                return True

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags=0):
                return _Network(flags)

            def create_builder_config(self):
                return _Config(trt)

            def build_serialized_network(self, network, config):
                tensors = network.tensors if trt.edit_plan is None else trt.edit_plan(network.tensors)
                plan = {"tensorrt": trt.__version__, "tensors": tensors, "network_flags": network.flags,
                        "flags": sorted(f.name for f in config.flags)}
                trt.built.append(plan)
                return json.dumps(plan).encode()

        self.Runtime, self.OnnxParser, self.Builder = Runtime, OnnxParser, Builder


class _Network:
    def __init__(self, flags):
        self.flags = flags
        self.tensors: list = []


class _Config:
    def __init__(self, trt: FakeTensorRT):
        self.flags = {trt.BuilderFlag.TF32} if hasattr(trt.BuilderFlag, "TF32") else set()  # TensorRT's default
        self.pool: dict = {}

    def set_memory_pool_limit(self, pool, nbytes):
        self.pool[pool] = nbytes

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)


class _Engine:
    def __init__(self, trt: FakeTensorRT, plan: dict):
        self.trt = trt
        self.tensors = {name: (TensorIOMode[mode], tuple(shape), DataType[dtype]) for name, mode, shape, dtype in plan["tensors"]}
        self.names = [t[0] for t in plan["tensors"]]
        self.contexts: list = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str):
        return self.tensors[name][0]

    def get_tensor_shape(self, name: str):
        return self.tensors[name][1]

    def get_tensor_dtype(self, name: str):
        return self.tensors[name][2]

    def create_execution_context(self):
        ctx = _Context(self)
        self.contexts.append(ctx)
        return ctx


class _Context:
    def __init__(self, engine: _Engine):
        self.engine = engine
        self.addresses: dict[str, int] = {}

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        trt, gpu = self.engine.trt, self.engine.trt.gpu
        gpu.calls.append((threading.current_thread().name, "execute_async_v3"))
        if gpu.capturing(stream):
            if trt.capture_failure == "false":
                return False
            if trt.capture_failure == "invalidate":
                gpu.invalidate(stream)
                return True
        bound = dict(self.addresses)  # a graph keeps the addresses bound when it was captured
        return gpu.submit(stream, lambda: self._step(bound)) == OK

    def _step(self, bound: dict[str, int]) -> None:
        gpu, tensors = self.engine.trt.gpu, self.engine.tensors
        if set(bound) != set(tensors):
            gpu.violations.append(f"step with tensors {sorted(set(tensors) - set(bound))} unbound")
            return
        views = {n: gpu.view(bound[n], tensors[n][1]) for n in tensors}
        if any(v is None for v in views.values()):
            return
        plain_in = [n for n, t in tensors.items() if t[0] == TensorIOMode.INPUT and not n.startswith("state_in_")]
        states = sorted(n for n in tensors if n.startswith("state_in_"))
        value = sum(float(np.mean(views[n], dtype=np.float64)) for n in plain_in)
        value += sum(float(views[s].flat[0]) for s in states)
        for s in states:
            views["state_out_" + s[len("state_in_"):]][...] = views[s] + 1.0
        for n, t in tensors.items():
            if t[0] == TensorIOMode.OUTPUT and not n.startswith("state_out_"):
                views[n][...] = value
