"""`wavae profile`: the JSON schema, measured vs declared latency, the plots,
the live recorder, and the bad-input messages (docs/profile.md)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from wavae.device.backends import make_backend
from wavae.device.bundle import load_bundle
from wavae.device.engine import Engine
from wavae.device.latency import detect_latency, measure_latency, onset_signal
from wavae.device.profile import write_report
from wavae.device.report import SCHEMA, schema_keys, validate
from wavae.device.timing import BlockRecorder, TimedStep, summarize

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "profile.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Run a device command the way a Pi runs it: torch made unimportable.
NO_TORCH = "import sys; sys.modules['torch'] = None; from wavae.cli import main; sys.exit(main(sys.argv[1:]))"

def _wavae(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _export(model, cfg, out: Path) -> Path:
    from wavae.quantize.export import export_bundle

    return export_bundle(model, cfg, out, block=2 * cfg.frame, precision="fp32")


@pytest.fixture(scope="module")
def tiny_trained_bundle(trained_tiny_run, tmp_path_factory) -> Path:
    from wavae.train.checkpoint import load_run

    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    return _export(model, cfg, tmp_path_factory.mktemp("profile") / "tiny")


@pytest.fixture(scope="module")
def lowlatency_trained_bundle(audio_dir, tmp_path_factory) -> Path:
    import torch

    from wavae.train.config import resolve
    from wavae.train.data import ChunkCache
    from wavae.train.trainer import Trainer

    torch.set_num_threads(1)
    # the `lowlatency` preset's timing with `tiny`'s widths: the full preset needs minutes of
    # training before its output follows its input's onsets; this one trains in seconds
    # (figures in docs/benchmarks/profile.md)
    cfg = resolve("lowlatency-tiny")
    full = resolve("lowlatency")
    # the latency-defining parts are the preset's own
    assert (cfg.frontend, cfg.frame, cfg.latent_stride, cfg.vocoder.ratios) == (
        full.frontend, full.frame, full.latent_stride, full.vocoder.ratios)
    d = tmp_path_factory.mktemp("profile-ll")
    data = ChunkCache.build(audio_dir, cfg.frontend.sample_rate, cfg.train.chunk, cache_dir=d / "cache")
    trainer = Trainer(cfg, d / "run", data.chunks, data_dir=str(audio_dir), show_progress=False)
    trainer.start(resume=False)
    trainer.fit("all", 80)
    trainer.close()
    return _export(trainer.model.eval(), cfg, d / "bundle")


@pytest.fixture(scope="module")
def cli_report(tiny_trained_bundle, tmp_path_factory):
    """One `wavae profile --json` run (torch unimportable): two thread counts, two periods."""
    out = tmp_path_factory.mktemp("profile-cli") / "report"
    r = _wavae("profile", "--bundle", str(tiny_trained_bundle), "--threads", "1", "2", "--period", "256", "480",
               "--seconds", "1", "--onsets", "6", "--report", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), out


# ----------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------
def test_json_report_has_the_documented_schema(cli_report):
    report, out = cli_report
    assert report["schema_version"] == 2  # 2: the pre-fill and period-size keys renamed
    assert validate(report) == []
    assert json.loads((out / "report.json").read_text()) == report
    # every configuration asked for, with real figures
    assert len(report["configs"]) == 4
    for c in report["configs"]:
        for sec in ("graph", "engine"):
            assert c[sec]["count"] > 0 and c[sec]["p50_ms"] <= c[sec]["p99_ms"] <= c[sec]["max_ms"]
            assert c[sec]["jitter_ms"] == pytest.approx(c[sec]["p99_ms"] - c[sec]["p50_ms"])
        assert c["latency"]["onsets_detected"] > 0
        b = c["budget"]
        parts = ("alsa_buffering_ms", "resampler_ms", "algorithmic_ms", "engine_buffering_ms")
        assert b["total_ms"] == pytest.approx(sum(b[k] for k in parts))
        # the round trip is the live loop's: engine total + (prefill - 1) periods of queued playback
        assert b["total_ms"] == pytest.approx(
            c["latency"]["declared"]["total_ms"] + 1e3 * (b["prefill_periods"] - 1) * b["period"] / c["device_rate"])
        assert b["compute_fits"] == (b["compute_p99_ms"] <= b["compute_budget_ms"])
    assert {r["axis"] for r in report["comparisons"]} == {"threads", "period"}
    assert report["startup"]["process_to_first_block_s"] > 0
    assert report["resources"]["rss_peak_mib"] > 0
    # the schema is documented: every key path appears in docs/profile.md
    doc = DOC.read_text()
    missing = [k for k in schema_keys() if f"`{k}`" not in doc]
    assert not missing, f"docs/profile.md does not document {missing}"
    assert re.search(r'"schema_version":\s*2', doc)


def test_validate_names_a_departure_from_the_schema(cli_report):
    report, _ = cli_report
    bad = json.loads(json.dumps(report))
    del bad["configs"][0]["graph"]["p99_ms"]
    bad["configs"][1]["engine"]["misses"] = "three"
    bad["extra_key"] = 1
    problems = validate(bad)
    assert any("p99_ms" in p and "missing" in p for p in problems)
    assert any("configs[1].engine.misses" in p for p in problems)
    assert any("extra_key" in p for p in problems)
    assert set(SCHEMA) >= {"schema_version", "configs", "startup", "resources"}


# ----------------------------------------------------------------------------
# latency
# ----------------------------------------------------------------------------
def test_onset_detector_recovers_a_known_delay_under_hum():
    """A pure delay of D samples with a loud hum added: the differential detector
    gives D + period for every onset (the hum is in the reference and cancels)."""
    rate, period, delay = 48000, 256, 700
    sig = onset_signal(rate, n_onsets=9, gap_s=0.4, seed=3)
    hum = (0.3 * np.sin(2 * np.pi * 50 * np.arange(sig.x.size + delay) / rate)).astype(np.float32)
    y = hum.copy()
    y[delay:] += sig.x
    det = detect_latency(sig, y, hum, period, search_before=1024, search_after=sig.gap // 2)
    lat = [r["latency_samples"] for r in det["onsets"]]
    assert lat == [delay + period] * 9
    # the raw output alone (no reference) cannot see the onsets under that hum
    raw = detect_latency(sig, y, None, period, search_before=1024, search_after=sig.gap // 2)
    assert sum(r["latency_samples"] == delay + period for r in raw["onsets"]) < 9


@pytest.mark.parametrize("preset", ["tiny", pytest.param("lowlatency", marks=pytest.mark.slow)])
def test_measured_latency_matches_declared_within_one_block(preset, request):
    bundle_dir = request.getfixturevalue(f"{preset}_trained_bundle")
    b = load_bundle(bundle_dir)
    be = make_backend(b, "onnxruntime", threads=1)
    eng = Engine(b, be, device_rate=48000, period=256)
    r = measure_latency(eng, b, 48000, 256, n_onsets=12, seed=1)
    declared = r["declared"]
    assert declared["total_ms"] == pytest.approx(1e3 * eng.latency()["total_samples"] / 48000)
    assert r["onsets_detected"] >= 10, r["onsets"]
    block_ms = 1e3 * b.block / b.sample_rate
    assert abs(r["measured_ms"] - declared["total_ms"]) <= block_ms, (r["measured_ms"], declared, block_ms)
    assert r["within_one_block"] is True
    # spread: finite, and less than a block (the position jitter of a block-causal model)
    assert 0 <= r["std_ms"] < block_ms
    # causality: nothing in the output moves before the onset's period has been captured
    assert all(row["first_influence_samples"] > 0 for row in r["onsets"] if row["first_influence_samples"] is not None)


# ----------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------
def test_plots_are_written_and_are_valid_pngs(cli_report):
    import matplotlib.image as mpimg

    report, out = cli_report
    assert set(report["files"]) >= {"histogram", "series", "budget", "markdown", "json", "timings"}
    for key in ("histogram", "series", "budget"):
        p = out / report["files"][key]
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.std(img)) > 0.01  # not a blank canvas
    md = (out / "report.md").read_text()
    assert "![histogram](hist.png)" in md and "Action-to-sound budget" in md


# ----------------------------------------------------------------------------
# live recorder
# ----------------------------------------------------------------------------
def test_block_recorder_ring_is_chronological_and_does_not_grow():
    rec = BlockRecorder(capacity=100, deadline_s=0.005)
    for i in range(250):
        rec.record(i * 1e-4)
    s = rec.series()
    assert s.size == 100 and np.allclose(s, np.arange(150, 250) * 1e-4)
    assert rec.count == 250 and rec.misses == sum(i * 1e-4 > 0.005 for i in range(250))
    assert rec.max_s == pytest.approx(249e-4)
    assert rec.startup_s is not None and rec.startup_s > 0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(20000):
        rec.record(0.001)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 4096, f"record() kept {grown} bytes over 20000 calls"


def test_live_report_from_a_timed_step(tiny_trained_bundle, tmp_path):
    b = load_bundle(tiny_trained_bundle)
    eng = Engine(b, make_backend(b, "onnxruntime", threads=1), device_rate=48000, period=256)
    rec = BlockRecorder.for_engine(eng, seconds=1.0)
    step = TimedStep(eng.process, rec)
    x = np.zeros((256, 1), np.float32)
    for _ in range(300):  # 1.6 s of audio: the 1 s ring wraps
        step(x)
    path = write_report(rec, tmp_path / "live", bundle=b, engine=eng, backend="onnxruntime", threads=1,
                        xruns=2, extra={"late_blocks": 0})
    report = json.loads(path.read_text())
    assert report["mode"] == "live" and validate(report) == []
    eng_stats = report["configs"][0]["engine"]
    assert eng_stats["blocks_total"] == 300 and eng_stats["count"] == rec.capacity
    assert report["live"]["xruns"] == 2
    assert report["configs"][0]["budget"]["total_ms"] > report["configs"][0]["latency"]["declared"]["total_ms"]
    assert (tmp_path / "live" / "hist.png").read_bytes()[:8] == PNG_MAGIC


def test_summary_statistics():
    t = np.array([1, 2, 3, 4, 100], np.float64) * 1e-3
    s = summarize(t, deadline_s=0.01)
    assert s["misses"] == 1 and s["max_ms"] == pytest.approx(100)
    assert s["rtf"] == pytest.approx(t.sum() / (5 * 0.01))
    assert s["jitter_ms"] == pytest.approx(s["p99_ms"] - s["p50_ms"])


# ----------------------------------------------------------------------------
# bad input: exit 2, a message that says what to do, no traceback
# ----------------------------------------------------------------------------
def _tensorrt_usable() -> bool:
    from wavae.device.backends.tensorrt import gpu_present

    return gpu_present()[0] and importlib.util.find_spec("tensorrt") is not None


def test_absent_backend_names_what_to_install(tiny_bundle, tmp_path):
    if _tensorrt_usable():
        pytest.skip("TensorRT and a GPU are present on this machine: the backend is not absent")
    r = _wavae("profile", "--bundle", str(tiny_bundle), "--backend", "tensorrt", "--report", str(tmp_path / "r"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "TensorRT" in r.stderr and "JetPack" in r.stderr and "--backend onnxruntime" in r.stderr


def test_block_the_bundle_cannot_serve(tiny_bundle, tmp_path):
    r = _wavae("profile", "--bundle", str(tiny_bundle), "--block", "384", "--report", str(tmp_path / "r"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "block 384" in r.stderr and "wavae export" in r.stderr and "--block 384" in r.stderr
    r = _wavae("profile", "--bundle", str(tiny_bundle), "--block", "100", "--report", str(tmp_path / "r"))
    assert r.returncode == 2 and "not even a multiple of the latent frame" in r.stderr


def test_unwritable_report_dir(tiny_bundle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = _wavae("profile", "--bundle", str(tiny_bundle), "--report", str(blocker / "report"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot write the report" in r.stderr and "--report" in r.stderr
