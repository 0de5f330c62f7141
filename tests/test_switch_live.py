"""Live under a JACK dummy server: steady OSC traffic and a bundle switch over OSC, the audio never stops.

``wavae run --config`` plays two bundles (``[bundle] paths``) through the
``jplug`` PCM of a private ``jackd -d dummy`` server (``alsa_helpers``), with
``[osc]`` on.  A client sends control messages at 50 a second for the whole
run (``SECONDS``, the issue's 30 s) and, two seconds in, ``/wavae/bundle
tiny-b``: the reply says the switch started, ``/wavae/status`` soon says
``tiny-b`` is playing with its own (4-dimension) controls, every control
message was applied, the summary counts one switch, the run reached its 30 s
of audio and no xrun went unrecovered.  Where realtime scheduling is allowed
the server and the loop run at realtime priority, as the service is meant to.

The xrun count is printed, not asserted to be 0: it is a timing figure (the
project keeps those in benchmarks), and on this project's two shared, loaded
cores it is not steady.  Measured here: 0 in a 20 s run; 2 and 7 in 30 s
runs, the 2 during the new bundle's load (the loader, at ordinary priority,
holds the GIL while other processes preempt it, so the SCHED_FIFO audio
thread waits for it: see wavae.device.switch), the others late in the run,
with no switch under way, from other test runs at realtime priority.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alsa_helpers import JackServer, alsa_env, free_udp_port, jack_config, jack_pcms, jackd_available, realtime_allowed

pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")
pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402
from pythonosc.osc_message import OscMessage  # noqa: E402

_why = jackd_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]

RATE, PERIOD, SECONDS = 48000, 256, 30.0
REALTIME = realtime_allowed()
WAVAE = [sys.executable, "-m", "wavae.cli"]


def _msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def _ask(client: socket.socket, port: int, packet: bytes, address: str) -> dict:
    """Send ``packet`` and return the JSON of the first reply to ``address``."""
    client.sendto(packet, ("127.0.0.1", port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data, _ = client.recvfrom(65536)
        msg = OscMessage(data)
        if msg.address == address:
            return json.loads(msg.params[0])
    raise AssertionError(f"no {address} reply")


def test_osc_traffic_and_a_bundle_switch_give_no_xrun(tmp_path: Path, tiny_bundle, tiny_bundle_b):
    port = free_udp_port()
    cfg = tmp_path / "switch.toml"
    cfg.write_text(f"""
[bundle]
paths = ["{tiny_bundle}", "{tiny_bundle_b}"]
crossfade_ms = 100
{jack_config("inline", REALTIME, RATE, PERIOD)}
[controls]
feedback_gain = 0.3
[osc]
port = {port}
""")
    with JackServer(tmp_path, rate=RATE, period=PERIOD, realtime=REALTIME) as jack:
        env = alsa_env(jack_pcms(tmp_path / "asound.conf"), jack.env())
        env["OMP_NUM_THREADS"] = "1"
        proc = subprocess.Popen(WAVAE + ["run", "--config", str(cfg), "--seconds", str(SECONDS)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        started = threading.Event()

        def read_stderr():
            for line in proc.stderr:
                lines.append(line)
                if " live: " in line:
                    started.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        sent, replies = 0, {}
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5.0)
        try:
            assert started.wait(60), "the live loop never started:\n" + "".join(lines)
            t0 = time.monotonic()
            switched_at = None
            while proc.poll() is None and time.monotonic() - t0 < SECONDS - 2.0:
                t = time.monotonic() - t0
                client.sendto(_msg("/wavae/control/bias.0", 2.0 * ((sent % 40) / 20.0 - 1.0)), ("127.0.0.1", port))
                client.sendto(_msg("/wavae/control/feedback_freq", 400.0 + 10.0 * (sent % 100)), ("127.0.0.1", port))
                sent += 2
                if switched_at is None and t >= 2.0:
                    replies["bundle"] = _ask(client, port, _msg("/wavae/bundle", "tiny-b"), "/wavae/bundle")
                    switched_at = t
                if "playing" not in replies and switched_at is not None and t >= switched_at + 3.0:
                    replies["playing"] = _ask(client, port, _msg("/wavae/status"), "/wavae/status")
                time.sleep(0.04)  # 2 messages every 40 ms: 50 a second
            replies["end"] = _ask(client, port, _msg("/wavae/status"), "/wavae/status")
            proc.wait(timeout=60)
            stdout = proc.stdout.read()
        finally:
            client.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
    stderr = "".join(lines)
    print("".join(ln for ln in lines if "xrun" in ln or "bundle" in ln or " live: " in ln))
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    print("live switch:", json.dumps({k: summary.get(k) for k in
                                      ("wall_s", "frames", "xruns", "xruns_unrecovered", "late_periods",
                                       "xrun_frames", "bundle_playing", "bundle_switch")}),
          f"OSC messages sent: {sent}")
    assert replies["bundle"] == {"bundle": "tiny-b", "ok": True, "error": None}
    assert replies["playing"]["bundle_playing"] == "tiny-b"
    assert replies["playing"]["controls"]["bias"].__len__() == 4  # the controls are tiny-b's (latent 4)
    assert replies["end"]["rejected"] == {}  # every control message was applied
    assert summary["bundle_playing"] == "tiny-b"
    assert summary["bundle_switch"]["switched"] == 1 and summary["bundle_switch"]["failed"] == 0
    assert summary["frames"] >= SECONDS * RATE
    assert sent >= 40 * (SECONDS - 4)
    assert summary["xruns_unrecovered"] == 0
