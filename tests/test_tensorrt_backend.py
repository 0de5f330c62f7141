"""The TensorRT backend on machines without a GPU: its own code, with fakes of the
modules underneath it (``tensorrt``, ``cuda.bindings.runtime``, ``pycuda.driver``;
tests/gpu_fakes.py), and the real thing on a Jetson (skipped elsewhere).

Plans come from ``wavae engine``'s own build code run against the fake TensorRT,
so the fingerprint the backend checks is the one the builder wrote.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import threading

import numpy as np
import pytest

from gpu_fakes import FakeDriver, FakeGpu, FakeRuntime, FakeTensorRT, expected_output
from wavae.device.backends import BackendError
from wavae.device.backends.cuda import CudaPython, PyCuda, gpu_present
from wavae.device.backends.tensorrt import FINGERPRINT, TensorRTBackend
from wavae.device.bundle import BundleError, load_bundle
from wavae.quantize.tensorrt import build_bundle_engines

BINDINGS = ("cuda-python", "pycuda")


class Rig:
    """A fake GPU with both bindings' modules and a fake TensorRT over it."""

    def __init__(self, integrated: bool = True, version: str = "10.3.0"):
        self.gpu = FakeGpu(integrated=integrated)
        self.trt = FakeTensorRT(self.gpu, version=version)
        self.runtime = FakeRuntime(self.gpu)
        self.driver = FakeDriver(self.gpu)

    def binding(self, name: str):
        return CudaPython(self.runtime) if name == "cuda-python" else PyCuda(self.driver)

    def backend(self, bundle, binding: str = "cuda-python", **kw) -> TensorRTBackend:
        return TensorRTBackend(bundle, tensorrt=self.trt, cuda=self.binding(binding), **kw)

    def build(self, path, **kw):
        return build_bundle_engines(path, tensorrt=self.trt, gpu=self.gpu.info(), **kw)

    def balanced(self) -> bool:
        """Everything the backend held on the GPU is released: no device memory, stream,
        event, graph or exec left, no capture open, pycuda's context stack empty."""
        g = self.gpu
        return (
            not [a for a, kind in g.live.items() if kind == "device"]
            and not g.streams and not g.events and not g.graphs and not g.execs
            and self.driver.depth() == 0
            and g.count("push") == g.count("pop")
        )


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    d = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, d)
    return d


@pytest.fixture
def rig():
    return Rig()


@pytest.fixture
def built(rig, bundle_dir):
    rig.build(bundle_dir)
    return load_bundle(bundle_dir)


def _stream(be, bundle, steps: int, rng) -> None:
    """Encoder then decoder per block, each output checked against the fake engine's arithmetic."""
    es, ds = be.init_state("encoder"), be.init_state("decoder")
    n_enc, n_dec = len(bundle.graphs["encoder"].states), len(bundle.graphs["decoder"].states)
    for k in range(steps):
        x = rng.standard_normal((1, 1, bundle.block)).astype(np.float32)
        eo, es2 = be.process("encoder", {"audio": x}, es)
        assert es2 is not es  # the other state set
        es = es2
        want = expected_output({"audio": x}, n_enc, k)
        for name, arr in eo.items():
            np.testing.assert_allclose(arr, want, rtol=1e-5, err_msg=f"encoder {name}, step {k}")
        feeds = {"z": eo["z_mean"].copy(), "loudness": eo["loudness"].copy()}
        do, ds = be.process("decoder", feeds, ds)
        np.testing.assert_allclose(do["audio"], expected_output(feeds, n_dec, k), rtol=1e-5,
                                   err_msg=f"decoder audio, step {k}")


# ---------------------------------------------------------------------------- steps
@pytest.mark.parametrize("integrated", [True, False], ids=["zero-copy", "discrete"])
@pytest.mark.parametrize("binding,cuda_graph", [
    ("cuda-python", False), ("cuda-python", True), ("cuda-python", None), ("pycuda", False), ("pycuda", None),
])
def test_both_graphs_step_through_both_state_sets(tiny_bundle, tmp_path, binding, cuda_graph, integrated):
    rig = Rig(integrated=integrated)
    shutil.copytree(tiny_bundle, tmp_path / "b")
    rig.build(tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    with rig.backend(bundle, binding, cuda_graph=cuda_graph) as be:
        launches = rig.gpu.graph_launches
        enqueues = rig.gpu.count("execute_async_v3")
        _stream(be, bundle, 5, np.random.default_rng(0))
        assert be.last_gpu_ms is not None and be.last_gpu_ms >= 0.0
        if cuda_graph:
            assert be.cuda_graph is True
            assert rig.gpu.graph_launches - launches == 10  # every step a graph launch, both parities
            assert rig.gpu.count("execute_async_v3") == enqueues
        if binding == "pycuda":
            assert be.cuda_graph is False and rig.gpu.graph_launches == 0
    assert rig.gpu.violations == []
    assert rig.balanced()


# ---------------------------------------------------------------------------- CUDA graph capture
@pytest.mark.parametrize("failure", ["enqueue returns false", "capture invalidated", "instantiation fails"])
def test_a_failed_capture_is_ended_and_the_next_steps_run_without_graphs(rig, built, failure, caplog):
    if failure == "enqueue returns false":
        rig.trt.capture_failure = "false"
    elif failure == "capture invalidated":
        rig.trt.capture_failure = "invalidate"
    else:
        rig.gpu.fail["cudaGraphInstantiate"] = 1
    with caplog.at_level(logging.WARNING, logger="wavae.device.backends.tensorrt"):
        be = rig.backend(built, cuda_graph=None)
    assert be.cuda_graph is False
    assert "CUDA graph capture failed" in caplog.text
    gpu = rig.gpu
    assert gpu.count("cudaStreamBeginCapture") == gpu.count("cudaStreamEndCapture") >= 1
    assert not any(gpu.capturing(s) for s in gpu.streams)  # the stream left capture mode
    assert gpu.graphs == {} and gpu.execs == {}  # partial and instantiated graphs destroyed
    last_end = max(i for i, (_, c) in enumerate(gpu.calls) if c == "cudaStreamEndCapture")
    assert any(c == "cudaGetLastError" for _, c in gpu.calls[last_end:])  # the error cleared
    launches = gpu.graph_launches
    _stream(be, built, 4, np.random.default_rng(1))  # steps run, and compute, without graphs
    assert gpu.graph_launches == launches
    be.close()
    assert gpu.violations == [] and rig.balanced()


def test_a_failed_capture_of_the_second_parity_destroys_the_first(rig, built):
    # the encoder's parity 0 captures, its parity 1 fails: the parity-0 graph must not leak
    original = rig.runtime.cudaStreamBeginCapture
    calls = []

    def begin(stream, mode):
        calls.append(1)
        if len(calls) == 2:
            rig.trt.capture_failure = "false"
        return original(stream, mode)

    rig.runtime.cudaStreamBeginCapture = begin
    be = rig.backend(built, cuda_graph=None)
    assert be.cuda_graph is False and rig.gpu.execs == {} and rig.gpu.graphs == {}
    assert rig.gpu.count("cudaGraphExecDestroy") == 1
    be.close()
    assert rig.balanced()


def test_forced_graphs_that_cannot_be_captured_are_refused_and_everything_released(rig, built):
    rig.trt.capture_failure = "false"
    with pytest.raises(BackendError, match="CUDA graph capture failed"):
        rig.backend(built, cuda_graph=True)
    assert rig.balanced() and rig.gpu.violations == []


def test_pycuda_refuses_forced_graphs_and_names_cuda_python(rig, built):
    with pytest.raises(BackendError, match=r"cuda_graph=True cannot be honoured: pycuda has no stream capture; "
                                            r"CUDA graphs need cuda-python \(`pip install cuda-python`\)"):
        rig.backend(built, "pycuda", cuda_graph=True)
    assert rig.balanced()


def test_pycuda_turns_graphs_off_with_a_logged_reason(rig, built, caplog):
    with caplog.at_level(logging.INFO, logger="wavae.device.backends.tensorrt"):
        with rig.backend(built, "pycuda") as be:
            assert be.cuda_graph is False
    assert "CUDA graphs off: pycuda has no stream capture" in caplog.text
    assert rig.gpu.count("cudaStreamBeginCapture") == 0


# ---------------------------------------------------------------------------- contexts and threads
def test_pycuda_context_stack_is_empty_after_every_call(rig, built):
    drv = rig.driver
    be = rig.backend(built, "pycuda")
    assert drv.depth() == 0
    state = be.init_state("encoder")
    assert drv.depth() == 0
    be.process("encoder", {}, state)
    assert drv.depth() == 0
    be.describe()
    be.close()
    be.close()
    assert drv.depth() == 0 and rig.gpu.count("push") == rig.gpu.count("pop") > 0
    assert rig.balanced()


def test_a_pycuda_error_while_opening_is_a_backend_error_with_nothing_pushed(rig):
    def no_stream(flags=0):
        rig.driver._need_context("Stream")
        raise rig.driver.LogicError("cuStreamCreate failed: out of memory")

    rig.driver.Stream = no_stream
    with pytest.raises(BackendError, match="CUDA \\(pycuda\\) failed: cuStreamCreate failed: out of memory"):
        PyCuda(rig.driver)
    assert rig.driver.depth() == 0 and rig.gpu.count("push") == rig.gpu.count("pop") == 1


@pytest.mark.parametrize("binding", BINDINGS)
def test_steps_on_the_inference_thread_make_the_context_current_there(rig, built, binding):
    be = rig.backend(built, binding)
    errors = []

    def worker():
        try:
            _stream(be, built, 3, np.random.default_rng(2))  # init_state (a memset) and steps
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=worker, name="wavae-inference")
    t.start()
    t.join(30)
    assert errors == []
    gpu = rig.gpu
    if binding == "pycuda":  # the fake raises "invalid device context" on a thread with nothing pushed
        assert gpu.count("push", "wavae-inference") == gpu.count("pop", "wavae-inference") > 0
        assert gpu.count("memset_d8_async", "wavae-inference") > 0
    else:  # the runtime binds the primary context once the device is set on that thread
        first_set = gpu.calls.index(("wavae-inference", "cudaSetDevice"))
        first_use = min(i for i, (t_, c) in enumerate(gpu.calls) if t_ == "wavae-inference" and c != "cudaSetDevice")
        assert first_set < first_use
        assert gpu.count("cudaSetDevice", "wavae-inference") == 1
    be.close()
    assert rig.balanced()


# ---------------------------------------------------------------------------- plans that do not fit
def _edit(tensors, tensor, **change):
    out = []
    for t in tensors:
        if t[0] == tensor:
            t = [change.get("name", t[0]), change.get("mode", t[1]), change.get("shape", t[2]), change.get("dtype", t[3])]
        out.append(t)
    return out


@pytest.mark.parametrize("binding", BINDINGS)
@pytest.mark.parametrize("edit,match", [
    (lambda ts: _edit(ts, "audio", shape=[1, 1, 99]), r"audio has shape \[1, 1, 99\] in the plan, \[1, 1, \d+\] in the manifest"),
    (lambda ts: _edit(ts, "state_in_0", dtype="HALF"), "state_in_0 is HALF in the plan; bundle I/O is float32"),
    (lambda ts: _edit(ts, "z_std", mode="INPUT"), "z_std is an input in the plan, an output in the manifest"),
    (lambda ts: _edit(ts, "loudness", name="loud"), r"has tensors \[.*'loud'.*\], the manifest lists"),
], ids=["block size", "dtype", "direction", "name"])
def test_a_plan_whose_tensors_differ_from_the_manifest_is_refused(rig, bundle_dir, binding, edit, match):
    rig.trt.edit_plan = lambda ts: edit(ts) if any(t[0] == "audio" and t[1] == "INPUT" for t in ts) else ts
    rig.build(bundle_dir)
    with pytest.raises(BundleError, match=match) as e:
        rig.backend(load_bundle(bundle_dir), binding)
    assert f"wavae engine {bundle_dir} --force" in str(e.value)
    assert rig.balanced()


# ---------------------------------------------------------------------------- fingerprint
@pytest.mark.parametrize("change,match", [
    ("tensorrt", "TensorRT 10.3.0 when built, 10.4.1 here"),
    ("gpu", r"GPU Orin \(fake\) when built, Xavier \(fake\) here; compute capability 8.7 when built, 7.2 here"),
    ("onnx", r"the bundle's ONNX graphs changed since \(re-exported\)"),
    ("plan bytes", "encoder.fp32.plan does not match its sha256 in fingerprint.json"),
    ("no fingerprint", "no fingerprint was recorded for them"),
])
def test_plans_built_elsewhere_are_refused_until_wavae_engine_rebuilds_them(rig, bundle_dir, change, match):
    rig.build(bundle_dir)
    engines = bundle_dir / "engines"
    there = rig
    if change == "tensorrt":  # JetPack upgraded
        there = Rig(version="10.4.1")
    elif change == "gpu":  # the bundle carried to another board
        there = Rig()
        there.gpu.name, there.gpu.cc = "Xavier (fake)", (7, 2)
    elif change == "onnx":  # fingerprint from an earlier export of the bundle
        record = json.loads((engines / FINGERPRINT).read_text())
        record["fp32"]["fingerprint"]["onnx_sha256"]["encoder"] = "0" * 64
        (engines / FINGERPRINT).write_text(json.dumps(record))
    elif change == "plan bytes":
        plan = engines / "encoder.fp32.plan"
        plan.write_bytes(plan.read_bytes().replace(b"10.3.0", b"10.3.1"))
    else:
        (engines / FINGERPRINT).unlink()
    bundle = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match=match) as e:
        there.backend(bundle)
    assert f"Rebuild them here: `wavae engine {bundle_dir}`" in str(e.value)
    assert there.balanced()
    assert there.build(bundle_dir)["rebuilt"] is True  # what the message says to run
    with there.backend(bundle) as be:
        _stream(be, bundle, 2, np.random.default_rng(3))


def test_a_stale_precision_is_skipped_for_one_that_runs_here(bundle_dir, caplog):
    old = Rig(version="10.2.0")
    old.build(bundle_dir, fp16=True)  # fp16 plans from before a JetPack upgrade
    rig = Rig()
    rig.build(bundle_dir)  # fp32 plans rebuilt since
    bundle = load_bundle(bundle_dir)
    with caplog.at_level(logging.WARNING, logger="wavae.device.backends.tensorrt"):
        with rig.backend(bundle) as be:
            assert be.precision == "fp32"
    assert "skipping the fp16 TensorRT plans (TensorRT 10.2.0 when built, 10.3.0 here)" in caplog.text
    with pytest.raises(BundleError, match=rf"Rebuild them here: `wavae engine {bundle_dir} --fp16`"):
        rig.backend(bundle, precision="fp16")


def test_no_plans_names_the_command_that_builds_them(rig, bundle_dir):
    with pytest.raises(BundleError, match=rf"no TensorRT plans in .*engines; build them on this Jetson: "
                                          rf"`wavae engine {bundle_dir}` \(add --fp16 for half precision\)"):
        rig.backend(load_bundle(bundle_dir))
    assert rig.balanced()


def test_a_plan_tensorrt_cannot_load_is_refused_and_everything_released(rig, bundle_dir):
    rig.build(bundle_dir)
    plan = bundle_dir / "engines" / "decoder.fp32.plan"
    plan.write_bytes(b"not a plan")
    record = json.loads((bundle_dir / "engines" / FINGERPRINT).read_text())
    record["fp32"]["plan_sha256"]["decoder"] = hashlib.sha256(b"not a plan").hexdigest()
    (bundle_dir / "engines" / FINGERPRINT).write_text(json.dumps(record))
    for binding in BINDINGS:
        with pytest.raises(BundleError, match=r"could not load .*decoder.fp32.plan although its fingerprint matches"):
            rig.backend(load_bundle(bundle_dir), binding)
        assert rig.balanced()


# ---------------------------------------------------------------------------- closing
def test_close_twice_and_memory_the_engine_still_views(rig, built):
    be = rig.backend(built)
    audio = be.input_buffers("encoder")["audio"]  # the engine writes blocks here in place
    out = be.process("encoder", {}, be.init_state("encoder"))[0]["z_mean"]
    held = {audio.ctypes.data, out.ctypes.data}
    be.close()
    be.close()
    assert rig.gpu.violations == []  # nothing freed twice
    assert rig.balanced()  # device memory, events, stream, graphs: released
    assert held.isdisjoint(rig.gpu.freed)  # host buffers still viewed are not freed ...
    audio[...] = 1.0  # ... and still writable
    with pytest.raises(BackendError, match="the TensorRT backend is closed"):
        be.process("encoder", {}, [])
    del audio, out, be
    gc.collect()
    assert held <= set(rig.gpu.freed)  # ... until the last view is gone


@pytest.mark.parametrize("binding", BINDINGS)
def test_a_binding_closed_twice_frees_once(rig, binding):
    cuda = rig.binding(binding)
    with cuda.current():
        cuda.device(64)
        cuda.event()
    cuda.close()
    cuda.close()
    assert rig.gpu.violations == [] and rig.balanced()


def test_close_twice_with_pycuda_pops_nothing_it_did_not_push(rig, built):
    be = rig.backend(built, "pycuda")
    be.close()
    be.close()  # pycuda raises on a pop of an empty stack: this must not reach it
    assert rig.driver.depth() == 0 and rig.gpu.count("push") == rig.gpu.count("pop")


# ---------------------------------------------------------------------------- a real GPU
HAS_GPU = gpu_present()[0]


def _tensorrt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None  # looks, does not import


NO_GPU_REASON = (
    "no NVIDIA GPU with a CUDA driver here; TensorRT is never touched without one" if not HAS_GPU
    else "TensorRT's Python bindings are not installed (they come with JetPack)"
)


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_GPU and _tensorrt_importable()), reason=NO_GPU_REASON)
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["plain", "graph"])
def test_tensorrt_backend_matches_onnxruntime(tiny_bundle, tmp_path, cuda_graph):  # pragma: no cover - on a Jetson
    from wavae.device.backends import make_backend

    shutil.copytree(tiny_bundle, tmp_path / "b")
    build_bundle_engines(tmp_path / "b")
    b = load_bundle(tmp_path / "b")
    rng = np.random.default_rng(0)
    with make_backend(b, "tensorrt", cuda_graph=cuda_graph) as trt_be, make_backend(b, "onnxruntime") as ort_be:
        assert trt_be.cuda_graph is cuda_graph
        states = {be: {g: be.init_state(g) for g in ("encoder", "decoder")} for be in (trt_be, ort_be)}
        for _ in range(6):  # both state parities, three times
            x = (0.1 * rng.standard_normal((1, 1, b.block))).astype(np.float32)
            enc = {}
            for be in (trt_be, ort_be):
                enc[be], states[be]["encoder"] = be.process("encoder", {"audio": x}, states[be]["encoder"])
            for name, want in enc[ort_be].items():
                np.testing.assert_allclose(enc[trt_be][name], want, rtol=2e-4, atol=1e-4, err_msg=f"encoder {name}")
            feeds = {"z": enc[ort_be]["z_mean"].copy(), "loudness": enc[ort_be]["loudness"].copy()}
            dec = {}
            for be in (trt_be, ort_be):
                dec[be], states[be]["decoder"] = be.process("decoder", feeds, states[be]["decoder"])
            np.testing.assert_allclose(dec[trt_be]["audio"], dec[ort_be]["audio"], rtol=2e-4, atol=1e-4,
                                       err_msg="decoder audio")
