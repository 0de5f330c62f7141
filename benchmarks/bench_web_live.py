"""Does the web page hold the live instrument up?  GIL waits of the audio thread and xruns under the page's traffic.

    .venv/bin/python benchmarks/bench_web_live.py [--bundle B] [--seconds 40] [--busy 2] [--rate 5]

``wavae run`` plays live under a private ``jackd -d dummy`` server
(``tests/alsa_helpers.py``), at realtime priority where this machine allows
it, with ``--busy`` ordinary processes spinning beside it (``while 1:
pass``).  For ``--seconds`` it gets what the web page sends the instrument:
``/wavae/status``, ``--rate`` times a second (the page asks once a second;
more requests, more chances).  ``perf`` (when installed) records the
instrument's context switches: every time the audio thread sleeps in a futex
(the GIL) until it runs again is a GIL wait, runs of them joined (a waiter
wakes every switch interval to ask for the GIL).  A wait longer than the
period's slack is an xrun.  Writes docs/benchmarks/playground-live.md; text
after the ``NOTES`` marker in that file is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "docs" / "benchmarks" / "playground-live.md"
NOTES = "<!-- notes below this line are kept by benchmarks/bench_web_live.py -->"

from alsa_helpers import (  # noqa: E402
    JackServer,
    LiveInstrument,
    free_udp_port,
    jack_live_config,
    jackd_available,
    realtime_allowed,
)
from wavae.device.machine import cpu_name  # noqa: E402


def export_tiny(folder: Path) -> Path:
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.manual_seed(0)
    cfg = resolve("tiny")
    return export_bundle(build_model(cfg).eval(), cfg, folder / "tiny-fp32", block=2 * cfg.frame, precision="fp32")


SWITCH = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+\S+:\s+(.*)$")


def gil_waits(perf_data: Path, audio_tid: int) -> list[float]:
    """The audio thread's futex sleeps, joined when it ran < 0.2 ms between them, in ms."""
    out = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "tid,time,event,trace,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    sleeps, off, event, stack = [], None, None, []

    def close_event():
        nonlocal off
        if event is None:
            return
        t, trace = event
        fields = dict(re.findall(r"(\w+)=(\S+)", trace))
        if fields.get("prev_pid") == str(audio_tid):
            off = (t, any("futex" in s for s in stack))
        if fields.get("next_pid") == str(audio_tid) and off is not None:
            if off[1]:
                sleeps.append((off[0], t))
            off = None

    for line in out.splitlines():
        m = SWITCH.match(line)
        if m:
            close_event()
            event, stack = (float(m[2]), m[3]), []
        elif line.strip():
            stack.append(line.split()[-1])
    close_event()
    joined: list[list[float]] = []
    for a, b in sleeps:
        if joined and a - joined[-1][1] < 0.0002:
            joined[-1][1] = b
        else:
            joined.append([a, b])
    return sorted((b - a) * 1e3 for a, b in joined)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None, help="the bundle to play (default: an untrained tiny one)")
    ap.add_argument("--seconds", type=float, default=40.0, help="how long the traffic runs")
    ap.add_argument("--busy", type=int, default=2, help="ordinary processes spinning beside the instrument")
    ap.add_argument("--rate", type=float, default=5.0, help="/wavae/status requests a second")
    a = ap.parse_args()
    why = jackd_available()
    if why:
        print(f"bench_web_live: {why}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-live-"))
    bundle = Path(a.bundle) if a.bundle else export_tiny(tmp)
    realtime = realtime_allowed()
    period, rate = 256, 48000
    osc_port = free_udp_port()
    cfg = jack_live_config(tmp / "device.toml", bundle, osc_port, realtime,
                           rate=rate, period=period)
    perf = shutil.which("perf")
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(a.busy)]
    try:
        with JackServer(tmp, rate=rate, period=period, realtime=realtime) as jack:
            inst = LiveInstrument(cfg, jack, osc_port, tmp / "asound.conf", sys.executable).start()
            time.sleep(1.0)
            rec = None
            if perf:
                rec = subprocess.Popen([perf, "record", "-q", "-e", "sched:sched_switch", "-g", "-p",
                                        str(inst.proc.pid), "-o", str(tmp / "perf.data")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            before, asked = inst.status(), 0
            end = time.monotonic() + a.seconds
            while time.monotonic() < end:
                inst.status()
                asked += 1
                time.sleep(1.0 / a.rate)
            after = inst.status()
            if rec is not None:
                rec.send_signal(2)
                rec.wait()
            summary = inst.stop()
    finally:
        for b in busy:
            b.kill()
    waits = gil_waits(tmp / "perf.data", inst.proc.pid) if perf else []
    slack_ms = 1e3 * period / rate  # inline threading, two periods of pre-fill: one period of slack
    row = {"status requests": asked, "xruns": after["xruns"] - before["xruns"],
           "GIL waits": len(waits), f"> {slack_ms:.1f} ms": sum(w > slack_ms for w in waits),
           "> 1.5 ms": sum(w > 1.5 for w in waits), "longest (ms)": round(waits[-1], 2) if waits else None}
    print(json.dumps(row))
    kept = OUT.read_text().split(NOTES, 1)[1] if OUT.exists() and NOTES in OUT.read_text() else "\n"
    lines = [
        "# The web page and the live instrument: GIL waits and xruns",
        "",
        f"Measured by `benchmarks/bench_web_live.py` on {cpu_name() or platform.machine()} ({platform.node()}), "
        f"bundle `{bundle.name}`, `wavae run` inline under JACK dummy at {rate} Hz, period {period}, "
        f"{'realtime' if realtime else 'normal'} priority, {a.busy} busy processes beside it, "
        f"`/wavae/status` asked {a.rate:g} times a second for {a.seconds:g} s"
        f"{'' if perf else ' (perf not installed: no GIL figures)'}.",
        "",
        "| " + " | ".join(row) + " |",
        "|" + "---:|" * len(row),
        "| " + " | ".join(str(v) for v in row.values()) + " |",
        "",
        f"The run's xruns in all: {summary['xruns']} ({summary['xruns_unrecovered']} unrecovered).",
        "",
        NOTES,
    ]
    OUT.write_text("\n".join(lines) + kept)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
