"""Start-up of the service: process start to READY=1, median of several runs.

    .venv/bin/python benchmarks/bench_service.py [--runs 7] [--bundle B ...]

``wavae run --config`` is started as systemd starts a ``Type=notify`` unit: a
datagram socket bound here (``NOTIFY_SOCKET``, tests/service_helpers.py), the
runtime folder in ``RUNTIME_DIRECTORY``, under a private ``jackd -d dummy``
server (tests/alsa_helpers.py) at realtime priority where this machine allows
it.  READY=1 is sent once the first model block has been played
(``wavae.device.service``).  Two figures per run: the wall time from the
``Popen`` call here to the arrival of READY=1 (what systemd sees: interpreter
start, imports, config, PCMs, bundle load, first block), and the service's own
``ready_after_s`` (from the process's start time in ``/proc``).

Bundles, int8 (what the shipped configs name): the ``tiny`` preset trained
briefly (benchmarks/soak.py makes and caches it), and the ``wavae`` preset
(the default model's architecture, block 512 at 24 kHz) with untrained,
seeded weights, calibrated on generated audio: load time depends on the
graph, not on the weights.  No trained default model is shipped yet.

Rewrites the start-up section of docs/benchmarks/service.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import soak  # noqa: E402  (also puts tests/ on the path: the JACK server and the notify socket)
from alsa_helpers import JackServer, jackd_available, realtime_allowed  # noqa: E402
from service_helpers import NotifySocket  # noqa: E402

DOC = soak.ROOT / "docs" / "benchmarks" / "service.md"
BEGIN, END = "<!-- bench_service.py: start-up -->", "<!-- /bench_service.py -->"
TARGET_S = 3.0
WAVAE = [sys.executable, "-m", "wavae.cli"]


def default_model_bundle(cache: Path = soak.CACHE) -> Path:
    """The ``wavae`` preset, untrained (seeded), int8 at block 512; exported once and cached (needs torch)."""
    out = cache / "wavae-512-int8-untrained"
    if (out / "manifest.json").is_file():
        return out
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.signals import harmonic_notes
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = resolve("wavae")
    model = build_model(cfg).eval()
    calib = [harmonic_notes(4.0, cfg.frontend.sample_rate, seed=100 + i) for i in range(4)]
    print(f"exporting {out.name} ...", file=sys.stderr, flush=True)
    return export_bundle(model, cfg, out, block=512, precision="int8", calibration=calib, force=True)


def one_start(bundle: Path, jack: JackServer, work: Path, realtime: bool) -> dict:
    cfg = soak.instrument_config(work / "device.toml", bundle, threading_mode="worker", realtime=realtime)
    notify = NotifySocket()
    try:
        env = soak.service_env(work, jack, notify)
        t0 = time.monotonic()
        proc = subprocess.Popen(WAVAE + ["run", "--config", str(cfg)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, t_ready, _ = notify.wait_for("READY", timeout=120)
            wall = t_ready - t0
            time.sleep(1.2)  # one status write after READY=1
            status = json.loads((work / "run" / "status.json").read_text())
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    finally:
        notify.close()
    if proc.returncode != 0:
        raise RuntimeError(f"wavae run exited with {proc.returncode}: {err[-2000:]}")
    return {"spawn_to_ready_s": round(wall, 3), "ready_after_s": status.get("ready_after_s"),
            "xruns": json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])["xruns"]}


def measure(bundles: list[Path], runs: int) -> dict:
    why = jackd_available()
    if why is not None:
        raise RuntimeError(why)
    realtime = realtime_allowed()
    results: dict[str, list[dict]] = {b.name: [] for b in bundles}
    with tempfile.TemporaryDirectory(prefix="wavae-startup-") as tmp:
        work = Path(tmp)
        with JackServer(work, rate=soak.RATE, period=soak.PERIOD, realtime=realtime) as jack:
            for k in range(runs):  # interleaved, so the machine's load falls on every bundle alike
                for b in bundles:
                    r = one_start(b, jack, work, realtime)
                    results[b.name].append(r)
                    print(f"{b.name} run {k + 1}: {r}", file=sys.stderr, flush=True)
    rows = {}
    for b in bundles:
        rs = results[b.name]
        man = json.loads((b / "manifest.json").read_text())
        rows[b.name] = {
            "preset": (man.get("source") or {}).get("preset") or man.get("preset"),
            "precision": man.get("precision"),
            "size_mb": round(sum(f.stat().st_size for f in b.iterdir() if f.is_file()) / 1e6, 2),
            "spawn_to_ready_s": [r["spawn_to_ready_s"] for r in rs],
            "ready_after_s": [r["ready_after_s"] for r in rs],
            "median_spawn_to_ready_s": statistics.median(r["spawn_to_ready_s"] for r in rs),
            "median_ready_after_s": statistics.median(r["ready_after_s"] for r in rs),
        }
    return {"realtime": realtime, "runs": runs, "bundles": rows,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_avg": os.getloadavg()[0], "python": platform.python_version(), "cores": os.cpu_count()}


def section(m: dict) -> str:
    lines = [
        BEGIN,
        "## Start-up to READY=1",
        "",
        f"`benchmarks/bench_service.py --runs {m['runs']}`, {m['date_utc']}, {m['cores']} shared cores (load average "
        f"{m['load_avg']:.1f} at the end), Python {m['python']}: `wavae run --config` started as systemd starts "
        f"the unit (a bound notify socket, `RUNTIME_DIRECTORY`), under `jackd -d dummy` (48 kHz, period 256), "
        f"threading `worker`, 1 onnxruntime thread, realtime priority {'on' if m['realtime'] else 'off'}. "
        f"Spawn to READY=1: from the `Popen` call to the arrival of READY=1 (interpreter, imports, config, PCMs, "
        f"bundle, first model block played); `ready_after_s`: the service's own figure, from the process start "
        f"time in `/proc`. Runs interleaved across the bundles. Target: <= {TARGET_S:g} s.",
        "",
        "| bundle | model | size MB | spawn to READY=1, median (s) | runs (s) | ready_after_s, median | target |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for name, r in m["bundles"].items():
        ok = "met" if r["median_spawn_to_ready_s"] <= TARGET_S else "missed"
        runs = ", ".join(f"{x:.2f}" for x in r["spawn_to_ready_s"])
        lines.append(f"| `{name}` | {r['preset']} {r['precision']} | {r['size_mb']} | "
                     f"**{r['median_spawn_to_ready_s']:.2f}** | {runs} | {r['median_ready_after_s']:.2f} | {ok} |")
    lines += [
        "",
        "No trained default model is shipped yet: the `wavae` row is the default model's graph with untrained, "
        "seeded weights (the load time depends on the graph, not on the weights); the `tiny` row is a briefly "
        "trained run. Both are int8, as the shipped configs name. On a Pi 4 the imports and the session "
        "creation take longer than on this x86 machine: the figure there is still to be measured.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(m: dict, doc: Path = DOC) -> None:
    text = doc.read_text()
    new = section(m)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    doc.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--bundle", action="append", type=Path, default=None,
                   help="bundle(s) to start (default: the tiny run's int8 and the wavae preset's int8)")
    args = p.parse_args()
    bundles = args.bundle or [soak.tiny_bundles()[0], default_model_bundle()]
    m = measure(bundles, args.runs)
    write_doc(m)
    print(json.dumps(m, indent=1))
    worst = max(r["median_spawn_to_ready_s"] for r in m["bundles"].values())
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
