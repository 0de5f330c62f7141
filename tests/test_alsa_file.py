"""ALSA mode through real alsa-lib `type file` PCMs equals file mode, sample for sample.

`wavae run --config` (live loop, ALSA) reads a RAW file through a capture PCM and
writes the playback PCM to a RAW file; `wavae run --input --output` renders the
same input with the same control script (feedback on) and the same period, with
the engine's delay removed (output sample t is the model's answer to input
sample t).  The live stream is that render delayed by exactly the round trip the
live summary reports: the engine's signal delay plus the playback pre-fill
(`prefill_periods x period_size` frames of silence, the first thing written).
FLOAT_LE: equal bit for bit.  S16_LE: within 1 LSB (the live loop rounds float32
to int16 on the way out; the test rounds the file-mode output).

The stream positions are exact here; the JACK tests measure the same distance
between capture and playback on a paced, real-time clock.  The last tests run
`AlsaDuplex` against a stand-in for the alsaaudio module, for the faults alsa-lib
does not produce on demand (short reads, a device vanishing while it opens).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from alsa_helpers import RAW_DTYPES, alsa_env, file_pcms, read_raw, write_raw
from conftest import synth_audio

alsaaudio = pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")

RATE, PERIOD, PREFILL = 48000, 256, 2
SECONDS = 0.75
WAVAE = [sys.executable, "-m", "wavae.cli"]

SCRIPT = {
    "events": [
        {"t": 0.0, "control": "feedback_gain", "value": 0.6},
        {"t": 0.0, "control": "feedback_freq", "value": 900.0},
        {"t": 0.15, "control": "bias.0", "value": 2.0},
        {"t": 0.3, "control": "noise", "value": 0.5},
        {"t": 0.45, "control": "scale", "value": 1.5},
        {"t": 0.6, "control": "freeze", "value": True},
    ]
}


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def _summary(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON summary line in:\n{stdout}"
    return json.loads(lines[-1])


def _quantize_s16(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y.astype(np.float32) * np.float32(32768.0)), -32768, 32767) / 32768.0


@pytest.mark.parametrize("fmt", ["FLOAT_LE", "S16_LE"])
def test_alsa_file_pcm_output_equals_file_mode(tmp_path: Path, tiny_bundle: Path, fmt: str):
    x = synth_audio(SECONDS + 0.25, RATE, seed=3)  # longer than what is consumed: the infile has no EOF
    if fmt == "S16_LE":  # both modes must see the same samples: the 16-bit ones
        x = (np.clip(np.rint(x * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)
    write_raw(tmp_path / "in.raw", x, fmt)
    sf.write(tmp_path / "in.wav", x, RATE, subtype="FLOAT")
    (tmp_path / "script.json").write_text(json.dumps(SCRIPT))
    conf = file_pcms(tmp_path / "asound.conf", tmp_path / "in.raw", tmp_path / "out.raw")
    (tmp_path / "device.toml").write_text(
        f"""
[bundle]
path = "{tiny_bundle}"
[audio]
capture = "test_cap"
playback = "test_play"
rate = {RATE}
period_size = {PERIOD}
periods = 3
prefill_periods = {PREFILL}
format = "{fmt}"
threading = "inline"
[service]
log_level = "warning"
"""
    )
    env = alsa_env(conf)
    env["OMP_NUM_THREADS"] = "1"

    r = _run(
        WAVAE + ["run", "--config", str(tmp_path / "device.toml"), "--seconds", str(SECONDS),
                 "--controls", str(tmp_path / "script.json")],
        env,
    )
    summary = _summary(r.stdout)
    frames = summary["frames"]
    assert frames == -(-int(SECONDS * RATE) // PERIOD) * PERIOD  # stopped after a known frame count
    assert summary["xruns"] == 0 and summary["device_lost"] == 0
    # the warm-up's blocks are in neither the stats nor the timings
    assert summary["engine_timing"]["blocks"] == summary["engine_stats"]["blocks"] > 0

    _run(
        WAVAE + ["run", "--bundle", str(tiny_bundle), "--input", str(tmp_path / "in.wav"),
                 "--output", str(tmp_path / "file.wav"), "--controls", str(tmp_path / "script.json"),
                 "--period", str(PERIOD)],
        env,
    )
    file_out, sr = sf.read(tmp_path / "file.wav", dtype="float32", always_2d=True)
    assert sr == RATE

    live = read_raw(tmp_path / "out.raw", fmt)
    prefill = PREFILL * PERIOD
    assert live.shape[0] == prefill + frames  # the pre-fill, then one period per period processed
    assert not np.any(live[:prefill]), "the pre-fill is silence"
    lat = summary["latency"]
    total = lat["total_frames"]
    assert total == lat["signal_delay_frames"] + prefill and total == int(total)
    # the reported round trip is where the live stream has the file render's sample 0
    live = live[int(total):, 0]
    ref = file_out[: live.shape[0], 0]
    assert np.abs(ref).max() > 1e-3, "the rendered output is silent: nothing was compared"

    if fmt == "FLOAT_LE":
        np.testing.assert_array_equal(live, ref)
    else:
        lsb = 1.0 / 32768.0
        assert np.abs(live - _quantize_s16(ref)).max() <= lsb + 1e-9


@pytest.mark.parametrize("fmt", ["S16_LE", "S32_LE", "FLOAT_LE"])
def test_sample_format_conversion_round_trips_and_clips(fmt: str):
    from wavae.device.audio_io import Converter

    conv = Converter(fmt, frames=8, channels=2)
    y = np.array([[0.0, 0.5], [-0.5, 0.25], [1.5, -1.5], [0.999, -1.0]] * 2, np.float32)
    raw = conv.from_float(y)
    assert raw.dtype == np.dtype(RAW_DTYPES[fmt])
    back = conv.to_float(raw.tobytes()).copy()
    if fmt == "FLOAT_LE":
        np.testing.assert_array_equal(back, y)
    else:
        info = np.iinfo(RAW_DTYPES[fmt])
        assert raw[2, 0] >= info.max - 128 and raw[2, 1] == info.min  # clipped, no wrap-around
        expected = np.clip(y, -1.0, 1.0)
        assert np.abs(back - expected).max() <= 2.0 / (info.max + 1.0) + 1e-6


def test_worker_threading_is_file_mode_one_block_later(tiny_bundle: Path):
    """`audio.threading = "worker"`: the engine runs on a thread; the audio thread's
    stream is the file-mode stream (same period) `delay` periods (one model block) later."""
    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.controls import Controls, ControlScript
    from wavae.device.engine import Engine
    from wavae.device.live import EngineStep, WorkerProcessor, worker_delay

    bundle = load_bundle(tiny_bundle)
    delay = worker_delay(bundle.block, bundle.sample_rate, RATE, PERIOD)
    assert delay * PERIOD >= bundle.block * RATE / bundle.sample_rate
    x = synth_audio(0.5, RATE, seed=5)
    n = (len(x) // PERIOD) * PERIOD
    x = x[:n].reshape(-1, 1)

    def engine_step():
        controls = Controls(bundle.latent_dim)
        script = ControlScript.from_obj(SCRIPT, controls)
        engine = Engine(bundle, make_backend(bundle, "onnxruntime", threads=1), device_rate=RATE,
                        period=PERIOD, controls=controls)
        return EngineStep(engine, controls, script, RATE, PERIOD)

    ref_step = engine_step()  # file mode, inline
    ref = np.concatenate([ref_step(x[i : i + PERIOD]).copy() for i in range(0, n, PERIOD)])

    worker = WorkerProcessor(engine_step(), PERIOD, delay, 1, 1)
    try:
        out = []
        for i in range(0, n, PERIOD):
            out.append(worker(x[i : i + PERIOD]).copy())
            assert worker.wait_idle(30.0)  # paced like a sound card, with a worker that keeps up
    finally:
        worker.close()
    out = np.concatenate(out)
    assert worker.late_periods == 0 and worker.dropped_periods == 0
    lag = delay * PERIOD
    assert worker.extra_latency_frames == lag  # what the live summary reports as worker_frames
    assert not np.any(out[:lag])  # the added block of latency is silence
    np.testing.assert_array_equal(out[lag:], ref[: n - lag])
    assert np.abs(ref).max() > 1e-3


def test_worker_late_output_is_silence_and_the_audio_thread_never_waits(tiny_bundle: Path):
    """A worker stalled far beyond its delay: every call still returns at once; the
    periods whose output is missing play silence and are counted; audio resumes."""
    import threading
    import time

    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine
    from wavae.device.live import EngineStep, WorkerProcessor

    bundle = load_bundle(tiny_bundle)
    engine = Engine(bundle, make_backend(bundle, "onnxruntime", threads=1), device_rate=RATE, period=PERIOD)
    gate = threading.Event()
    inner = EngineStep(engine, rate=RATE, period=PERIOD)
    calls = []

    def step(v):  # the 10th period blocks until the test releases it
        calls.append(1)
        if len(calls) == 10:
            gate.wait(10.0)
        return inner(v)

    worker = WorkerProcessor(step, PERIOD, 3, 1, 1)
    x = synth_audio(1.0, RATE, seed=6).reshape(-1, 1)
    outs = []
    try:
        slowest = 0.0
        for k in range(60):
            t0 = time.perf_counter()
            outs.append(worker(x[k * PERIOD : (k + 1) * PERIOD]).copy())
            slowest = max(slowest, time.perf_counter() - t0)
            if k < 8 or k > 40:
                worker.wait_idle(10.0)
            if k == 40:
                gate.set()
                worker.wait_idle(10.0)
    finally:
        gate.set()
        worker.close()
    assert slowest < 0.05, f"the audio thread waited {slowest * 1e3:.1f} ms"
    assert worker.late_periods >= 20  # periods 12..43 had no output in time
    assert worker.dropped_periods >= 1  # the worker fell a ring behind: input dropped, not overwritten
    assert not any(np.any(o) for o in outs[13:40])  # the stalled stretch is silence ...
    assert all(np.any(o) for o in outs[48:])  # ... and after the release the audio is back


def test_the_control_script_never_takes_the_writers_lock_on_the_audio_path(tiny_bundle: Path):
    """Live mode replays the script before the loop; on the audio path an event is one
    reference store.  A writer holding the controls' lock for as long as it likes never
    holds the audio up, and every event still lands (the last one sets freeze)."""
    import threading

    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.controls import Controls, ControlScript
    from wavae.device.engine import Engine
    from wavae.device.live import EngineStep

    bundle = load_bundle(tiny_bundle)
    controls = Controls(bundle.latent_dim)
    step = EngineStep(
        Engine(bundle, make_backend(bundle, "onnxruntime", threads=1), device_rate=RATE, period=PERIOD,
               controls=controls),
        controls, ControlScript.from_obj(SCRIPT, controls), RATE, PERIOD,
    )
    x = np.zeros((PERIOD, 1), np.float32)
    periods = int(0.7 * RATE) // PERIOD  # past the last event (0.6 s)

    def audio():
        for _ in range(periods):
            step(x)

    with controls._lock:  # a slow writer, mid-update
        t = threading.Thread(target=audio, daemon=True)
        t.start()
        t.join(10.0)  # a fraction of a second when the audio path does not wait
        assert not t.is_alive(), "the audio path waited on the writers' lock"
    snap = controls.snapshot
    assert snap.freeze and snap.scale == 1.5 and snap.noise == 0.5 and snap.bias[0] == 2.0
    assert snap.feedback_gain == 0.6 and snap.feedback_freq == 900.0
    assert step.schedule.overrides == 0


def test_worker_after_a_reset_plays_silence_then_fresh_output_never_stale(tiny_bundle: Path):
    """After a device reopen the worker's results from before it are never played: the first
    `delay` periods are silence (as at the start), then the output of a freshly reset engine."""
    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine
    from wavae.device.live import EngineStep, WorkerProcessor

    bundle = load_bundle(tiny_bundle)

    def engine_step():
        engine = Engine(bundle, make_backend(bundle, "onnxruntime", threads=1), device_rate=RATE, period=PERIOD)
        return EngineStep(engine, rate=RATE, period=PERIOD)

    delay, n = 3, 16
    x1 = synth_audio(n * PERIOD / RATE, RATE, seed=7).reshape(n, PERIOD, 1)
    x2 = synth_audio(n * PERIOD / RATE, RATE, seed=8).reshape(n, PERIOD, 1)
    ref_step = engine_step()
    ref2 = np.stack([ref_step(p).copy() for p in x2])  # a fresh engine on the audio after the reset

    worker = WorkerProcessor(engine_step(), PERIOD, delay, 1, 1)
    try:
        out1 = []
        for p in x1:
            out1.append(worker(p).copy())
            assert worker.wait_idle(30.0)
        worker.reset()  # the device came back
        out2 = []
        for p in x2:
            out2.append(worker(p).copy())
            assert worker.wait_idle(30.0)
    finally:
        worker.close()
    assert np.abs(np.stack(out1[delay:])).max() > 1e-3  # there was output before the reset to go stale
    assert not np.any(np.stack(out2[:delay])), "periods computed before the reset were played after it"
    np.testing.assert_array_equal(np.stack(out2[delay:]), ref2[: n - delay])
    assert worker.late_periods == 0


# ----------------------------------------------------------------------------
# AlsaDuplex against a stand-in for the alsaaudio module (faults alsa-lib does
# not produce on demand here: short reads, a device vanishing while it opens)
# ----------------------------------------------------------------------------
def _fake_duplex(monkeypatch, fake, **service):
    from wavae.device import audio_io
    from wavae.device.config import AudioConfig, ServiceConfig

    monkeypatch.setattr(audio_io, "alsaaudio", fake)
    audio = AudioConfig(capture="fakecap", playback="fakeplay", rate=RATE, period_size=PERIOD, periods=3,
                        prefill_periods=PREFILL, format="S16_LE")
    return audio_io.AlsaDuplex(audio, ServiceConfig(**service), source="test.toml")


def test_a_short_capture_read_then_a_full_one_keeps_the_stream_whole(monkeypatch):
    """pyalsaaudio asks for a whole period on every read, so after a short read the next
    read can return more than the period still needs: the excess starts the next period."""
    from alsa_helpers import FakeAlsa

    ramp = (np.arange(40 * PERIOD) % 20000).astype("<i2")
    chunks = [100, PERIOD, PERIOD, 30, 200, PERIOD, 1, PERIOD]  # frames per read, cycled
    pos = [0]

    def reader(pcm):
        n = chunks[(pcm.reads - 1) % len(chunks)]
        i = pos[0]
        pos[0] += n
        return n, ramp[i : i + n].tobytes()

    d = _fake_duplex(monkeypatch, FakeAlsa(reader))
    seen = []

    def process(x):
        seen.append(x.copy())
        return np.zeros((PERIOD, 1), np.float32)

    periods = 30
    st = d.run(process, max_frames=periods * PERIOD)
    d.close()
    got = np.rint(np.concatenate(seen)[:, 0] * 32768.0).astype(np.int64)
    assert st.periods == periods and st.xruns == 0 and st.device_lost == 0
    np.testing.assert_array_equal(got, ramp[: periods * PERIOD])  # no frame lost, repeated or reordered


def test_device_vanishing_while_it_reopens_is_retried_and_half_open_pcms_are_closed(monkeypatch):
    """An ALSAAudioError from info() or polldescriptors() during a reopen is a failed
    attempt (retried), not a crash, and whatever was opened in that attempt is closed."""
    from alsa_helpers import FakeAlsa

    fake = FakeAlsa(fail={
        ("capture", 0, "read"): (10, "No such device"),  # unplugged after 10 periods
        ("capture", 1, "info"): "No such device",  # reopen 1: capture opens, then vanishes
        ("playback", 1, "polldescriptors"): "No such device",  # reopen 2: both open, playback vanishes
    })
    d = _fake_duplex(monkeypatch, fake, reopen_interval_s=0.01, io_timeout_s=0.5)
    resets = []
    st = d.run(lambda x: np.zeros((PERIOD, 1), np.float32), max_frames=40 * PERIOD,
               on_reopen=lambda: resets.append(1))
    d.close()

    assert st.device_lost == 1 and st.reopen_attempts == 2 and st.reopens == 1 and resets == [1]
    assert st.periods >= 20  # audio went on after the reopen
    assert all(p.closed for p in fake.created), [p.name for p in fake.created if not p.closed]
    log = fake.log
    # each half-open PCM was closed before the next attempt opened anything
    assert log.index(("close", "capture1")) < log.index(("open", "capture2"))
    assert log.index(("close", "playback1")) < log.index(("open", "capture3"))
    assert log.index(("close", "capture2")) < log.index(("open", "capture3"))
    # a half-open playback PCM is dropped first: pyalsaaudio's close() drains, forever on a dead device
    assert fake.pcm("playback1").dropped_before_close


def test_open_failing_after_the_pcm_opened_is_an_audio_device_error(monkeypatch):
    from alsa_helpers import FakeAlsa
    from wavae.device.audio_io import AudioDeviceError

    fake = FakeAlsa(fail={("playback", 0, "info"): "Input/output error"})
    d = _fake_duplex(monkeypatch, fake)
    with pytest.raises(AudioDeviceError, match='playback PCM "fakeplay" \\(audio.playback in test.toml\\) opened but'):
        d.open()
    assert [p.closed for p in fake.created] == [True, True]  # the capture PCM too


def test_live_profile_writes_the_report_on_exit(tmp_path: Path, tiny_bundle: Path):
    """`wavae run --config ... --profile --report DIR` records every engine call of
    the live loop and writes the same report as `wavae profile` when it stops."""
    from wavae.device.report import validate

    x = synth_audio(1.0, RATE, seed=5)
    write_raw(tmp_path / "in.raw", x, "FLOAT_LE")
    conf = file_pcms(tmp_path / "asound.conf", tmp_path / "in.raw", tmp_path / "out.raw")
    (tmp_path / "device.toml").write_text(
        f'[bundle]\npath = "{tiny_bundle}"\n[audio]\ncapture = "test_cap"\nplayback = "test_play"\n'
        f'rate = {RATE}\nperiod_size = {PERIOD}\nperiods = 3\nformat = "FLOAT_LE"\n'
        '[service]\nlog_level = "warning"\n'
    )
    env = alsa_env(conf)
    env["OMP_NUM_THREADS"] = "1"
    report = tmp_path / "live-report"
    r = _run(WAVAE + ["run", "--config", str(tmp_path / "device.toml"), "--seconds", "0.5",
                      "--profile", "--report", str(report)], env)
    summary = _summary(r.stdout)
    assert Path(summary["profile_report"]) == report / "report.json"
    data = json.loads((report / "report.json").read_text())
    assert validate(data) == []
    (c,) = data["configs"]
    assert c["engine"]["count"] == summary["frames"] // PERIOD  # one entry per engine call
    for png in ("hist.png", "series.png", "budget.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_live_without_a_config_plays_with_the_default_settings(tmp_path: Path, tiny_bundle: Path):
    """`wavae run --bundle B --capture PCM --playback PCM` needs no config file."""
    write_raw(tmp_path / "in.raw", synth_audio(SECONDS + 0.25, RATE, seed=4), "S16_LE")
    conf = file_pcms(tmp_path / "asound.conf", tmp_path / "in.raw", tmp_path / "out.raw")
    r = _run(WAVAE + ["run", "--bundle", str(tiny_bundle), "--capture", "test_cap", "--playback", "test_play",
                      "--seconds", str(SECONDS)], alsa_env(conf))
    summary = _summary(r.stdout)
    assert summary["frames"] >= int(SECONDS * RATE) and summary["xruns"] == 0
    assert read_raw(tmp_path / "out.raw", "S16_LE").shape[0] > summary["frames"]  # pre-fill + what was played
