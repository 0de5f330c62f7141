"""The instrument as a service: notify protocol, watchdog, status file, reload, realtime rights.

systemd's side is played by the test: it binds a real ``AF_UNIX`` datagram
socket and hands its name to the process in ``NOTIFY_SOCKET`` (and the
watchdog period in ``WATCHDOG_USEC``, the runtime folder in
``RUNTIME_DIRECTORY``), exactly as systemd does for a ``Type=notify`` unit.
The live-loop tests run ``wavae run`` under a private JACK dummy server (real
alsa-lib, paced like hardware), as tests/test_alsa_jack.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from alsa_helpers import JackServer, alsa_env, jack_pcms, jackd_available, write_text_atomic
from service_helpers import NotifySocket
from wavae.device.actions import Actions
from wavae.device.config import load_config
from wavae.device.controls import Controls
from wavae.device.notify import Notifier, Watchdog, watchdog_interval
from wavae.device.reload import ConfigReloader, plan_reload
from wavae.device.status import (
    STATUS_VERSION,
    StatusError,
    StatusWriter,
    count_start,
    format_status,
    read_status,
    soc_temperature,
)

RATE, PERIOD = 48000, 256
WAVAE = [sys.executable, "-m", "wavae.cli"]


# ----------------------------------------------------------------------------
# the notify client and the watchdog, against a real socket
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notifier_delivers_to_a_bound_socket(kind):
    folder = tempfile.mkdtemp(prefix="wn", dir="/tmp")  # sun_path holds 108 bytes: keep it short
    try:
        sock = NotifySocket(os.path.join(folder, "n") if kind == "path" else None)
        try:
            n = Notifier(environ={"NOTIFY_SOCKET": sock.name})
            assert n.enabled
            assert n.ready("playing\nsecond line")
            assert n.watchdog() and n.stopping()
            sock.wait_for("STOPPING")
            got = [f for _, f in sock.messages]
            assert got[0] == {"READY": "1", "STATUS": "playing second line"}  # one line per field
            assert got[1] == {"WATCHDOG": "1"}
        finally:
            sock.close()
    finally:
        shutil.rmtree(folder)


def test_notifier_without_notify_socket_is_a_no_op():
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.sent == 0


def test_notifier_survives_a_vanished_socket(caplog):
    sock = NotifySocket()
    n = Notifier(environ={"NOTIFY_SOCKET": sock.name})
    sock.close()  # systemd went away
    assert n.status("a") is False and n.status("b") is False  # no exception on the audio's side
    assert sum("cannot notify systemd" in r.message for r in caplog.records) == 1  # logged once


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None  # a child's parent
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_pings_only_when_the_loop_made_progress():
    sock = NotifySocket()
    try:
        blocks = [0]  # the loop's counter
        dog = Watchdog(Notifier(environ={"NOTIFY_SOCKET": sock.name}), 0.5, lambda: blocks[0])
        t = time.monotonic()
        assert not dog.poll(t + 0.1)  # not due yet
        blocks[0] += 3
        assert dog.poll(t + 0.6)  # due, and the loop moved: ping
        assert not dog.poll(t + 1.2)  # due, the loop did not move: no ping
        assert not dog.poll(t + 1.8)
        blocks[0] += 1
        assert dog.poll(t + 2.4)  # moving again: pings resume
        sock.wait_for("WATCHDOG", after=1)
        assert len(sock.times("WATCHDOG")) == 2
        assert (dog.pings, dog.missed) == (2, 2)
    finally:
        sock.close()


# ----------------------------------------------------------------------------
# the status file and `wavae status`
# ----------------------------------------------------------------------------
def _status(**kw) -> dict:
    s = {"version": STATUS_VERSION, "pid": os.getpid(), "state": "running", "written_at": time.time(),
         "uptime_s": 3725.0, "restarts": 1, "model": "wavae-int8", "preset": "wavae", "xruns": 2,
         "xruns_unrecovered": 0, "latency_ms": 21.3, "cpu_percent": 41.5, "rss_mb": 180.2, "soc_temp_c": 55.0}
    s.update(kw)
    return s


def test_status_file_is_never_half_written(tmp_path):
    path = tmp_path / "status.json"
    writer = StatusWriter(path)
    writer.write(_status(n=0))
    stop = threading.Event()
    seen, bad = [], []

    def reader():
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_bytes())["n"])
            except (json.JSONDecodeError, KeyError) as e:
                bad.append(repr(e))

    th = threading.Thread(target=reader)
    th.start()
    pad = "x" * 20000  # big enough that a non-atomic write would be caught half-way
    for n in range(1, 301):
        assert writer.write(_status(n=n, pad=pad))
    stop.set()
    th.join()
    assert not bad, bad[:3]
    assert len(seen) > 10 and seen == sorted(seen)
    assert not list(tmp_path.glob(".status.json.*"))  # no temporary file left behind


def test_read_status_refuses_missing_stale_orphaned_and_stopped_files(tmp_path):
    path = tmp_path / "status.json"
    with pytest.raises(StatusError, match="not running as a service"):
        read_status(path)
    path.write_text(json.dumps(_status(written_at=time.time() - 30)))
    with pytest.raises(StatusError, match="30 s old.*hung"):
        read_status(path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps(_status(pid=dead.pid)))
    with pytest.raises(StatusError, match="no longer running"):
        read_status(path)
    path.write_text(json.dumps(_status(state="stopped")))
    with pytest.raises(StatusError, match="has stopped"):
        read_status(path)
    path.write_text('{"version": 1, "pid"')
    with pytest.raises(StatusError, match="not JSON"):
        read_status(path)
    path.write_text(json.dumps(_status()))
    assert read_status(path)["model"] == "wavae-int8"


def test_wavae_status_prints_the_running_instrument_and_fails_clearly_without_one(tmp_path):
    path = tmp_path / "status.json"
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp_path))
    r = subprocess.run(WAVAE + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not running as a service" in r.stderr and "Traceback" not in r.stderr
    path.write_text(json.dumps(_status()))
    r = subprocess.run(WAVAE + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for text in ("wavae-int8", "preset wavae", "2 total, 0 unrecovered", "21.3 ms", "41.5 %", "180.2 MB",
                 "55.0 °C", "up 01:02:05", "1 restarts"):
        assert text in r.stdout, (text, r.stdout)
    r = subprocess.run(WAVAE + ["status", "--json", "--file", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["xruns"] == 2


def test_soc_temperature_prefers_the_cpu_zone_and_skips_unreadable_ones(tmp_path):
    def zone(n, kind, milli):
        z = tmp_path / f"thermal_zone{n}"
        z.mkdir()
        (z / "type").write_text(kind + "\n")
        if milli is not None:
            (z / "temp").write_text(f"{milli}\n")

    assert soc_temperature(tmp_path) is None  # a board without thermal zones
    zone(0, "gpu-thermal", 41000)
    assert soc_temperature(tmp_path) == 41.0  # no CPU zone: the first that reads
    zone(1, "cpu-thermal", 52500)
    zone(2, "soc_thermal", None)  # no temp file
    assert soc_temperature(tmp_path) == 52.5
    assert "°C" in format_status(_status(soc_temp_c=52.5))


def test_restart_counter_counts_starts_in_the_runtime_folder(tmp_path):
    assert [count_start(tmp_path) for _ in range(3)] == [0, 1, 2]
    (tmp_path / "starts").write_text("garbage")
    assert count_start(tmp_path) == 0  # a damaged counter starts over, never a crash


# ----------------------------------------------------------------------------
# reload: what the config file may change while the audio plays
# ----------------------------------------------------------------------------
BASE = """
[bundle]
path = "{bundle}"
[audio]
capture = "jplug"
playback = "jplug"
rate = 48000
period_size = 256
format = "S16_LE"
threading = "{threading}"
[controls]
feedback_gain = 0.3
[service]
log_level = "info"
{extra}
"""


def _write(path: Path, bundle, threading_mode: str = "inline", extra: str = "") -> Path:
    path.write_text(BASE.format(bundle=bundle, threading=threading_mode, extra=extra))
    return path


def test_reload_applies_controls_and_live_service_keys_and_defers_the_rest(tmp_path):
    cfg_path = _write(tmp_path / "d.toml", tmp_path / "b")
    running = load_config(cfg_path)
    controls = Controls(8)
    handed: list = []
    reloader = ConfigReloader(lambda: load_config(cfg_path), running, Actions(controls), apply_service=handed.append)
    assert reloader() == "no change"
    controls.update({"noise": 0.2})  # a knob turned during the evening ...
    assert controls.get("noise") == pytest.approx(0.2)
    cfg_path.write_text(cfg_path.read_text().replace('log_level = "info"', 'log_level = "info"\nio_timeout_s = 0.5')
                        .replace("rate = 48000", "rate = 44100"))
    what = reloader()
    assert "service.io_timeout_s applied" in what and "audio.rate changed" in what and "restart" in what
    assert handed[-1].io_timeout_s == 0.5
    assert reloader.current.audio.rate == 48000  # the running streams keep their rate
    # ... is kept by a reload that does not touch [controls]
    assert controls.get("noise") == pytest.approx(0.2)
    cfg_path.write_text(cfg_path.read_text().replace("feedback_gain = 0.3", "feedback_gain = 0.6"))
    assert "[controls] applied" in reloader()
    assert controls.get("feedback_gain") == pytest.approx(0.6)
    plan = plan_reload(reloader.current, load_config(cfg_path))
    assert not plan.controls and not plan.service and plan.restart == ("audio.rate",)


def test_reload_refuses_a_bad_config_and_keeps_the_running_one(tmp_path):
    from wavae.device.config import DeviceConfigError

    cfg_path = _write(tmp_path / "d.toml", tmp_path / "b")
    running = load_config(cfg_path)
    applied: list = []
    controls = Controls(8)
    reloader = ConfigReloader(lambda: load_config(cfg_path), running, Actions(controls), applied.append)
    cfg_path.write_text(cfg_path.read_text().replace("feedback_gain = 0.3", "feedback_gain = 0.6\nfeedbak = 1"))
    with pytest.raises(DeviceConfigError, match="controls.feedbak: unknown key"):
        reloader()
    assert reloader.current is running and applied == [] and controls.get("feedback_gain") != 0.6


def test_plan_reload_sorts_each_change_by_how_it_can_be_applied(tmp_path):
    cfg_path = _write(tmp_path / "d.toml", tmp_path / "b")
    running = load_config(cfg_path)
    bundles = f'paths = ["{tmp_path / "b"}", "{tmp_path / "c"}"]\ncrossfade_ms = 50\n'
    cfg_path.write_text(cfg_path.read_text().replace("[audio]", bundles + "[audio]") + "[osc]\nport = 9100\n")
    plan = plan_reload(running, load_config(cfg_path))
    assert plan.bundle == ("bundle.paths",)  # live, through the switcher
    assert plan.inputs == ("[osc]",)  # live, through the inputs
    assert plan.restart == ("bundle.crossfade_ms",) and not plan.controls and not plan.service
    # a reloader without a switcher or inputs applies neither: it says they wait for a restart
    what = ConfigReloader(lambda: load_config(cfg_path), running, Actions(Controls(8)), lambda s: None)()
    assert what == ("bundle.crossfade_ms, bundle.paths, [osc] changed: kept the running values; "
                    "`systemctl restart wavae` applies them")


def test_reload_checks_a_new_bundle_before_the_restart(tmp_path, tiny_bundle):
    from wavae.device.bundle import BundleError

    cfg_path = _write(tmp_path / "d.toml", tiny_bundle)
    reloader = ConfigReloader(lambda: load_config(cfg_path), load_config(cfg_path), Actions(Controls(8)),
                              lambda s: None)  # no switcher: a new bundle waits for a restart, checked now
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "manifest.json").write_text("{")
    cfg_path.write_text(cfg_path.read_text().replace(str(tiny_bundle), str(broken)))
    with pytest.raises(BundleError):
        reloader()


# ----------------------------------------------------------------------------
# realtime without root
# ----------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv to drop rights")
def test_without_realtime_rights_it_runs_at_normal_priority_and_says_so_once():
    probe = (
        "import logging, os, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from wavae.device.realtime import lock_memory, set_realtime\n"
        "r = set_realtime(70, 'audio thread')\n"
        "print(r is None, os.sched_getscheduler(0) == os.SCHED_OTHER, lock_memory())\n"
    )
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False"]
    assert r.stderr.count("cannot run the audio thread at realtime priority 70") == 1
    assert r.stderr.count("cannot lock memory") == 1
    assert "LimitRTPRIO=70" in r.stderr and "LimitMEMLOCK" in r.stderr  # the fix, named


def test_a_run_from_a_shell_starts_no_service_thread_and_leaves_sighup_alone():
    from wavae.device.service import Service

    before = signal.getsignal(signal.SIGHUP)
    threads = threading.active_count()
    svc = Service(progress=lambda: 0, is_ready=lambda: True, facts=dict, info={}, reload=lambda: "x", environ={})
    svc.start()
    try:
        assert not svc.active
        assert threading.active_count() == threads
        assert signal.getsignal(signal.SIGHUP) is before
    finally:
        svc.stop()
    assert signal.getsignal(signal.SIGHUP) is before


def _can_set_fifo() -> bool:
    try:
        prev = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, *prev)
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_set_fifo(), reason="SCHED_FIFO not permitted here (needs CAP_SYS_NICE or RLIMIT_RTPRIO)")
def test_the_service_thread_never_inherits_the_audio_threads_realtime_priority(tmp_path):
    """Started from a SCHED_FIFO thread (the audio thread), the service thread runs at SCHED_OTHER."""
    from wavae.device.realtime import set_realtime
    from wavae.device.service import Service

    seen: list[int] = []
    done = threading.Event()

    def audio_thread():
        set_realtime(10, "test thread")
        assert os.sched_getscheduler(0) == os.SCHED_FIFO
        svc = Service(progress=lambda: 0, is_ready=lambda: seen.append(os.sched_getscheduler(0)) or False,
                      facts=dict, info={}, status_dir=tmp_path, environ={})
        svc.start()
        while not seen:
            time.sleep(0.01)
        svc.stop()
        done.set()

    th = threading.Thread(target=audio_thread)
    th.start()
    th.join(timeout=10)
    assert done.is_set()
    assert set(seen) == {os.SCHED_OTHER}


# ----------------------------------------------------------------------------
# the live loop under a notify socket (JACK dummy server)
# ----------------------------------------------------------------------------
_why = jackd_available()


@pytest.fixture
def jack(tmp_path: Path):
    pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")
    server = JackServer(tmp_path, rate=RATE, period=PERIOD)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def notify_sock():
    s = NotifySocket()
    yield s
    s.close()


def _service_env(tmp_path: Path, jack: JackServer, sock: NotifySocket, watchdog_usec: int | None) -> dict:
    env = alsa_env(jack_pcms(tmp_path / "asound.conf"), jack.env())
    env.update(OMP_NUM_THREADS="1", NOTIFY_SOCKET=sock.name, RUNTIME_DIRECTORY=str(tmp_path / "run"))
    (tmp_path / "run").mkdir(exist_ok=True)
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


# `wavae run` with the panel's ADC at its outermost boundary replaced (tests/service_helpers.py)
FAKE_POTS_RUN = [sys.executable, str(Path(__file__).with_name("service_helpers.py")), "run"]


class Live:
    """`wavae run --config` as systemd starts it, its stderr collected as it comes."""

    def __init__(self, cfg: Path, env: dict, seconds: float | None = None, command: list[str] = WAVAE + ["run"]):
        args = ["--config", str(cfg)] + (["--seconds", str(seconds)] if seconds else [])
        self.proc = subprocess.Popen(command + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.lines)

    def first(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)

    def finish(self, timeout: float = 60.0) -> tuple[int, dict]:
        try:
            self.proc.wait(timeout=timeout)  # stdout holds one summary line: it cannot fill the pipe
            stdout = self.proc.stdout.read()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        return self.proc.returncode, (json.loads(lines[-1]) if lines else {})


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_ready_arrives_after_the_first_model_block_was_played(tmp_path, tiny_bundle, jack, notify_sock):
    cfg = _write(tmp_path / "d.toml", tiny_bundle)
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=1_000_000), seconds=2.5)
    _, t_ready, ready = notify_sock.wait_for("READY")
    code, summary = live.finish()
    assert code == 0, live.stderr[-3000:]
    # the loop had started, and had written the period that carries the first model output
    t_live = live.first(" live: ")
    assert t_live is not None and t_ready > t_live
    lat = summary["latency"]
    first_period = int(lat["signal_delay_frames"] + lat["worker_frames"]) // PERIOD + 1
    periods_at_ready = int(ready["STATUS"].split(" periods")[0].rsplit(" ", 1)[1])
    assert periods_at_ready >= first_period, (ready, first_period)
    assert summary["engine_stats"]["blocks"] > 0
    assert summary["ready_after_s"] is not None and summary["ready_after_s"] > 0
    # then the watchdog was fed (every 0.5 s) and STATUS= came with the model and xruns
    assert len([t for t in notify_sock.times("WATCHDOG") if t > t_ready]) >= 2
    assert all(t > t_ready for t in notify_sock.times("WATCHDOG"))  # never before READY
    status = [f["STATUS"] for _, f in notify_sock.messages if "STATUS" in f]
    assert any(tiny_bundle.name in s and "xruns" in s and "latency" in s for s in status), status
    notify_sock.wait_for("STOPPING", timeout=5)


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_watchdog_pings_stop_while_the_loop_hangs_and_resume_after(tmp_path, tiny_bundle, jack, notify_sock):
    stall_at, stall_s = 1.0, 3.0  # the [debug] fault injector hangs the inline loop for 3 s
    cfg = _write(tmp_path / "d.toml", tiny_bundle,
                 extra=f"[debug]\nstall_ms = {stall_s * 1000:g}\nstall_at_s = {stall_at}\n")
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=1_000_000), seconds=2.5)
    code, summary = live.finish(timeout=90)
    assert code == 0, live.stderr[-3000:]
    assert summary["stalls_injected"] == 1
    pings = notify_sock.times("WATCHDOG")
    t_stall = live.first("debug: stalling")
    assert t_stall is not None
    before = [t for t in pings if t < t_stall]
    after = [t for t in pings if t > t_stall + stall_s]
    # the check due just after the stall began may still see the progress made before it: one interval of grace
    during = [t for t in pings if t_stall + 1.1 < t < t_stall + stall_s]
    assert before and after, pings
    assert during == [], (during, t_stall)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) >= stall_s - 1.0  # systemd would have restarted a unit with WatchdogSec=1s
    assert "no progress" in live.stderr  # and the log says why


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_sighup_reloads_without_stopping_the_audio_and_refuses_a_bad_config(tmp_path, tiny_bundle, jack, notify_sock):
    cfg = _write(tmp_path / "d.toml", tiny_bundle, threading_mode="worker")
    status_file = tmp_path / "run" / "status.json"
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=2_000_000))
    try:
        i, _, _ = notify_sock.wait_for("READY")
        periods_before = read_status(status_file)["periods"]
        cfg.write_text(cfg.read_text().replace("feedback_gain = 0.3", "feedback_gain = 0.5"))
        live.proc.send_signal(signal.SIGHUP)
        j, _, _ = notify_sock.wait_for("RELOADING", after=i + 1, timeout=10)
        k, _, ready = notify_sock.wait_for("READY", after=j + 1, timeout=10)
        assert "[controls] applied" in ready["STATUS"]
        # a bad config: refused, said why, the old one keeps playing
        cfg.write_text(cfg.read_text().replace("period_size = 256", "period_size = \"abc\""))
        live.proc.send_signal(signal.SIGHUP)
        j, _, _ = notify_sock.wait_for("RELOADING", after=k + 1, timeout=10)
        _, _, ready = notify_sock.wait_for("READY", after=j + 1, timeout=10)
        assert "refused" in ready["STATUS"] and "audio.period_size" in ready["STATUS"]
        time.sleep(1.2)
        st = read_status(status_file)
        assert st["state"] == "running" and st["reloads"] == 2 and "refused" in st["last_reload"]
        assert st["periods"] > periods_before + 100  # the audio never stopped
        live.proc.send_signal(signal.SIGTERM)
        code, summary = live.finish()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    assert code == 0, live.stderr[-3000:]
    assert "reload refused" in live.stderr and "Traceback" not in live.stderr
    assert summary["xruns_unrecovered"] == 0


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:  # held together: n different ports
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _osc_status(port: int, timeout: float = 2.0) -> dict | None:
    """``/wavae/status`` on ``port``: the reply's JSON, or None when none came within ``timeout``."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(OscMessageBuilder("/wavae/status").build().dgram, ("127.0.0.1", port))
        try:
            data = c.recv(65536)
        except (socket.timeout, ConnectionRefusedError):
            return None
    return json.loads(OscMessage(data).params[0])


def _status_when(port: int, ok, timeout: float = 10.0) -> dict:
    """The first ``/wavae/status`` on ``port`` for which ``ok(status)`` holds."""
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = _osc_status(port)
        if st is not None and ok(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s; last status: {st}")


def _sighup(live: Live, sock: NotifySocket, after: int) -> tuple[int, str]:
    """SIGHUP, then RELOADING=1 and READY=1 from the instrument: the READY's index and its STATUS (the answer)."""
    live.proc.send_signal(signal.SIGHUP)
    j, _, _ = sock.wait_for("RELOADING", after=after, timeout=10)
    k, _, ready = sock.wait_for("READY", after=j + 1, timeout=40)
    return k, ready["STATUS"]


PANEL = """
[adc]
takeover = "jump"
ema_alpha = 1.0
[[pot]]
channel = 0
target = "{target}"
range = [0.0, {high}]
"""


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_sighup_restarts_osc_and_the_panel_on_a_new_port_and_mapping_and_refuses_a_broken_one(
        tmp_path, tiny_bundle, jack, notify_sock):
    """(a) a new [osc] port: the old one falls silent, the new one answers; (b) the mapping file's content
    alone changed (the pot retargeted): the panel drives the new target, not the old; (d) a broken mapping:
    refused with the file and key, the running panel and OSC go on."""
    pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")
    p1, p2 = _free_ports(2)
    pots = write_text_atomic(tmp_path / "pots", "1023")  # every pot at its top
    mapping = write_text_atomic(tmp_path / "panel.toml", PANEL.format(target="feedback_gain", high=0.8))
    cfg = _write(tmp_path / "d.toml", tiny_bundle, threading_mode="worker",
                 extra=f'[osc]\nport = {p1}\n[panel]\nmapping = "panel.toml"\nadc_hz = 20\n')
    env = dict(_service_env(tmp_path, jack, notify_sock, watchdog_usec=2_000_000), WAVAE_TEST_POTS=str(pots))
    live = Live(cfg, env, command=FAKE_POTS_RUN)
    try:
        i, _, _ = notify_sock.wait_for("READY")
        _status_when(p1, lambda st: st["controls"]["feedback_gain"] == 0.8)  # the pot drives its target
        # (a) the OSC port
        cfg.write_text(cfg.read_text().replace(f"port = {p1}", f"port = {p2}"))
        i, what = _sighup(live, notify_sock, i + 1)
        assert "restarted: osc" in what and "panel" not in what, what
        assert _osc_status(p1, timeout=0.5) is None  # the old port no longer answers
        assert _osc_status(p2)["controls"]["feedback_gain"] == 0.8  # the new one does, same instrument
        # (b) the mapping file changed, the config did not: the pot now drives scale
        write_text_atomic(mapping, PANEL.format(target="scale", high=2.5))
        i, what = _sighup(live, notify_sock, i + 1)
        assert "restarted: panel" in what and "osc" not in what, what
        write_text_atomic(pots, "512")
        st = _status_when(p2, lambda st: st["controls"]["scale"] == pytest.approx(2.5 * 512 / 1023))
        assert st["controls"]["feedback_gain"] == 0.8  # the old target is no longer driven
        # (d) a broken mapping: refused, and says why; the running panel and OSC go on
        write_text_atomic(mapping, PANEL.format(target="volume", high=1.0))
        i, what = _sighup(live, notify_sock, i + 1)
        assert "refused" in what and "panel.toml" in what and "pot[0].target" in what, what
        write_text_atomic(pots, "1023")
        _status_when(p2, lambda st: st["controls"]["scale"] == 2.5)
        live.proc.send_signal(signal.SIGTERM)
        code, summary = live.finish()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    print("".join(line for _, line in live.lines if "reload" in line))
    assert code == 0, live.stderr[-3000:]
    assert "Traceback" not in live.stderr and "unexpected error" not in live.stderr
    assert summary["xruns_unrecovered"] == 0


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_sighup_switches_to_a_new_start_bundle_while_playing_and_refuses_a_missing_one(
        tmp_path, tiny_bundle, tiny_bundle_b, jack, notify_sock):
    """(d) [bundle] path names a folder that is not there: refused, and says why, the bundle playing plays on;
    (c) [bundle] path names a second bundle: switched to live (loaded in the background, crossfaded), the
    status names it, and the audio never stopped."""
    pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")
    (port,) = _free_ports(1)
    cfg = _write(tmp_path / "d.toml", tiny_bundle, extra=f"[osc]\nport = {port}\n")
    status_file = tmp_path / "run" / "status.json"
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=2_000_000))
    try:
        i, _, _ = notify_sock.wait_for("READY")
        assert _osc_status(port)["bundle_playing"] == tiny_bundle.name
        periods_before = read_status(status_file)["periods"]
        # (d) a bundle that is not there
        cfg.write_text(cfg.read_text().replace(str(tiny_bundle), str(tmp_path / "gone")))
        i, what = _sighup(live, notify_sock, i + 1)
        assert "refused" in what and "gone" in what and "does not exist" in what, what
        assert f"{tiny_bundle.name} keeps playing" in what
        # (c) a second bundle
        cfg.write_text(cfg.read_text().replace(str(tmp_path / "gone"), str(tiny_bundle_b)))
        i, what = _sighup(live, notify_sock, i + 1)
        assert f"bundle {tiny_bundle_b.name} playing" in what, what
        st = _osc_status(port)
        assert st["bundle_playing"] == tiny_bundle_b.name and st["bundle"] == tiny_bundle_b.name
        assert len(st["controls"]["bias"]) == 4  # tiny-b's own controls (latent 4)
        time.sleep(1.2)
        status = read_status(status_file)
        assert status["model"] == tiny_bundle_b.name and "refused" not in status["last_reload"]
        assert status["periods"] > periods_before + 100  # the audio went on through both reloads
        live.proc.send_signal(signal.SIGTERM)
        code, summary = live.finish()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    print("".join(line for _, line in live.lines if "reload" in line or "bundle" in line))
    assert code == 0, live.stderr[-3000:]
    assert "Traceback" not in live.stderr
    assert summary["bundle_playing"] == tiny_bundle_b.name
    assert summary["bundle_switch"]["switched"] == 1 and summary["bundle_switch"]["failed"] == 0
    assert summary["xruns_unrecovered"] == 0


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_sigterm_sends_stopping_exits_cleanly_with_a_summary(tmp_path, tiny_bundle, jack, notify_sock):
    cfg = _write(tmp_path / "d.toml", tiny_bundle)
    status_file = tmp_path / "run" / "status.json"
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=None))
    notify_sock.wait_for("READY")
    time.sleep(1.2)
    st = read_status(status_file)  # correct while the loop runs
    assert st["state"] == "running" and st["pid"] == live.proc.pid and st["model"] == tiny_bundle.name
    assert st["xruns_unrecovered"] == 0 and st["rss_mb"] > 10 and st["latency_ms"] > 0
    assert st["restarts"] == 0
    live.proc.send_signal(signal.SIGTERM)
    t_term = time.monotonic()
    code, summary = live.finish(timeout=30)
    assert code == 0, live.stderr[-3000:]
    _, t_stop, _ = notify_sock.wait_for("STOPPING", timeout=1)
    assert t_stop >= t_term
    assert summary["event"] == "live_summary" and summary["frames"] >= RATE
    assert json.loads(status_file.read_text())["state"] == "stopped"
    with pytest.raises(StatusError, match="stopped"):
        read_status(status_file)
    assert "Traceback" not in live.stderr


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
@pytest.mark.skipif(not _can_set_fifo(), reason="SCHED_FIFO not permitted here (needs CAP_SYS_NICE or RLIMIT_RTPRIO)")
def test_realtime_priority_also_locks_memory_and_the_status_shows_it(tmp_path, tiny_bundle, jack, notify_sock):
    cfg = _write(tmp_path / "d.toml", tiny_bundle, extra="realtime_priority = 70")
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=None), seconds=2.5)
    notify_sock.wait_for("READY")
    time.sleep(1.2)
    st = read_status(tmp_path / "run" / "status.json")
    code, summary = live.finish()
    assert code == 0, live.stderr[-3000:]
    if not summary["memory_locked"]:
        pytest.skip("mlockall not permitted here: " + live.stderr[-500:])
    assert summary["realtime"] is True and st["realtime"] is True and st["memory_locked"] is True
    assert st["locked_mb"] > 10  # the interpreter, numpy, onnxruntime and the model are resident
    print(f"locked {st['locked_mb']} MB, RSS {st['rss_mb']} MB")


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_a_corrupt_preset_at_start_is_moved_aside_and_the_instrument_plays(tmp_path, tiny_bundle, jack, notify_sock):
    """A power cut left the preset loaded at start half-written: the service starts from [controls],
    the file is set aside as *.corrupt (so the next start does not trip on it), never a crash loop."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "evening.json").write_text('{"format": "wavae-preset", "version": 1, "controls": {"scale": ')
    good = '{"format": "wavae-preset", "version": 1, "name": "other", "bundle": null, "controls": {"scale": 1.5}}'
    (presets / "other.json").write_text(good)
    cfg = _write(tmp_path / "d.toml", tiny_bundle, extra=f'[presets]\ndir = "{presets}"\nload = "evening"\n')
    live = Live(cfg, _service_env(tmp_path, jack, notify_sock, watchdog_usec=None), seconds=2.5)
    notify_sock.wait_for("READY")
    code, summary = live.finish()
    assert code == 0, live.stderr[-3000:]
    assert sorted(p.name for p in presets.iterdir()) == ["evening.json.corrupt", "other.json"]
    assert (presets / "other.json").read_text() == good  # a good preset is left alone
    assert "preset evening skipped" in live.stderr and "starting from [controls]" in live.stderr
    assert "Traceback" not in live.stderr
    assert summary["frames"] >= 2 * RATE and summary["engine_stats"]["blocks"] > 0  # it played
