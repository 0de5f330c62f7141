"""Per-block compute of the device engine on this CPU (onnxruntime), fp32 and int8.

    .venv/bin/python benchmarks/bench_device.py [--run RUN] [--blocks-timed 200] [--repeats 3] [--quick]

Bundles: the ``wavae`` preset at blocks of 512 and 1024 model samples; 256 is
below its latent frame (512) and cannot be served, so the 256 row uses the
``lowlatency`` preset (frame 128) and says so.  Without ``--run`` the models
have untrained, seeded weights: compute time does not depend on the weights
(int8 calibration uses generated harmonic audio).

Each configuration is timed in a fresh subprocess that imports only the
device side (no torch), through the real ``Engine`` at the model rate with one
period per model block: controls, guards and the feedback path (off) included.
Per block: p50 / p99 / max wall-clock compute, CPU time (1 thread), RTF =
p50 / block duration, and the two graph steps alone.  This machine is shared:
every configuration runs ``--repeats`` times, interleaved, and the least
disturbed run (lowest p50) is reported with the others' p50 beside it.

Writes docs/benchmarks/device.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from wavae.device.machine import cpu_name  # noqa: E402
from wavae.progress import track  # noqa: E402
from wavae.signals import harmonic_notes as notes  # noqa: E402
OUT = ROOT / "docs" / "benchmarks" / "device.md"
CACHE = Path(os.environ.get("WAVAE_BENCH_CACHE", Path(tempfile.gettempdir()) / "wavae-bench-device"))

SEED = {"block": 512, "rate": 24000, "p50_1t": 22.5, "p50_2t": 17.2, "block_ms": 21.3}

# (label, preset, block)
BLOCKS = [
    ("256 (lowlatency preset)", "lowlatency", 256),
    ("512", "wavae", 512),
    ("1024", "wavae", 1024),
]


# ----------------------------------------------------------------------------- export (torch)
def export_bundles(run: str | None, precisions: list[str]) -> dict[tuple[str, int, str], Path]:
    import torch

    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.set_num_threads(1)
    out = {}
    models = {}
    for _, preset, block in BLOCKS:
        for prec in precisions:
            tag = "run" if run else "untrained"
            path = CACHE / f"{preset}-{block}-{prec}-{tag}"
            if not (path / "manifest.json").is_file():
                if preset not in models:
                    if run and Path(run).is_dir():
                        from wavae.train.checkpoint import load_run

                        cfg, model, _ = load_run(run)
                        if cfg.name != preset:
                            torch.manual_seed(0)
                            cfg = resolve(preset)
                            model = build_model(cfg).eval()
                    else:
                        torch.manual_seed(0)
                        cfg = resolve(preset)
                        model = build_model(cfg).eval()
                    models[preset] = (cfg, model)
                cfg, model = models[preset]
                calib = None
                if prec == "int8":
                    calib = [notes(4.0, cfg.frontend.sample_rate, seed=100 + i) for i in range(4)]
                print(f"exporting {path.name} ...", file=sys.stderr, flush=True)
                export_bundle(model, cfg, path, block=block, precision=prec, calibration=calib, force=True)
            out[(preset, block, prec)] = path
    return out


# ----------------------------------------------------------------------------- timing (device only)
def time_config(bundle_dir: str, threads: int, blocks: int, io_binding: bool = True, spin: bool = False) -> dict:
    """Runs in a subprocess: device code only.  One engine call = one model block."""
    import numpy as np

    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine

    b = load_bundle(bundle_dir)
    be = make_backend(b, "onnxruntime", threads=threads, io_binding=io_binding, spin=spin)
    eng = Engine(b, be, device_rate=b.sample_rate, period=b.block)
    x = notes((blocks + 40) * b.block / b.sample_rate, b.sample_rate, seed=7)[:, None]
    out = np.zeros((b.block, 1), np.float32)
    for k in range(30):  # warm-up
        eng.process(x[k * b.block : (k + 1) * b.block], out=out)
    wall, cpu = np.zeros(blocks), np.zeros(blocks)
    for k in range(blocks):
        xi = x[(k + 30) * b.block : (k + 31) * b.block]
        c0, t0 = time.thread_time(), time.perf_counter()
        eng.process(xi, out=out)
        wall[k], cpu[k] = time.perf_counter() - t0, time.thread_time() - c0
    # the two graph steps alone
    es, ds = be.init_state("encoder"), be.init_state("decoder")
    enc_in, dec_in = be.input_buffers("encoder"), be.input_buffers("decoder")
    bt = []
    for k in range(min(blocks, 100)):
        enc_in["audio"][...] = x[k * b.block : (k + 1) * b.block, 0].reshape(1, 1, -1)
        t1 = time.perf_counter()
        eo, es = be.process("encoder", enc_in, es)
        dec_in["z"][...] = eo["z_mean"]
        dec_in["loudness"][...] = eo["loudness"]
        _, ds = be.process("decoder", dec_in, ds)
        bt.append(time.perf_counter() - t1)
    ms = wall * 1e3
    block_ms = 1e3 * b.block / b.sample_rate
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "cpu_p50_ms": float(np.percentile(cpu * 1e3, 50)),
        "block_ms": block_ms,
        "rtf_p50": float(np.percentile(ms, 50)) / block_ms,
        "graphs_p50_ms": float(np.percentile(np.array(bt) * 1e3, 50)),
        "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
        "load": os.getloadavg()[0],
    }


def run_timing(bundle: Path, threads: int, blocks: int, **kw) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    code = (
        "import json, sys; sys.path.insert(0, %r); import bench_device as B; "
        "print('RESULT' + json.dumps(B.time_config(%r, %d, %d, **%r)))"
        % (str(Path(__file__).parent), str(bundle), threads, blocks, kw)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"timing subprocess failed:\n{r.stderr}")
    res = json.loads(line[6:])
    if res["torch_loaded"]:
        raise RuntimeError("torch was imported in the device timing process")
    return res


def best_of(results: list[dict]) -> dict:
    """The least-disturbed repeat (lowest p50) of one configuration, with the spread of p50s."""
    best = dict(min(results, key=lambda r: r["p50_ms"]))
    best["p50_all"] = sorted(r["p50_ms"] for r in results)
    best["cpu_p50_ms"] = min(r["cpu_p50_ms"] for r in results)
    return best


# ----------------------------------------------------------------------------- report
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a trained run of the wavae preset (default: untrained weights)")
    ap.add_argument("--blocks-timed", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per configuration, interleaved")
    ap.add_argument("--quick", action="store_true", help="fp32 only, 60 blocks, 1 repeat (a smoke run)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the last results")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    precisions = ["fp32"] if a.quick else ["fp32", "int8"]
    n = 60 if a.quick else a.blocks_timed
    repeats = 1 if a.quick else a.repeats
    CACHE.mkdir(parents=True, exist_ok=True)
    raw_path = CACHE / "results.json"
    if a.report_only:
        raw = json.loads(raw_path.read_text())
    else:
        raw = measure(a, precisions, n, repeats)
        raw_path.write_text(json.dumps(raw, indent=1))
    write_report(Path(a.out), raw)
    print(f"wrote {a.out}")
    return 0


def measure(a, precisions, n, repeats) -> dict:
    bundles = export_bundles(a.run, precisions)
    configs = [(label, preset, block, prec, th, {}) for label, preset, block in BLOCKS for prec in precisions
               for th in (1, 2)]
    # I/O binding and thread spinning, at the seed's configuration
    for th, io, spin in [(1, False, False), (1, True, False), (2, True, False), (2, True, True)]:
        configs.append(("512", "wavae", 512, "fp32", th, {"io_binding": io, "spin": spin}))
    results: dict[int, list] = {i: [] for i in range(len(configs))}
    load0 = os.getloadavg()
    # round robin: each repeat visits every configuration, so a burst of outside load
    # spoils one repeat of several configurations rather than all repeats of one
    jobs = [(r, i) for r in range(repeats) for i in range(len(configs))]
    for r, i in track(jobs, "timing", "run"):
        label, preset, block, prec, th, kw = configs[i]
        results[i].append(run_timing(bundles[(preset, block, prec)], th, n, **kw))
    rows = []
    for i, (label, preset, block, prec, th, kw) in enumerate(configs):
        t = best_of(results[i])
        rows.append({"label": label, "preset": preset, "block": block, "precision": prec, "threads": th,
                     "variant": kw, "t": t})
        print(f"{label:>24} {prec} {th}t {kw or ''}: p50 {t['p50_ms']:.2f} (repeats {t['p50_all']}) "
              f"p99 {t['p99_ms']:.2f} max {t['max_ms']:.2f} ms / {t['block_ms']:.2f} ms  RTF {t['rtf_p50']:.3f} "
              f"cpu {t['cpu_p50_ms']:.2f} graphs {t['graphs_p50_ms']:.2f}", flush=True)
    import numpy as np
    import onnxruntime

    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(), "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__, "run": a.run, "blocks": n, "repeats": repeats,
        "load_before": load0, "load_after": os.getloadavg(), "rows": rows,
    }


# MACs per second of audio, from docs/benchmarks/model.md (benchmarks/model_stats.py)
GMACS = {"wavae": 4.781, "lowlatency": 7.011}


def write_report(path: Path, raw: dict) -> None:
    def fmt(v):
        return f"{v:.2f}"

    main_rows = [r for r in raw["rows"] if not r["variant"]]
    g = {(r["preset"], r["block"], r["precision"], r["threads"]): r["t"]["graphs_p50_ms"] for r in main_rows}
    ratio = g.get(("wavae", 1024, "fp32", 1), float("nan")) / g.get(("wavae", 512, "fp32", 1), float("nan"))
    p50 = {(r["preset"], r["block"], r["precision"], r["threads"]): r["t"]["p50_ms"] for r in main_rows}
    two = p50.get(("wavae", 512, "fp32", 2), float("nan")) / p50.get(("wavae", 512, "fp32", 1), float("nan"))
    var_rows = [r for r in raw["rows"] if r["variant"]]
    la, lb = raw["load_before"], raw["load_after"]
    lines = [
        "# Device engine: per-block compute on this CPU",
        "",
        f"Measured {raw['when']} by `benchmarks/bench_device.py` on {raw['cpu']} ({raw['cores']} cores, **shared with "
        f"other jobs**: 1-minute load average {la[0]:.1f} before, {lb[0]:.1f} after), onnxruntime {raw['onnxruntime']}, "
        f"numpy {raw['numpy']}; {'trained run ' + raw['run'] if raw['run'] else 'untrained seeded weights (compute does not depend on them)'}.",
        "",
        f"Each configuration ran {raw['repeats']} times, each in a fresh process without torch, interleaved round "
        f"robin; each run timed {raw['blocks']} blocks after 30 warm-up blocks; the table gives the run with the lowest "
        f"p50 (the least disturbed by the other jobs), with the other runs' p50 beside it. Per block = the whole "
        f"`Engine` block path at the model rate (input FIFO, encoder step, latent controls, decoder step, guard, "
        f"limiter, output FIFO), wall clock; *CPU* = the calling thread's CPU time per block (1 thread only: it "
        f"excludes time the process waited for a core); *graphs* = the two onnxruntime steps alone. "
        f"RTF = p50 / block duration (below 1 is real time). onnxruntime threads do not spin (see the last table).",
        "",
        "| block (model samples) | preset | precision | threads | block ms | p50 ms | p99 ms | max ms | RTF | CPU p50 ms | graphs p50 ms | p50 of all runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in main_rows:
        t = r["t"]
        cpu = fmt(t["cpu_p50_ms"]) if r["threads"] == 1 else "-"
        lines.append(
            f"| {r['label']} | {r['preset']} | {r['precision']} | {r['threads']} | {fmt(t['block_ms'])} | "
            f"**{fmt(t['p50_ms'])}** | {fmt(t['p99_ms'])} | {fmt(t['max_ms'])} | {t['rtf_p50']:.3f} | {cpu} | "
            f"{fmt(t['graphs_p50_ms'])} | {', '.join(fmt(v) for v in t['p50_all'])} |"
        )
    lines += [
        "",
        "Block 256 is below the `wavae` preset's latent frame (512 samples), so the `wavae` preset cannot be "
        "served at 256 (N/A); the 256 row is the `lowlatency` preset (frame 128 at 24 kHz), a different and "
        "heavier model (7.0 GMAC/s of audio against 4.8, docs/benchmarks/model.md).",
        "",
        "## Against the seed",
        "",
        "The original wavae streaming code, default model, block 512 at 24 kHz, measured on this machine: p50 "
        f"{SEED['p50_1t']} ms per {SEED['block_ms']} ms block at 1 thread (RTF 1.06, not real time), "
        f"{SEED['p50_2t']} ms at 2 threads (RTF 0.80). The `wavae` preset is the same model (4.78 GMAC/s, "
        "89 % MelGAN) and fp32 computes the same output (the engine equals the torch reference to 1e-5, "
        "tests/test_device_engine.py).",
        "",
        "| configuration | p50 ms per 21.3 ms of audio | speed-up vs the seed (same thread count) | effective GMAC/s |",
        "|---|---:|---:|---:|",
    ]
    for r in main_rows:
        if r["preset"] != "wavae":
            continue
        t = r["t"]
        per_512 = t["p50_ms"] * 512 / r["block"]
        seed = SEED["p50_1t"] if r["threads"] == 1 else SEED["p50_2t"]
        gmacs = GMACS["wavae"] * (t["block_ms"] / t["p50_ms"])
        lines.append(f"| block {r['block']}, {r['precision']}, {r['threads']} thread(s) | {per_512:.2f} | "
                     f"**{seed / per_512:.1f}x** | {gmacs:.1f} |")
    lines += [
        "",
        "## What limits it",
        "",
        f"- **Fixed cost per call, not per sample.** At one thread the two graphs take {ratio:.2f}x as long for "
        "a 1024-sample block as for a 512-sample one (*graphs p50*), for twice the audio: a large part of a step "
        "does not depend on its length. The graphs hold 13.6 M parameters (54 MB in fp32, more than this CPU's "
        "32 MB L3) and the encoder and the VAE decoder apply theirs to only one or two latent frames per block, "
        "so every call streams most of the weights from memory, and runs a few hundred small nodes (the "
        "streaming-state Slice/Concat around each convolution) with their dispatch overhead. Larger blocks "
        "amortise this (block 1024 reaches 4x the seed's speed) at the price of latency (+21.3 ms); at block "
        "512 the fp32 engine is about 3x the seed.",
        "- **int8 does not help on this CPU.** The int8 bundles (QDQ, per-channel weights) are slower than fp32 "
        "here. Likely causes: every quantised convolution sits between QuantizeLinear/DequantizeLinear pairs "
        "(the float streaming state is concatenated in front of each one, so activations go back and forth), and "
        "this AVX2 CPU has no VNNI, so the int8 kernels gain little. A Pi 4 (Cortex-A72, no dot-product "
        "instructions) may behave the same; measure there before choosing int8.",
        f"- **Two threads** take {two:.0%} of the one-thread p50 at block 512 (fp32): the convolutions split, the "
        "dispatch overhead does not, and the second core is shared with other jobs here. Spinning worker threads "
        "(onnxruntime's default) made the p50 much worse on this shared machine (last table), so the backend "
        "turns spinning off.",
        "- **Engine overhead** (controls, guards, FIFOs, limiter) is the gap between *p50* and *graphs p50*: a few "
        "hundred microseconds per block, the feedback filter adding ~0.3 us per sample when it is on.",
        "",
        "## I/O binding and thread spinning (wavae, block 512, fp32)",
        "",
        "| threads | I/O binding | spinning | p50 ms | p99 ms | graphs p50 ms | p50 of all runs |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for r in var_rows:
        t, v = r["t"], r["variant"]
        lines.append(f"| {r['threads']} | {'yes' if v['io_binding'] else 'no'} | {'yes' if v['spin'] else 'no'} | "
                     f"{fmt(t['p50_ms'])} | {fmt(t['p99_ms'])} | {fmt(t['graphs_p50_ms'])} | "
                     f"{', '.join(fmt(x) for x in t['p50_all'])} |")
    lines += ["", "p99 and max on this shared 2-core machine include other jobs' interference; p50 (and, at one "
              "thread, CPU time) is the figure to compare.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
