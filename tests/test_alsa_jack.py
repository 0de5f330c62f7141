"""The live loop paced like hardware: a private JACK dummy server behind real alsa-lib.

`jackd --no-realtime -d dummy -r 48000 -p 256` runs the clock; the ALSA `jack`
plugin (wrapped in `plug`) gives the loop a duplex PCM.  Each test starts its
own server and stops it in teardown, whatever happens.  With the loopback PCM
(playback port wired into the capture port) a click written comes back in the
capture: the distance between the streams, the I/O share of the round trip, is
measured in frames.

Where this machine allows realtime scheduling (``realtime_allowed``: CAP_SYS_NICE
or an rtprio limit), the server and the loop run at realtime priority, as the
service is meant to run (``[service] realtime_priority``).  Without it, two busy
processes on two cores starve the server's own clock (10 s of audio took 20 s
of wall time) and its clients miss cycles; docs/device-live.md has the figures.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from alsa_helpers import (
    LOOP_PRIORITY,
    JackServer,
    alsa_env,
    jack_config,
    jack_loopback_pcms,
    jack_pcms,
    jackd_available,
    realtime_allowed,
    realtime_thread,
)

pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")
_why = jackd_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]

RATE, PERIOD = 48000, 256
REALTIME = realtime_allowed()
WAVAE = [sys.executable, "-m", "wavae.cli"]


@pytest.fixture
def jack(tmp_path: Path):
    server = JackServer(tmp_path, rate=RATE, period=PERIOD, realtime=REALTIME)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _config(tmp_path: Path, bundle: Path, threading_mode: str = "inline", extra: str = "") -> Path:
    path = tmp_path / f"jack-{threading_mode}.toml"
    path.write_text(f"""
[bundle]
path = "{bundle}"
[controls]
feedback_gain = 0.3
{jack_config(threading_mode, REALTIME, RATE, PERIOD)}
{extra}
""")
    return path


def _env(tmp_path: Path, server: JackServer) -> dict[str, str]:
    env = alsa_env(jack_pcms(tmp_path / "asound.conf"), server.env())
    env["OMP_NUM_THREADS"] = "1"
    return env


def _live(cmd_args: list[str], env: dict[str, str], timeout: float) -> tuple[dict, float, str]:
    t0 = time.monotonic()
    r = subprocess.run(WAVAE + ["run", *cmd_args], env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    assert r.returncode == 0, f"wavae run failed ({r.returncode}):\n{r.stderr[-3000:]}"
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON summary:\n{r.stdout}\n{r.stderr[-2000:]}"
    return json.loads(lines[-1]), wall, r.stderr


def test_ten_seconds_run_in_real_time_with_no_unrecovered_xrun(tmp_path, tiny_bundle, jack):
    summary, wall, _ = _live(
        ["--config", str(_config(tmp_path, tiny_bundle)), "--seconds", "10"], _env(tmp_path, jack), timeout=60
    )
    print("jack 10 s:", json.dumps({k: summary[k] for k in ("wall_s", "frames", "xruns", "xruns_unrecovered")}))
    assert summary["frames"] >= 10 * RATE
    # paced by the JACK clock: not faster than real time, and not much slower
    assert 9.9 <= summary["wall_s"] <= 11.0, summary["wall_s"]
    assert summary["xruns_unrecovered"] == 0
    assert summary["device_lost"] == 0
    assert summary["engine_stats"]["blocks"] > 0


def test_inline_stall_is_a_counted_xrun_and_audio_continues(tmp_path, tiny_bundle, jack):
    stall_at, stall_ms = 1.0, 150.0
    cfg = _config(tmp_path, tiny_bundle, "inline", f"[debug]\nstall_ms = {stall_ms}\nstall_at_s = {stall_at}\n")
    # 3.5 s: on a busy machine the recovery itself may xrun once more inside the window counted as the
    # stall's; the run must still have its 1.9 s of audio after the last of them
    summary, wall, stderr = _live(["--config", str(cfg), "--seconds", "3.5"], _env(tmp_path, jack), timeout=60)
    assert summary["stalls_injected"] == 1
    stall_frame = stall_at * RATE
    near = [f for f in summary["xrun_frames"] if stall_frame - PERIOD <= f <= stall_frame + 4 * RATE * stall_ms / 1000]
    assert near, f"no xrun at the stall: {summary['xrun_frames']}"
    assert summary["xruns_unrecovered"] == 0
    assert "xrun" in stderr  # logged
    # audio went on after the stall: the run reached its 3 s, 2 s of them after the xrun
    assert summary["frames"] >= 3 * RATE
    assert summary["frames"] - max(near) >= 1.9 * RATE


def test_worker_stall_is_late_periods_not_an_xrun(tmp_path, tiny_bundle, jack):
    stall_at, stall_ms = 1.0, 150.0
    cfg = _config(tmp_path, tiny_bundle, "worker", f"[debug]\nstall_ms = {stall_ms}\nstall_at_s = {stall_at}\n")
    summary, wall, _ = _live(["--config", str(cfg), "--seconds", "3"], _env(tmp_path, jack), timeout=60)
    assert summary["stalls_injected"] == 1
    assert summary["late_periods"] >= 1  # the periods the stall covered played silence
    stall_frame = stall_at * RATE
    near = [f for f in summary["xrun_frames"] if stall_frame - PERIOD <= f <= stall_frame + 4 * RATE * stall_ms / 1000]
    assert not near, f"the worker's stall reached the ALSA streams: xruns at {summary['xrun_frames']}"
    assert summary["xruns_unrecovered"] == 0
    assert summary["frames"] >= 3 * RATE
    assert summary["latency"]["worker_frames"] == 3 * PERIOD  # one tiny model block: 256 @ 16 kHz = 768 frames


def test_lost_device_is_reopened_and_nothing_crashes(tmp_path, tiny_bundle, jack):
    cfg = _config(tmp_path, tiny_bundle, "inline", "")
    fast = 'log_level = "info"\nreopen_interval_s = 0.25\nio_timeout_s = 0.5'
    cfg.write_text(cfg.read_text().replace('log_level = "info"', fast))
    proc = subprocess.Popen(
        WAVAE + ["run", "--config", str(cfg), "--seconds", "4"],
        env=_env(tmp_path, jack), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    started = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if " live: " in line:  # the loop is about to start
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(60), "the live loop never started:\n" + "".join(lines)
        time.sleep(1.0)
        jack.stop()  # the "USB interface" goes away mid-run ...
        time.sleep(1.5)
        jack.start()  # ... and comes back
        # not communicate(): it would read stderr too, racing the reader for the lines checked below
        proc.wait(timeout=60)
        stdout = proc.stdout.read()  # one summary line: it cannot fill the pipe while the process runs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["device_lost"] >= 1
    assert summary["reopens"] >= 1
    assert "audio device lost" in stderr and "audio device back" in stderr
    assert "Traceback" not in stderr
    # device time = audio processed + time without a device; audio flowed before and after
    assert summary["lost_s"] > 0.5
    assert summary["frames"] / RATE + summary["lost_s"] >= 4.0
    assert summary["frames"] > 1.5 * RATE


def test_sigterm_stops_cleanly_with_a_summary(tmp_path, tiny_bundle, jack):
    cfg = _config(tmp_path, tiny_bundle)
    proc = subprocess.Popen(
        WAVAE + ["run", "--config", str(cfg)],  # no --seconds: runs until signalled
        env=_env(tmp_path, jack), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
            if " live: " in line:
                started = True
                break
        assert started, "the live loop never started"
        time.sleep(1.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["frames"] >= 1.0 * RATE
    assert stop_s < 2.0  # drained and closed promptly


@pytest.mark.parametrize("periods", [3, 4])
def test_xrun_recovery_keeps_the_start_up_latency(tmp_path, jack, monkeypatch, periods):
    """Two 50 ms stalls (the `[debug]` fault injector, inline): each is one xrun, and after
    each the frames queued ahead of every write, and the measured distance from capture to
    playback, are what they were at the start: (prefill - 1) and prefill periods, which is
    what the live summary reports as the I/O share of the round trip, and what the loop itself
    measures (``IOStats.io_distance``: the status file's measured latency).

    A click is timed only when no xrun came between its sending and its return, and
    no realignment (a drift between the streams that the server caused without an
    xrun, see ``wavae.device.audio_io``) came before the loop could have seen one
    under way at its return."""
    from wavae.device.audio_io import ALIGN_CONFIRM_PERIODS, AlsaDuplex
    from wavae.device.config import AudioConfig, DebugConfig, ServiceConfig
    from wavae.device.live import FaultInjector

    for key, value in alsa_env(jack_loopback_pcms(tmp_path / "asound.conf"), jack.env()).items():
        monkeypatch.setenv(key, value)
    prefill = 2
    audio = AudioConfig(capture="jloop", playback="jloop", rate=RATE, period_size=PERIOD, periods=periods,
                        prefill_periods=prefill, format="S16_LE")
    d = AlsaDuplex(audio, ServiceConfig(), source="test")
    d.open()
    buffer = d.actual["playback"]["buffer_size"]
    assert buffer == periods * PERIOD

    click_every, stall_at = 25, (0.6, 1.2)
    click = np.zeros((PERIOD, 1), np.float32)
    click[0] = 0.5
    silence = np.zeros((PERIOD, 1), np.float32)
    calls = [0]
    queued = []  # (call, frames queued in playback just before this period is written)
    distances = []  # (call, the capture -> playback distance the loop measured for this period)
    counters = []  # (xruns, realigns) as each call began
    sent = set()  # calls that wrote a click not yet seen back
    returns = []  # (call the click was sent in, call it came back in, frames from its capture period to its return)

    def step(x):
        k = calls[0]
        calls[0] += 1
        counters.append((d.stats.xruns, d.stats.realigns))
        hit = np.flatnonzero(x[:, 0] > 0.25)
        if hit.size and sent:
            src = max(sent)
            returns.append((src, k, (k - src) * PERIOD + int(hit[0])))
            sent.clear()
        queued.append((k, d.playback_queued()))
        distances.append((k, d.stats.io_distance))  # the loop's own measurement, made before this call
        if k % click_every == 10:
            sent.add(k)
            return click
        return silence

    stalled = FaultInjector(step, DebugConfig(stall_ms=50.0, stall_at_s=stall_at[0]), RATE, PERIOD)
    stalled = FaultInjector(stalled, DebugConfig(stall_ms=50.0, stall_at_s=stall_at[1]), RATE, PERIOD)
    try:
        with realtime_thread(LOOP_PRIORITY, REALTIME):
            st = d.run(stalled, max_frames=int(1.8 * RATE))
    finally:
        d.close()
    # a drift under way at a click's return is corrected within the confirmation time and a period or two
    settle = ALIGN_CONFIRM_PERIODS + 2
    last = len(counters) - 1
    trips = [
        (src, t) for src, k, t in returns
        if counters[src][0] == counters[k][0] and counters[src][1] == counters[min(k + settle, last)][1]
    ]

    stall_calls = [int(t * RATE) // PERIOD for t in stall_at]
    assert stalled.stalls == 1 and stalled.step.stalls == 1
    # one xrun per stall, at the stall
    for c in stall_calls:
        near = [f for f in st.xrun_frames if abs(f - c * PERIOD) <= 2 * PERIOD]
        assert len(near) == 1, (c * PERIOD, st.xrun_frames)
    assert st.xruns_unrecovered == 0

    q = np.array(queued)
    windows = [(20, stall_calls[0]), (stall_calls[0] + 2, stall_calls[1]), (stall_calls[1] + 2, calls[0])]
    medians = [float(np.median(q[(q[:, 0] >= lo) & (q[:, 0] < hi), 1])) for lo, hi in windows]
    print(f"periods {periods}: frames queued ahead of a write, before/between/after the stalls: {medians}")
    assert medians == [(prefill - 1) * PERIOD] * 3
    dist = np.array(distances)
    measured = [float(np.median(dist[(dist[:, 0] >= lo) & (dist[:, 0] < hi), 1])) for lo, hi in windows]
    print(f"periods {periods}: capture -> playback distance the loop measured, before/between/after: {measured}")
    assert measured == [prefill * PERIOD] * 3  # what the clicks measure below, and what the status reports

    io = d.io_latency()["playback_prefill"]
    print(f"periods {periods}: capture -> playback distance per click: {trips}; reported {io}; "
          f"realigns {st.realigns}")
    for lo, hi in windows:  # clicks came back before, between and after the stalls
        assert any(lo <= k < hi for k, _ in trips), (lo, hi, trips)
    assert {t for _, t in trips} == {prefill * PERIOD} == {io}
