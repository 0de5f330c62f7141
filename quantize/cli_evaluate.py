"""``wavae evaluate (BUNDLE | RUN) --data DIR [--input WAV ...] --report DIR [--json]``

Measures how much a run or a bundle sounds like its input (``wavae.quantize.evaluate``):
per file and in total, log-mel L1 (dB), multi-resolution STFT distance, RMS-envelope
correlation, f0 error (cents) with voicing agreement, the loudness probe on z and the
loudness-sweep correlation; with ``--reference`` (the fp32 bundle of the same run),
the distance from it.  Writes metrics.json, report.md and spectrograms.png into
``--report``; ``--json`` also prints the JSON.  Evaluate on clips the run was not
trained on (e.g. ``wavae data --seed 1``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .evaluate import MAX_FILES, SECONDS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=Path, help="a training run or a bundle")
    p.add_argument("--data", type=Path, default=None, help="folder of held-out audio (files spread over it)")
    p.add_argument("--input", type=Path, nargs="+", default=[], help="audio files to evaluate (besides --data)")
    p.add_argument("--report", type=Path, required=True, help="folder for metrics.json, report.md, spectrograms.png")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--reference", type=Path, default=None, help="the fp32 bundle of the same run, to compare with")
    p.add_argument("--max-files", type=int, default=MAX_FILES, help=f"files taken from --data (default {MAX_FILES})")
    p.add_argument("--seconds", type=float, default=SECONDS, help=f"at most this much of each file (default {SECONDS:g})")
    p.add_argument("--no-f0", action="store_true", help="skip the pYIN f0 comparison (the slowest metric)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")


def main(args: argparse.Namespace) -> int:
    import torch

    from .evaluate import EvaluateError, evaluate, gather_clips, open_target, render_markdown, to_json, write_report

    torch.set_num_threads(max(1, args.threads))
    target = open_target(args.target, args.threads)
    reference = open_target(args.reference, args.threads) if args.reference else None
    if reference is not None and reference.sample_rate != target.sample_rate:
        raise EvaluateError(f"--reference runs at {reference.sample_rate} Hz, the target at {target.sample_rate} Hz")
    clips = gather_clips(target.sample_rate, args.data, args.input, args.max_files, args.seconds)
    result = evaluate(target, clips, reference, f0=not args.no_f0)
    written = write_report(result, clips, args.report)
    if args.json:
        print(to_json(result))
    else:
        print(render_markdown(result).split("## Per file")[0].rstrip())
    print(f"report: {written['markdown']}, {written['json']}, {written['png']}")
    return 0
