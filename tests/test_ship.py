"""`wavae ship` makes a run the shipped model (bundles, weights, evaluation, card), and the
instrument plays the shipped model when no bundle is named."""

from __future__ import annotations

import json
import shutil

import pytest

from wavae.cli import main as wavae_main
from wavae.device.bundle import load_bundle
from wavae.device.shipped import DEFAULT_MODEL, DEFAULT_PRECISION, default_bundle, models_dir, shipped_bundle
from wavae.quantize.evaluate import TARGETS, meets
from wavae.quantize.ship import MAX_BYTES, ShipError, ship


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, trained_tiny_run, audio_dir):
    out = tmp_path_factory.mktemp("models") / "tinyship"
    info = ship(trained_tiny_run, out, heldout=audio_dir, solo=audio_dir, max_files=2, progress=lambda m: None)
    return out, info


def test_ship_writes_both_bundles_the_weights_the_reports_and_a_card(shipped):
    out, info = shipped
    for precision in ("fp32", "int8"):
        b = load_bundle(out / f"tinyship-{precision}")  # verified: digests, graph contract, model card
        assert b.manifest["precision"] == precision
    assert (out / "run" / "checkpoint.pt").is_file() and (out / "run" / "config.json").is_file()
    for name in ("fp32", "fp32-solo", "int8"):
        assert (out / "eval" / name / "metrics.json").is_file() and (out / "eval" / name / "spectrograms.png").is_file()
    card = (out / "MODEL_CARD.md").read_text()
    figures = json.loads((out / "card.json").read_text())
    assert figures["vae_steps"] == info["vae_steps"] > 0 and figures["vocoder_steps"] > 0
    for key, value in (("log_mel_l1_db", info["fp32"]["log_mel_l1_db"]),
                       ("reference_log_mel_l1_db", info["int8"]["reference_log_mel_l1_db"])):
        verdict = "met" if meets(key, value) else "**missed**"
        assert f"{value:.2f} | {TARGETS[key][0]} {TARGETS[key][1]:g}" in card and verdict in card
    assert "wavae ship" in card and "wavae train --preset tiny" in card
    assert sum(info["bytes"].values()) < MAX_BYTES


def test_the_shipped_weights_re_export_and_evaluate_as_a_run(shipped, tmp_path):
    out, _ = shipped
    assert wavae_main(["export", str(out / "run"), "--out", str(tmp_path / "b"), "--block", "256",
                       "--precision", "fp32"]) == 0
    assert load_bundle(tmp_path / "b").manifest["block"] == 256


def test_ship_refuses_to_replace_a_model_without_force(shipped, trained_tiny_run, audio_dir):
    out, _ = shipped
    with pytest.raises(ShipError, match="--force"):
        ship(trained_tiny_run, out, heldout=audio_dir)
    with pytest.raises(ShipError, match="not a folder"):
        ship(trained_tiny_run, out.parent / "other", heldout=out / "missing")
    assert not (out.parent / "other").exists()


def test_run_and_transfer_without_bundle_play_the_shipped_model(tmp_path, audio_dir):
    bundle = default_bundle()
    if bundle is None:
        pytest.skip(f"no shipped model in this checkout ({shipped_bundle()})")
    assert bundle == models_dir() / DEFAULT_MODEL / f"{DEFAULT_MODEL}-{DEFAULT_PRECISION}"
    clip = sorted(audio_dir.glob("*.wav"))[0]
    assert wavae_main(["run", "--input", str(clip), "--output", str(tmp_path / "out.wav")]) == 0
    assert wavae_main(["transfer", str(clip), "-o", str(tmp_path / "t.wav")]) == 0
    import soundfile as sf

    assert sf.info(str(tmp_path / "out.wav")).duration == pytest.approx(sf.info(str(clip)).duration, abs=0.01)


def test_a_missing_shipped_model_is_a_clear_error(tmp_path, audio_dir, monkeypatch, capsys):
    import wavae.device.shipped as shipped_mod

    monkeypatch.setattr(shipped_mod, "models_dir", lambda: tmp_path / "no-models")
    clip = sorted(audio_dir.glob("*.wav"))[0]
    assert wavae_main(["run", "--input", str(clip), "--output", str(tmp_path / "out.wav")]) == 2
    assert "shipped default model" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()
