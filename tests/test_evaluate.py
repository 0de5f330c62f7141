"""`wavae evaluate`: the metrics mean what they say, and runs and bundles are both
measured, with a report written (tiny preset, generated audio)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wavae.cli import main as wavae_main
from wavae.quantize.evaluate import (
    EvaluateError,
    f0_error,
    log_mel_l1_db,
    loudness_probe,
    open_target,
    rms_db,
)
from wavae.signals import harmonic_notes

SR = 16000


def _tone(f0: float, seconds: float = 1.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))).astype(np.float32)


def test_identical_signals_score_perfectly():
    x = harmonic_notes(2.0, SR, seed=0)
    assert log_mel_l1_db(x, x, SR) == 0.0
    assert np.corrcoef(rms_db(x), rms_db(x))[0, 1] == pytest.approx(1.0)


def test_f0_error_measures_a_detuning_in_cents():
    cents, agree = f0_error(_tone(220.0), _tone(220.0 * 2 ** (100 / 1200)), SR)
    assert cents == pytest.approx(100, abs=15)
    assert agree > 0.9
    assert f0_error(_tone(220.0), _tone(220.0), SR)[0] < 5


def test_log_mel_distance_grows_with_the_damage():
    x = harmonic_notes(2.0, SR, seed=1)
    rng = np.random.default_rng(0)
    small = log_mel_l1_db(x, x + 0.001 * rng.standard_normal(x.size).astype(np.float32), SR)
    large = log_mel_l1_db(x, x + 0.05 * rng.standard_normal(x.size).astype(np.float32), SR)
    assert 0 < small < large


def test_loudness_probe_finds_loudness_in_z_and_not_in_noise():
    rng = np.random.default_rng(0)
    louds = [rng.uniform(-60, 0, 400) for _ in range(4)]
    leaky = [np.stack([l + rng.normal(0, 1, l.size), rng.normal(size=l.size)]) for l in louds]
    clean = [rng.normal(size=(2, l.size)) for l in louds]
    assert loudness_probe(leaky, louds) > 0.8
    assert loudness_probe(clean, louds) < 0.35


def test_neither_run_nor_bundle_is_refused(tmp_path):
    with pytest.raises(EvaluateError, match="neither a training run"):
        open_target(tmp_path)


def test_evaluate_a_run_and_its_int8_bundle_against_the_fp32_one(tmp_path, trained_tiny_run, audio_dir, capsys):
    report = tmp_path / "run-report"
    assert wavae_main(["evaluate", str(trained_tiny_run), "--data", str(audio_dir), "--report", str(report),
                       "--json", "--max-files", "2", "--seconds", "2"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((report / "metrics.json").read_text())
    assert json.loads(printed[: printed.rindex("}") + 1]) == metrics
    assert len(metrics["files"]) == 2 and metrics["kind"] == "run"
    t = metrics["total"]
    for key in ("log_mel_l1_db", "mrstft", "rms_corr", "loudness_probe_accuracy", "loudness_sweep_corr"):
        assert t[key] is not None and np.isfinite(t[key]), key
    assert (report / "spectrograms.png").stat().st_size > 1000
    assert "log-mel L1" in (report / "report.md").read_text()

    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(fp32)]) == 0
    assert wavae_main(["export", str(trained_tiny_run), "--out", str(int8), "--precision", "int8",
                       "--calibration", str(audio_dir)]) == 0
    capsys.readouterr()
    same = tmp_path / "fp32-report"
    assert wavae_main(["evaluate", str(fp32), "--data", str(audio_dir), "--report", str(same), "--no-f0",
                       "--max-files", "2", "--seconds", "2", "--reference", str(fp32)]) == 0
    m_same = json.loads((same / "metrics.json").read_text())
    # the fp32 bundle is the run's model: the same scores, and zero distance from itself
    assert m_same["total"]["reference_log_mel_l1_db"] == 0.0
    assert m_same["total"]["log_mel_l1_db"] == pytest.approx(t["log_mel_l1_db"], abs=0.05)
    q = tmp_path / "int8-report"
    assert wavae_main(["evaluate", str(int8), "--data", str(audio_dir), "--report", str(q), "--no-f0",
                       "--max-files", "2", "--seconds", "2", "--reference", str(fp32)]) == 0
    m_q = json.loads((q / "metrics.json").read_text())
    assert m_q["precision"] == "int8" and 0 < m_q["total"]["reference_log_mel_l1_db"]
