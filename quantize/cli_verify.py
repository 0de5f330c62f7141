"""``wavae verify BUNDLE --run RUN --input in.wav``

Streams ``in.wav`` through the bundle in onnxruntime and through the run's torch
model, and prints JSON: max abs difference (after latency alignment), SNR in dB,
mel-spectral distance, MACs and file sizes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory (from `wavae export`)")
    parser.add_argument("--run", type=Path, required=True, help="the training run the bundle was exported from")
    parser.add_argument("--input", type=Path, required=True, help="audio file to stream through both")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime and torch threads (default 1)")


def _finite(obj):
    """JSON has no inf/nan: write them as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def main(args: argparse.Namespace) -> int:
    import torch

    from wavae.train.checkpoint import load_run
    from wavae.train.data import load_audio

    from wavae.device.bundle import load_bundle
    from .verify import verify

    torch.set_num_threads(max(1, args.threads))
    bundle = load_bundle(args.bundle)  # checked once, before the run is loaded
    cfg, model, _ = load_run(args.run, require_vocoder=True)
    audio = load_audio(args.input, cfg.frontend.sample_rate)
    result = verify(bundle, model, audio, threads=args.threads)
    result["run"] = str(args.run)
    result["input"] = str(args.input)
    print(json.dumps(_finite(result), indent=2))
    return 0
