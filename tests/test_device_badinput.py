"""Bad input to `wavae run`: each case exits 2 with one clear message on stderr, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_audio
from wavae.cli import main as wavae_main


@pytest.fixture
def wav(tmp_path) -> Path:
    p = tmp_path / "in.wav"
    sf.write(p, synth_audio(0.3, 48000, seed=0), 48000)
    return p


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    d = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, d)
    return d


def run_cli(capsys, *args) -> tuple[int, str]:
    rc = wavae_main(["run", *map(str, args)])
    err = capsys.readouterr().err
    return rc, err


def expect_error(capsys, match: str, *args) -> str:
    rc, err = run_cli(capsys, *args)
    assert rc == 2, err
    assert err.startswith("wavae run: error: "), err
    assert match in err, err
    assert "Traceback" not in err
    return err


def edit_manifest(bundle: Path, **changes) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    m.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_missing_bundle(capsys, tmp_path, wav):
    expect_error(capsys, "does not exist; export one with `wavae export`",
                 "--bundle", tmp_path / "none", "--input", wav, "--output", tmp_path / "o.wav")


def test_corrupt_bundle_checksum(capsys, tmp_path, wav, bundle_copy):
    p = bundle_copy / "encoder.onnx"
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF  # one byte
    p.write_bytes(bytes(data))
    expect_error(capsys, "encoder.onnx fails its checksum",
                 "--bundle", bundle_copy, "--input", wav, "--output", tmp_path / "o.wav")
    assert not (tmp_path / "o.wav").exists()


def test_unknown_format_version(capsys, tmp_path, wav, bundle_copy):
    edit_manifest(bundle_copy, format_version=7)
    expect_error(capsys, "bundle format version 7, but this wavae reads version 1",
                 "--bundle", bundle_copy, "--input", wav, "--output", tmp_path / "o.wav")


def test_bundle_rate_the_device_cannot_serve(capsys, tmp_path, wav, bundle_copy):
    edit_manifest(bundle_copy, sample_rate=4000)
    expect_error(capsys, "runs at 4000 Hz; the engine serves models at 8000-96000 Hz",
                 "--bundle", bundle_copy, "--input", wav, "--output", tmp_path / "o.wav")


def test_bundle_rate_too_far_from_the_device_rate(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "in96.wav"
    sf.write(p, synth_audio(0.1, 96000), 96000)  # 96 kHz device, 16 kHz model: ratio 6 is the limit
    rc, err = run_cli(capsys, "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")
    assert rc == 0, err
    b2 = tmp_path / "b2"
    shutil.copytree(tiny_bundle, b2)
    edit_manifest(b2, sample_rate=8000)  # 12x
    expect_error(capsys, "cannot serve a 8000 Hz bundle at a device rate of 96000 Hz",
                 "--bundle", b2, "--input", p, "--output", tmp_path / "o.wav")


def test_empty_wav(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros((0, 1), np.float32), 48000)
    expect_error(capsys, "is empty", "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")


def test_three_channel_wav(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "three.wav"
    sf.write(p, np.zeros((4800, 3), np.float32), 48000)
    expect_error(capsys, "has 3 channels; file mode takes mono or stereo",
                 "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")


def test_stereo_wav_is_accepted_and_written_as_stereo(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "st.wav"
    x = synth_audio(0.3, 44100, seed=2)
    sf.write(p, np.stack([x, -x], axis=1), 44100)
    rc, err = run_cli(capsys, "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")
    assert rc == 0, err
    y, sr = sf.read(tmp_path / "o.wav", dtype="float32")
    assert sr == 44100 and y.shape == (x.size, 2)


def test_nan_wav(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "nan.wav"
    x = synth_audio(0.2, 48000)
    x[4800] = np.nan
    sf.write(p, x, 48000, subtype="FLOAT")
    expect_error(capsys, "contains 1 NaN/Inf sample(s), the first at frame 4800 (0.100 s)",
                 "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")


def test_wrong_rate_wav(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "odd.wav"
    sf.write(p, synth_audio(0.2, 12345), 12345)
    expect_error(capsys, "is at 12345 Hz, which is not a device rate",
                 "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")


def test_not_audio(capsys, tmp_path, tiny_bundle):
    p = tmp_path / "text.wav"
    p.write_text("hello")
    expect_error(capsys, "cannot read", "--bundle", tiny_bundle, "--input", p, "--output", tmp_path / "o.wav")


def test_control_script_with_unknown_control(capsys, tmp_path, wav, tiny_bundle):
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"events": [{"t": 0.1, "control": "bias.0", "value": 1},
                                        {"t": 0.2, "control": "distortion", "value": 1}]}))
    expect_error(capsys, "event 1: unknown control 'distortion'",
                 "--bundle", tiny_bundle, "--input", wav, "--output", tmp_path / "o.wav", "--controls", s)


def test_bad_set_value(capsys, tmp_path, wav, tiny_bundle):
    expect_error(capsys, "control 'feedback_gain' = 9 is outside its range 0 .. 2",
                 "--bundle", tiny_bundle, "--input", wav, "--output", tmp_path / "o.wav", "--set", "feedback_gain=9")


def test_nothing_to_run_and_live_flags_without_config(capsys, tmp_path, wav, tiny_bundle):
    expect_error(capsys, "give --config DEVICE.toml for the live loop")
    expect_error(capsys, "file mode needs --output", "--bundle", tiny_bundle, "--input", wav)
    expect_error(capsys, "belong to the live loop", "--bundle", tiny_bundle, "--input", wav,
                 "--output", tmp_path / "o.wav", "--seconds", "2")


def test_tensorrt_without_gpu_is_a_clear_error(capsys, tmp_path, wav, tiny_bundle):
    from wavae.device.backends.tensorrt import gpu_present

    if gpu_present()[0]:
        pytest.skip("this machine has a GPU")
    expect_error(capsys, "Use --backend onnxruntime",
                 "--bundle", tiny_bundle, "--input", wav, "--output", tmp_path / "o.wav", "--backend", "tensorrt")


def test_real_process_exit_code_and_stderr(tmp_path, wav, bundle_copy):
    """The same through the console script: exit status 1, the message, no traceback."""
    edit_manifest(bundle_copy, format_version=99)
    exe = Path(sys.executable).parent / "wavae"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wavae"]
    r = subprocess.run(cmd + ["run", "--bundle", str(bundle_copy), "--input", str(wav), "--output",
                              str(tmp_path / "o.wav")], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2
    assert "bundle format version 99" in r.stderr and "Traceback" not in r.stderr


def test_a_text_format_version_is_named_as_such(capsys, tmp_path, wav, bundle_copy):
    edit_manifest(bundle_copy, format_version="1")
    err = expect_error(capsys, "format_version must be a whole number (this wavae reads 1), not str '1'",
                       "--bundle", bundle_copy, "--input", wav, "--output", tmp_path / "o.wav")
    assert "but this wavae reads version 1" not in err


@pytest.mark.parametrize("key, value, match", [
    ("sample_rate", 44100, "says sample_rate = 44100, but encoder.onnx was exported with sample_rate = 16000"),
    ("latency_samples", 10**9, "latency_samples 1000000000 is more than 8 latent frames"),
])
def test_the_manifests_own_numbers_are_cross_checked(capsys, tmp_path, wav, bundle_copy, key, value, match):
    edit_manifest(bundle_copy, **{key: value})
    expect_error(capsys, match, "--bundle", bundle_copy, "--input", wav, "--output", tmp_path / "o.wav")
    assert not (tmp_path / "o.wav").exists()


def test_a_damaged_graph_with_a_matching_checksum_is_a_bundle_error(capsys, tmp_path, wav, bundle_copy):
    import hashlib

    p = bundle_copy / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[: len(data) // 2] = b"\xff\xfe" * (len(data) // 4)  # damaged before export: not protobuf at all
    p.write_bytes(bytes(data))
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"]["decoder.onnx"] = {"sha256": hashlib.sha256(bytes(data)).hexdigest(), "bytes": len(data)}
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    err = expect_error(capsys, "onnxruntime cannot load", "--bundle", bundle_copy, "--input", wav,
                       "--output", tmp_path / "o.wav")
    assert "decoder.onnx" in err and len(err.strip().splitlines()) == 1
