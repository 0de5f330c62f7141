"""INT8 / FP16 bundles, the export and verify commands, and the bundle's refusals.

The INT8 threshold
------------------
On the `tiny` run briefly trained by the `trained_tiny_run` fixture (and on runs
trained 40 and 160 steps the same way), int8 against fp32 on held-out generated
audio measured:

* SNR 20.2 - 22.1 dB (symmetric int8 activations, output conv kept float);
* log-mel distance 0.004 - 0.007, while the fp32 model's own log-mel distance
  from its input is 0.77 - 0.94: int8 adds under 1% of the model's error.

The test asks for SNR >= 15 dB (5 dB under the worst measurement) and an int8
mel distance under 5% of the model's own: it fails if quantisation gets several
times worse (a lost per-channel scale, a quantised state, a bad calibration),
not on training noise.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from conftest import synth_audio
from wavae.cli import main as wavae_main
from wavae.errors import WavaeError
from wavae.device.bundle import BundleError, MANIFEST
from wavae.quantize.bundle import BundleStreamer, graph_opset, verify_bundle_files
from wavae.quantize.export import export_bundle
from wavae.quantize.int8 import CalibrationError, check_state_float
from wavae.quantize.lower import dft_factors
from wavae.quantize.verify import bundle_macs, compare
from wavae.train.checkpoint import load_run
from wavae.train.config import resolve
from wavae.train.factory import build_model

torch.set_num_threads(1)

INT8_MIN_SNR_DB = 15.0
INT8_MAX_MEL_FRACTION = 0.05


@pytest.fixture(scope="module")
def exported(trained_tiny_run, tmp_path_factory):
    """fp32 and int8 bundles of the trained tiny run, written by `wavae export`
    (int8 calibrated on the run's own training folder)."""
    d = tmp_path_factory.mktemp("exported")
    out = {}
    for precision in ("fp32", "int8"):
        out[precision] = d / precision
        rc = wavae_main(["export", str(trained_tiny_run), "--out", str(out[precision]), "--precision", precision])
        assert rc == 0
    return out


@pytest.fixture(scope="module")
def held_out(trained_tiny_run):
    cfg, _, _ = load_run(trained_tiny_run)
    return synth_audio(4.0, cfg.frontend.sample_rate, seed=123)  # the training clips use seeds 0-3


def test_int8_stays_close_to_fp32_on_trained_tiny(exported, held_out, trained_tiny_run):
    cfg, model, _ = load_run(trained_tiny_run)
    block = json.loads((exported["int8"] / MANIFEST).read_text())["block"]
    x = held_out[: held_out.size // block * block]
    y32 = BundleStreamer(exported["fp32"]).stream(x)
    y8 = BundleStreamer(exported["int8"]).stream(x)
    assert np.sqrt(np.mean(y32**2)) > 1e-4  # fp32 says something
    q = compare(y32, y8, 0, model.frontend)
    own = compare(x, y32, 0, model.frontend)["mel_distance"]
    assert q["snr_db"] >= INT8_MIN_SNR_DB, q
    assert q["mel_distance"] <= INT8_MAX_MEL_FRACTION * own, (q, own)


def test_int8_graphs_have_qdq_per_channel_weights_and_float_state(exported):
    manifest = verify_bundle_files(exported["int8"])
    assert manifest["precision"] == "int8" and manifest["opset"] == 17
    assert manifest["quantization"]["state"].startswith("float32")
    for g, spec in manifest["graphs"].items():
        proto = onnx.load(str(exported["int8"] / spec["file"]))
        assert graph_opset(proto) == 17
        ops = [n.op_type for n in proto.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        check_state_float(proto)  # raises if a state is quantised or I/O is not float32
        inits = {t.name: t for t in proto.graph.initializer}
        per_channel = [
            n for n in proto.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[1]].dims) == 1
            and inits[n.input[1]].dims[0] > 1
        ]
        assert per_channel, f"{g}: no per-channel int8 weights"
        state_ins = {s["input"] for s in spec["states"]}
        for n in proto.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                assert not set(n.input) & state_ins


def test_streaming_state_of_int8_bundle_is_exactly_float(exported, held_out):
    """The state an int8 graph hands back is float, not a dequantised tensor: the
    encoder's first state (the raw audio history of the STFT) comes back bit-exact,
    so no rounding is fed back from block to block."""
    s = BundleStreamer(exported["int8"])
    block = s.block
    x = held_out[: 3 * block]
    for i in range(3):
        s.encode(x[i * block : (i + 1) * block])
    hist = s.states["encoder"][0].reshape(-1)
    np.testing.assert_array_equal(hist, x[3 * block - hist.size :])


def test_verify_command_prints_the_figures(exported, trained_tiny_run, tmp_path, capsys):
    import soundfile as sf

    cfg, model, _ = load_run(trained_tiny_run)
    wav = tmp_path / "in.wav"
    sf.write(wav, synth_audio(2.0, cfg.frontend.sample_rate, seed=77), cfg.frontend.sample_rate)
    capsys.readouterr()
    assert wavae_main(["verify", str(exported["fp32"]), "--run", str(trained_tiny_run), "--input", str(wav)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["max_abs_diff"] < 1e-4 and r["alignment_samples"] == 0
    assert r["snr_db"] == "inf" or float(r["snr_db"]) > 60
    assert r["mel_distance"] < 1e-3
    assert r["macs"]["per_second"] > 0 and r["bytes"]["total"] == sum(
        v for k, v in r["bytes"].items() if k != "total"
    )
    assert wavae_main(["verify", str(exported["int8"]), "--run", str(trained_tiny_run), "--input", str(wav)]) == 0
    r8 = json.loads(capsys.readouterr().out)
    assert r8["precision"] == "int8" and r8["max_abs_diff"] > r["max_abs_diff"]
    assert r8["bytes"]["decoder.onnx"] < r["bytes"]["decoder.onnx"]


def test_onnx_macs_agree_with_the_torch_count(tiny_bundle):
    from wavae.train.macs import count_macs

    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    torch_macs = count_macs(model)
    onnx_per_second = bundle_macs(tiny_bundle)["per_second"]
    # the torch count adds one MAC per sample for the loudness power ("other");
    # the ONNX count leaves elementwise ops out
    expected = torch_macs["total"] - model.sample_rate
    # and the exported STFT is the two-stage DFT (wavae.quantize.lower), not the dense product torch counts
    n, bins = cfg.frontend.n_fft, cfg.frontend.n_fft // 2 + 1
    n1, n2 = dft_factors(n)
    two_stage = 2 * n1 * n1 * n2 + n1 * 2 * n2 * 2 * -(-bins // n1)
    expected -= (n * 2 * bins - two_stage) * cfg.frontend.sample_rate // cfg.frontend.hop
    assert abs(onnx_per_second - expected) <= 1e-3 * expected


def test_fp16_bundle_keeps_float32_io_and_stays_close(tmp_path, tiny_bundle):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    out = export_bundle(model, cfg, tmp_path / "fp16", block=2 * cfg.frame, precision="fp16")
    manifest = verify_bundle_files(out)
    for spec in manifest["graphs"].values():
        proto = onnx.load(str(out / spec["file"]))
        assert graph_opset(proto) == 17
        for vi in list(proto.graph.input) + list(proto.graph.output):
            assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, vi.name
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    x = synth_audio(1.0, cfg.frontend.sample_rate, seed=9)
    x = x[: x.size // manifest["block"] * manifest["block"]]
    y32 = BundleStreamer(tiny_bundle).stream(x)
    y16 = BundleStreamer(out).stream(x)
    assert compare(y32, y16, 0)["snr_db"] > 40  # measured 72 dB


def test_missing_or_silent_calibration_audio_is_refused(tmp_path, trained_tiny_run):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    with pytest.raises(CalibrationError, match="silent"):
        export_bundle(model, cfg, tmp_path / "a", block=cfg.frame, precision="int8",
                      calibration=np.zeros(8 * cfg.frame, np.float32))
    with pytest.raises(CalibrationError, match="no calibration audio"):
        export_bundle(model, cfg, tmp_path / "b", block=cfg.frame, precision="int8",
                      calibration=np.zeros(cfg.frame // 2, np.float32))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(tmp_path / "c"), "--precision", "int8",
                       "--calibration", str(empty)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_calibration_skips_an_unreadable_file(tmp_path, trained_tiny_run, audio_dir):
    """Training skips a corrupt file with a warning; int8 calibration must too."""
    cal = tmp_path / "cal"
    shutil.copytree(audio_dir, cal, ignore=shutil.ignore_patterns(".*"))
    (cal / "broken.wav").write_bytes(b"RIFF not really a wav")
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(tmp_path / "b"), "--precision", "int8",
                       "--calibration", str(cal)]) == 0
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_run_without_a_trained_vocoder_is_refused(tmp_path, trained_tiny_run, capsys):
    run = tmp_path / "vae-only"
    shutil.copytree(trained_tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    ckpt["progress"]["vocoder_steps"] = 0
    torch.save(ckpt, run / "checkpoint.pt")
    capsys.readouterr()
    assert wavae_main(["export", str(run), "--out", str(tmp_path / "b")]) == 2
    assert "no trained vocoder" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_existing_bundle_and_bad_precision_refused_by_the_command(tmp_path, trained_tiny_run, tiny_bundle, capsys):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    before = (out / MANIFEST).read_bytes()
    capsys.readouterr()
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(tmp_path / "c"), "--precision", "int4"]) == 2
    assert "unsupported precision" in capsys.readouterr().err
    assert (out / MANIFEST).read_bytes() == before and not (tmp_path / "c").exists()


def _corrupt(bundle, dest):
    shutil.copytree(bundle, dest)
    data = bytearray((dest / "encoder.onnx").read_bytes())
    data[len(data) // 3] ^= 0x40
    (dest / "encoder.onnx").write_bytes(bytes(data))
    return dest


def _future(bundle, dest):
    shutil.copytree(bundle, dest)
    m = json.loads((dest / MANIFEST).read_text())
    m["format_version"] = 99
    (dest / MANIFEST).write_text(json.dumps(m))
    return dest


def test_desktop_reader_refuses_corrupted_byte_and_unknown_version(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="sha256"):
        verify_bundle_files(_corrupt(tiny_bundle, tmp_path / "bad"))
    with pytest.raises(BundleError, match="version 99"):
        verify_bundle_files(_future(tiny_bundle, tmp_path / "future"))
    with pytest.raises(BundleError, match="sha256"):
        BundleStreamer(tmp_path / "bad")


def test_device_reader_refuses_corrupted_byte_and_unknown_version(tmp_path, tiny_bundle, exported):
    device_bundle = pytest.importorskip("wavae.device.bundle", reason="the device bundle reader is not written yet")
    for good in (tiny_bundle, exported["int8"]):
        device_bundle.load_bundle(good)  # what the exporter writes, the device reads
    with pytest.raises(WavaeError, match="sha256"):
        device_bundle.load_bundle(_corrupt(tiny_bundle, tmp_path / "bad"))
    with pytest.raises(WavaeError, match="version 99"):
        device_bundle.load_bundle(_future(tiny_bundle, tmp_path / "future"))


def test_int8_calibration_on_very_little_audio_warns(caplog):
    from wavae.quantize.int8 import FEW_CALIBRATION_BLOCKS, check_calibration_audio

    rng = np.random.default_rng(0)
    with caplog.at_level("WARNING", logger="wavae.quantize.int8"):
        check_calibration_audio(0.1 * rng.standard_normal(256 * 6).astype(np.float32), 256)
    assert "only 6 block(s)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavae.quantize.int8"):
        check_calibration_audio(0.1 * rng.standard_normal(256 * FEW_CALIBRATION_BLOCKS).astype(np.float32), 256)
    assert caplog.text == ""


def test_verify_refuses_a_run_the_bundle_does_not_come_from(exported, trained_tiny_run, tmp_path, capsys):
    import soundfile as sf
    import torch

    other = tmp_path / "other-run"
    shutil.copytree(trained_tiny_run, other)
    ckpt = torch.load(other / "checkpoint.pt", weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first] = ckpt["model"][first] + 0.01  # another run: same preset, other weights
    torch.save(ckpt, other / "checkpoint.pt")
    cfg, _, _ = load_run(other)
    wav = tmp_path / "in.wav"
    sf.write(wav, synth_audio(1.0, cfg.frontend.sample_rate, seed=5), cfg.frontend.sample_rate)
    capsys.readouterr()
    rc = wavae_main(["verify", str(exported["fp32"]), "--run", str(other), "--input", str(wav)])
    err = capsys.readouterr().err
    assert rc != 0 and "was not exported from this run's model" in err and "Traceback" not in err
