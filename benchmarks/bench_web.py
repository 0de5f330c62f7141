"""Memory and render time of ``wavae web`` (the playground issue's figure: RSS <= 80 MB idle).

    .venv/bin/python benchmarks/bench_web.py [--bundle B] [--seconds 3]

Starts ``wavae web`` as its own process against the instrument's real OSC
server (in this process, without the audio loop), then reads the web
process's resident memory (``VmRSS``, ``VmHWM`` from /proc):

1. idle, just started;
2. after a live page's worth of traffic: the page, its assets, ``/api/info``
   and a WebSocket open for 5 s receiving the status once a second;
3. after the playground: two uploads, an A->B render and a plane render;
   the render worker (a separate, niced process) reports its own peak.

and the import cost of the pieces, in fresh interpreters.  Writes
docs/benchmarks/playground.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "playground.md"

from wavae.device.actions import Actions  # noqa: E402
from wavae.device.bundle import read_manifest  # noqa: E402
from wavae.device.controls import Controls  # noqa: E402
from wavae.device.machine import cpu_name  # noqa: E402
from wavae.device.osc import OscServer  # noqa: E402
from wavae.signals import harmonic_notes  # noqa: E402


def rss(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def import_rss(modules: str) -> float:
    code = (f"import importlib\nfor m in {modules.split(',')!r}: importlib.import_module(m)\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    return int(subprocess.check_output([sys.executable, "-c", code], text=True)) / 1024


def ws_listen(port: int, seconds: float) -> int:
    """A bare WebSocket client: handshake, then count the server's messages for ``seconds``."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    s.settimeout(0.5)
    end, n, buf = time.monotonic() + seconds, 0, b""
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        n += chunk.count(b'"type":"status"')
    s.close()
    return n


def request(url: str, data: bytes | None = None) -> dict | bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=120) as r:
        body = r.read()
    return json.loads(body) if r.headers.get("Content-Type", "").startswith("application/json") else body


def export_tiny(tmp: Path) -> Path:
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.manual_seed(0)
    cfg = resolve("tiny")
    return export_bundle(build_model(cfg).eval(), cfg, tmp / "tiny-fp32", block=2 * cfg.frame, precision="fp32")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None, help="bundle to render with (default: an untrained tiny one)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each uploaded sound")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    bundle = Path(a.bundle) if a.bundle else export_tiny(tmp)
    controls = Controls(read_manifest(bundle)["latent_dim"])
    osc = OscServer(Actions(controls, bundle=bundle.name, status=lambda: {"xruns": 0, "latency_ms": 10.0}),
                    "127.0.0.1", 0).start()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "wavae", "web", "--bundle", str(bundle), "--state-dir",
                             str(tmp / "state"), "--port", "0", "--osc-port", str(osc.address[1])],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    url = proc.stdout.readline().split("serving ", 1)[1].split()[0]
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    rows = []
    try:
        time.sleep(1.0)
        rows.append(("idle, just started", rss(proc.pid)))
        for path in ("", "static/style.css", "static/common.js", "static/live.js", "api/info", "playground",
                     "static/draw.js", "static/playground.js"):
            request(url + path)
        statuses = ws_listen(port, 5.0)
        time.sleep(1.0)
        rows.append((f"after the live page and 5 s of WebSocket status ({statuses} updates)", rss(proc.pid)))
        for name, seed in (("a", 1), ("b", 2)):
            wav = tmp / f"{name}.wav"
            sf.write(wav, harmonic_notes(a.seconds, 48000, seed=seed), 48000)
            request(url + f"api/playground/upload?name={name}.wav", wav.read_bytes())
        t0 = time.perf_counter()
        ab = request(url + "api/playground/render",
                     json.dumps({"source": {"kind": "interpolate", "sounds": ["a", "b"]}, "ops": []}).encode())
        render_s = time.perf_counter() - t0
        request(url + "api/playground/render", json.dumps({"source": {"kind": "plane", "sounds": ["a", "b", "b", "a"],
                "xy": [[0, 0, 0], [1, 1, 1]]}, "ops": [{"op": "reverse"}]}).encode())
        time.sleep(1.0)
        rows.append(("after two uploads and two renders (idle again)", rss(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(10)
        osc.stop()
    imports = [
        ("bare interpreter", import_rss("sys")),
        ("asyncio + python-osc + wavae.device.web.app", import_rss(
            "asyncio,pythonosc.osc_packet,pythonosc.osc_message_builder,wavae.device.web.app")),
        ("wavae.device.cli_web (with wavae.device.config)", import_rss("wavae.device.cli_web")),
    ]
    lines = [
        "# Playground: memory of `wavae web` and render time",
        "",
        f"Measured by `benchmarks/bench_web.py` on {cpu_name()} (shared 2-core build machine), "
        f"bundle `{bundle.name}`, {a.seconds:g} s sounds at 48 kHz. Target: RSS of the web process <= 80 MB idle.",
        "",
        "| web process | RSS (MiB) | peak (MiB) |",
        "|---|---:|---:|",
        *[f"| {what} | {r['VmRSS']:.1f} | {r['VmHWM']:.1f} |" for what, r in rows],
        "",
        f"Render worker (own process, nice {ab.get('nice')}): peak RSS {ab.get('worker_rss_peak_mib', 0):.1f} MiB; "
        f"an A->B render of {ab['seconds']:.2f} s took {render_s:.2f} s end to end (worker start, onnxruntime "
        f"session, decode, WAV, spectrogram).",
        "",
        "| imports, in a fresh interpreter | RSS (MiB) |",
        "|---|---:|",
        *[f"| {what} | {v:.1f} |" for what, v in imports],
        "",
        "The server, the OSC link and the page need no numpy: what the web process holds beyond about 26 MiB "
        "comes from `wavae.device.config`, which imports `wavae.device.backends` (numpy, onnxruntime) and "
        "`wavae.device.engine` for two name lists (`BACKENDS`, `DEVICE_RATES`). Moving those lists to a module "
        "without numpy would bring the idle web process down to about the second row.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
