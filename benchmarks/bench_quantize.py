"""Speed and quality of the export paths: torch streaming, onnxruntime fp32 / int8,
and pruned-0.5 + int8, on this CPU at one thread.

    .venv/bin/python benchmarks/bench_quantize.py [--preset wavae] [--block 512] [--run RUN]

Without ``--run`` the model has untrained weights (seeded): timings are what
they are, but the quality columns then only say how far each path departs from
fp32 on the same untrained network, not how good it sounds.  Held-out audio is
generated (harmonic notes), as is the int8 calibration audio (other seeds).

Writes the Markdown table to docs/benchmarks/quantize.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from wavae.device.machine import cpu_name  # noqa: E402
from wavae.signals import harmonic_notes as notes  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "quantize.md"


def time_blocks(step, blocks: list[np.ndarray], warmup: int = 20) -> float:
    """Median milliseconds per block of ``step(block)``, after ``warmup`` calls."""
    for b in blocks[:warmup]:
        step(b)
    times = []
    for b in blocks:
        t0 = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def torch_stepper(model):
    state = {"enc": model.init_encoder_state(1), "dec": model.init_decoder_state(1)}

    @torch.no_grad()
    def step(block: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(block).view(1, 1, -1)
        (z, _, loud), state["enc"] = model.encode_step(x, state["enc"])
        y, state["dec"] = model.decode_step(z, loud, state["dec"])
        return y.view(-1).numpy()

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="wavae")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--run", type=Path, default=None, help="a trained run (default: untrained weights)")
    ap.add_argument("--pruned", type=Path, default=None,
                    help="a pruned, fine-tuned run from `wavae prune` (default: prune --run's model at 0.5, no fine-tune)")
    ap.add_argument("--blocks", type=int, default=200, help="timed blocks per row")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    from wavae.quantize.bundle import BundleStreamer
    from wavae.quantize.export import export_bundle
    from wavae.quantize.verify import bundle_macs, compare
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    if args.run:
        from wavae.train.checkpoint import load_run

        cfg, model, _ = load_run(args.run, require_vocoder=True)
        weights = f"trained run `{args.run}`"
    else:
        torch.manual_seed(0)
        cfg = resolve(args.preset)
        model = build_model(cfg).eval()
        weights = "untrained (seed 0)"
    sr, block = cfg.frontend.sample_rate, args.block
    held_out = notes(10.0, sr, seed=1000)
    held_out = held_out[: held_out.size // block * block]
    blocks = [held_out[i : i + block] for i in range(0, held_out.size, block)][: args.blocks]
    cal = [notes(6.0, sr, seed=s) for s in range(8)]
    block_ms = 1e3 * block / sr

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"exporting {cfg.name} bundles (block {block})...", file=sys.stderr)
        b32 = export_bundle(model, cfg, tmp / "fp32", block=block)
        b8 = export_bundle(model, cfg, tmp / "int8", block=block, precision="int8", calibration=cal)
        b8u = export_bundle(model, cfg, tmp / "int8-u8", block=block, precision="int8", calibration=cal,
                            int8_activations="uint8")
        if args.pruned:
            from wavae.train.checkpoint import load_run

            _, pruned, _ = load_run(args.pruned, require_vocoder=True)
        else:
            from wavae.quantize.prune import prune_model

            pruned = prune_model(model, 0.5).eval()
        pruned_bundle = export_bundle(pruned, cfg, tmp / "p50-int8", block=block, precision="int8", calibration=cal)
        pruned_u8 = export_bundle(pruned, cfg, tmp / "p50-int8-u8", block=block, precision="int8",
                                  calibration=cal, int8_activations="uint8")

        ref = BundleStreamer(b32).stream(held_out)

        def row(name: str, ms: float, y: np.ndarray | None, bundle: Path | None, note: str = "") -> None:
            q = compare(ref, y, 0, model.frontend) if y is not None else {}
            macs = bundle_macs(bundle)["per_second"] if bundle is not None else None
            size = sum(p.stat().st_size for p in bundle.glob("*.onnx")) if bundle is not None else None
            rows.append((name, ms, ms / block_ms, q.get("snr_db"), q.get("mel_distance"), macs, size, note))
            print(f"{name}: {ms:.2f} ms/block", file=sys.stderr)

        # torch streaming (the reference implementation, unfolded)
        ms = time_blocks(torch_stepper(model), blocks)
        with torch.no_grad():
            y_torch = model.stream(torch.from_numpy(held_out).view(1, 1, -1), block).view(-1).numpy()
        row("torch streaming (fp32)", ms, y_torch, None, "reference")

        for name, b, note in (
            ("onnxruntime fp32", b32, ""),
            ("onnxruntime int8", b8, "the bundle format (s8 activations); x86 ORT does not fuse s8s8 convs"),
            ("onnxruntime int8, uint8 activations", b8u, "x86 form (QLinearConv fused); not TensorRT-ready"),
        ):
            s = BundleStreamer(b, threads=1)
            ms = time_blocks(s.process, blocks)
            row(name, ms, BundleStreamer(b).stream(held_out), b, note)
        if args.pruned:
            how = f"`wavae prune` run `{args.pruned}` (fine-tuned)"
        elif args.run:
            how = "no fine-tune"
        else:
            how = "untrained, no fine-tune: quality vs the unpruned model is meaningless"
        s = BundleStreamer(pruned_bundle, threads=1)
        ms = time_blocks(s.process, blocks)
        row("pruned 0.5 + int8", ms, BundleStreamer(pruned_bundle).stream(held_out), pruned_bundle, how)
        s = BundleStreamer(pruned_u8, threads=1)
        ms = time_blocks(s.process, blocks)
        row("pruned 0.5 + int8, uint8 activations", ms, BundleStreamer(pruned_u8).stream(held_out), pruned_u8,
            "x86 form")

    def fmt(v, spec):
        if v is None:
            return "-"
        if isinstance(v, float) and not np.isfinite(v):
            return "inf"
        return format(v, spec)

    lines = [
        f"# Quantisation benchmark ({cfg.name} preset, block {block} at {sr} Hz = {block_ms:.1f} ms)",
        "",
        f"- weights: {weights}",
        f"- CPU: {platform.processor() or platform.machine()} ({cpu_name()}), 1 thread (torch and onnxruntime)",
        f"- torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: times are inflated "
        "when it exceeds 1)",
        f"- timing: median over {len(blocks)} blocks of held-out generated audio, after 20 warm-up blocks; "
        "RTF = time per block / block duration (< 1 is faster than real time)",
        "- quality: SNR and log-mel L1 distance (model front-end, natural log) against the onnxruntime fp32 output",
        "- int8: static QDQ, per-channel int8 weights, symmetric int8 activations (the bundle format, for the "
        "Pi's ARM CPU and TensorRT) or asymmetric uint8 activations (the form onnxruntime fuses on x86); "
        "mel front-end and vocoder output conv in float; streaming state float32",
        "",
        "| path | ms / block | RTF | SNR vs fp32 (dB) | mel distance vs fp32 | MACs / s | ONNX bytes | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, ms, rtf, snr, mel, macs, size, note in rows:
        lines.append(
            f"| {name} | {fmt(ms, '.2f')} | {fmt(rtf, '.3f')} | {fmt(snr, '.1f')} | {fmt(mel, '.4f')} | "
            f"{fmt(macs, ',d') if macs is not None else '-'} | {fmt(size, ',d') if size is not None else '-'} | {note} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(text)
    os.replace(tmp_out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
