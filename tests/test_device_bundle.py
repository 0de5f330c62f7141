"""The device's bundle reader (docs/bundle.md) and its backends.

Most tests use a hand-written bundle: a manifest and two small ONNX graphs
made with ``onnx.helper`` (no torch), with the format-1 I/O names and a state
that counts calls, so the reader's rules and the backends' state handling are
checked on something whose every number is known.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wavae.device.backends import BackendError, make_backend
from wavae.device.backends.tensorrt import gpu_present
from wavae.device.bundle import BundleError, graph_contract, load_bundle

B, FRAME, D, RATE = 8, 4, 3, 16000
NF = B // FRAME


def _encoder_graph():
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Reshape", ["audio", "shape4"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[3], keepdims=0),  # [1, 1, NF]: frame means
        helper.make_node("Expand", ["m", "zshape"], ["z_mean"]),
        helper.make_node("Abs", ["z_mean"], ["z_std"]),
        helper.make_node("Identity", ["m"], ["loudness"]),
        helper.make_node("Add", ["state_in_0", "one"], ["state_out_0"]),  # counts calls
    ]
    inits = [
        helper.make_tensor("shape4", TensorProto.INT64, [4], [1, 1, NF, FRAME]),
        helper.make_tensor("zshape", TensorProto.INT64, [3], [1, D, NF]),
        helper.make_tensor("one", f, [1], [1.0]),
    ]
    g = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("audio", f, [1, 1, B]), helper.make_tensor_value_info("state_in_0", f, [1, 1, 3])],
        [
            helper.make_tensor_value_info("z_mean", f, [1, D, NF]),
            helper.make_tensor_value_info("z_std", f, [1, D, NF]),
            helper.make_tensor_value_info("loudness", f, [1, 1, NF]),
            helper.make_tensor_value_info("state_out_0", f, [1, 1, 3]),
        ],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _decoder_graph():
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("ReduceMean", ["z"], ["zm"], axes=[1], keepdims=1),  # [1, 1, NF]
        helper.make_node("Add", ["zm", "loudness"], ["s"]),
        helper.make_node("Reshape", ["s", "shape4"], ["s4"]),
        helper.make_node("Expand", ["s4", "eshape"], ["e"]),
        helper.make_node("Reshape", ["e", "ashape"], ["audio"]),
        helper.make_node("Add", ["state_in_0", "two"], ["state_out_0"]),
    ]
    inits = [
        helper.make_tensor("shape4", TensorProto.INT64, [4], [1, 1, NF, 1]),
        helper.make_tensor("eshape", TensorProto.INT64, [4], [1, 1, NF, FRAME]),
        helper.make_tensor("ashape", TensorProto.INT64, [3], [1, 1, B]),
        helper.make_tensor("two", f, [1], [2.0]),
    ]
    g = helper.make_graph(
        nodes,
        "decoder",
        [
            helper.make_tensor_value_info("z", f, [1, D, NF]),
            helper.make_tensor_value_info("loudness", f, [1, 1, NF]),
            helper.make_tensor_value_info("state_in_0", f, [2]),
        ],
        [helper.make_tensor_value_info("audio", f, [1, 1, B]), helper.make_tensor_value_info("state_out_0", f, [2])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def make_fake_bundle(d: Path) -> Path:
    import onnx

    d.mkdir(parents=True)
    onnx.save(_encoder_graph(), str(d / "encoder.onnx"))
    onnx.save(_decoder_graph(), str(d / "decoder.onnx"))

    def io(name, shape):
        return {"name": name, "shape": shape, "dtype": "float32"}

    manifest = {
        "format": "wavae-bundle",
        "format_version": 1,
        "sample_rate": RATE,
        "block": B,
        "frame": FRAME,
        "latent_dim": D,
        "latency_samples": FRAME,
        "precision": "fp32",
        "opset": 17,
        "graphs": {
            "encoder": {
                "file": "encoder.onnx",
                "inputs": [io("audio", [1, 1, B])],
                "outputs": [io("z_mean", [1, D, NF]), io("z_std", [1, D, NF]), io("loudness", [1, 1, NF])],
                "states": [{"input": "state_in_0", "output": "state_out_0", "shape": [1, 1, 3], "dtype": "float32"}],
            },
            "decoder": {
                "file": "decoder.onnx",
                "inputs": [io("z", [1, D, NF]), io("loudness", [1, 1, NF])],
                "outputs": [io("audio", [1, 1, B])],
                "states": [{"input": "state_in_0", "output": "state_out_0", "shape": [2], "dtype": "float32"}],
            },
        },
        "files": {},
    }
    for name in ("encoder.onnx", "decoder.onnx"):
        data = (d / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return d


@pytest.fixture
def fake(tmp_path) -> Path:
    return make_fake_bundle(tmp_path / "fake")


def edit_manifest(bundle: Path, fn) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_reads_a_valid_bundle(fake):
    b = load_bundle(fake)
    assert (b.sample_rate, b.block, b.frame, b.latent_dim, b.latency_samples, b.precision) == (RATE, B, FRAME, D, FRAME, "fp32")
    assert b.frames_per_block == NF and b.path == fake
    enc = b.graph("encoder")
    assert enc.input_names == ["audio", "state_in_0"]
    assert enc.output_names == ["z_mean", "z_std", "loudness", "state_out_0"]
    assert b.graph("decoder").states[0].shape == (2,)
    with pytest.raises(BundleError, match="no graph 'vocoder'"):
        b.graph("vocoder")


def test_graph_contract_is_what_the_manifest_lists_and_the_reader_returns(fake):
    """One definition of the graph I/O: written as the manifest's graphs, read back whole."""
    contract = graph_contract(B, FRAME, D, {"encoder": [(1, 1, 3)], "decoder": [(2,)]}, root=fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    assert {g: info.manifest_entry(fake) for g, info in contract.items()} == manifest["graphs"]
    assert load_bundle(fake).graphs == contract


@pytest.mark.parametrize("io_binding", [True, False])
def test_onnxruntime_backend_runs_steps_and_feeds_state_back(fake, io_binding):
    b = load_bundle(fake)
    be = make_backend(b, "onnxruntime", threads=1, io_binding=io_binding)
    state = be.init_state("encoder")
    audio = np.arange(B, dtype=np.float32).reshape(1, 1, B)
    for step in range(1, 6):
        outs, state = be.process("encoder", {"audio": audio}, state)
        np.testing.assert_array_equal(state[0], np.full((1, 1, 3), step, np.float32))  # state_out -> state_in
    np.testing.assert_allclose(outs["z_mean"][0, :, 0], [1.5] * D)  # mean of 0..3
    np.testing.assert_allclose(outs["loudness"][0, 0], [1.5, 5.5])
    dstate = be.init_state("decoder")
    outs, dstate = be.process("decoder", {"z": np.ones((1, D, NF), np.float32), "loudness": np.zeros((1, 1, NF), np.float32)}, dstate)
    np.testing.assert_allclose(outs["audio"].ravel(), np.ones(B))
    np.testing.assert_array_equal(dstate[0], [2.0, 2.0])
    # a fresh zero state starts the count again
    _, s = be.process("encoder", {"audio": audio}, be.init_state("encoder"))
    np.testing.assert_array_equal(s[0], np.ones((1, 1, 3)))


def test_onnxruntime_backend_writes_in_place(fake):
    """With I/O binding the engine writes inputs into the backend's buffers: no copy per step."""
    be = make_backend(load_bundle(fake), "onnxruntime")
    buf = be.input_buffers("encoder")
    buf["audio"][...] = 2.0
    state = be.init_state("encoder")
    outs, state2 = be.process("encoder", buf, state)
    assert state2 is not state  # the other state set
    outs2, state3 = be.process("encoder", buf, state2)
    assert state3 is state and outs2 is outs  # the two sets alternate; outputs are reused buffers
    np.testing.assert_allclose(outs2["z_mean"], 2.0)


def test_real_tiny_bundle_matches_the_desktop_streamer(tiny_bundle):
    from wavae.quantize.bundle import BundleStreamer

    b = load_bundle(tiny_bundle)
    be = make_backend(b, "onnxruntime")
    ref = BundleStreamer(tiny_bundle)
    rng = np.random.default_rng(0)
    es, ds = be.init_state("encoder"), be.init_state("decoder")
    for _ in range(4):
        x = (0.1 * rng.standard_normal(b.block)).astype(np.float32)
        eo, es = be.process("encoder", {"audio": x.reshape(1, 1, -1)}, es)
        do, ds = be.process("decoder", {"z": eo["z_mean"], "loudness": eo["loudness"]}, ds)
        np.testing.assert_allclose(do["audio"].ravel(), ref.process(x), atol=1e-6)


# ---------------------------------------------------------------------------- refusals
def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist; export one with `wavae export`"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")


def test_corrupt_file_fails_its_checksum(fake):
    p = fake / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decoder.onnx fails its checksum .* re-copy or re-export"):
        load_bundle(fake)


def test_truncated_and_missing_files(fake):
    p = fake / "encoder.onnx"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(BundleError, match="bytes but the manifest says"):
        load_bundle(fake)
    p.unlink()
    with pytest.raises(BundleError, match="is missing encoder.onnx"):
        load_bundle(fake)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(format_version=2), "format version 2, but this wavae reads version 1"),
    (lambda m: m.update(format="something"), "not a wavae bundle"),
    (lambda m: m.update(block=6), "not a multiple of the latent frame"),
    (lambda m: m.update(precision="int4"), "precision 'int4'"),
    (lambda m: m.pop("latent_dim"), "'latent_dim' must be an integer"),
    (lambda m: m["graphs"]["encoder"]["states"][0].update(input="h0"), "not state_in_0/state_out_0"),
    (lambda m: m["graphs"]["decoder"]["outputs"][0].update(name="wave"), "is not the format-1"),
    (lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape=[1, D, 5]), "expected \\[1, 3, 2\\]"),
    (lambda m: m["files"].update({"../evil": {"sha256": "0"}}), "outside the bundle"),
    (lambda m: m["files"].pop("decoder.onnx"), "has no entry in 'files'"),
])
def test_manifest_refusals(fake, edit, match):
    edit_manifest(fake, edit)
    with pytest.raises(BundleError, match=match):
        load_bundle(fake)


def test_graph_disagreeing_with_manifest_is_refused(fake):
    # a manifest that lies about a state shape: the file checks pass, the runtime check does not
    edit_manifest(fake, lambda m: m["graphs"]["encoder"]["states"][0].update(shape=[1, 1, 4]))
    with pytest.raises(BundleError, match="state_in_0 has shape \\[1, 1, 3\\] in the graph"):
        make_backend(load_bundle(fake), "onnxruntime")


def test_unreadable_onnx_is_a_bundle_error(fake):
    (fake / "encoder.onnx").write_bytes(b"not a model at all")
    edit_manifest(fake, lambda m: m["files"]["encoder.onnx"].update(bytes=18))
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        make_backend(load_bundle(fake, verify=False), "onnxruntime")


# ---------------------------------------------------------------------------- TensorRT
@pytest.mark.skipif(gpu_present()[0], reason="this machine has an NVIDIA GPU: the no-GPU refusal cannot be shown")
def test_tensorrt_refused_without_gpu_and_never_imported(fake):
    with pytest.raises(BackendError, match="needs an NVIDIA GPU .* Use --backend onnxruntime"):
        make_backend(load_bundle(fake), "tensorrt")
    assert "tensorrt" not in sys.modules


def test_unknown_backend(fake):
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        make_backend(load_bundle(fake), "cuda")
