"""``wavae export RUN --out BUNDLE [--precision fp32|fp16|int8] [--calibration DIR] [--block N] [--keep-convs] [--force]``

Writes a device bundle (docs/bundle.md) from a training run with a trained vocoder.
int8 is calibrated on real audio: ``--calibration DIR``, or else the training
folder the run was trained on.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from wavae.errors import WavaeError
from wavae.progress import Progress, track

from wavae.device.bundle import MANIFEST, PRECISIONS

log = logging.getLogger(__name__)

CALIBRATION_FILES = 16  # files spread over the folder
CALIBRATION_SECONDS = 8.0  # at most this much of each


class CalibrationSourceError(WavaeError, ValueError):
    """No calibration audio can be found."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="training run directory (with a trained vocoder)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--precision", default="fp32", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    parser.add_argument(
        "--calibration", type=Path, default=None,
        help="folder of real audio for int8 calibration (default: the run's training data)",
    )
    parser.add_argument(
        "--block", type=int, default=None,
        help="samples per graph call, a multiple of the latent frame (default: about 21 ms)",
    )
    parser.add_argument(
        "--int8-activations", default="int8",
        help="int8: symmetric, what TensorRT and ARM CPUs (the Pi) want (default); uint8: what "
             "onnxruntime fuses on x86 CPUs (about 2x faster there), refused by TensorRT",
    )
    parser.add_argument(
        "--keep-convs", action="store_true",
        help="fp32: keep the graphs as exported, to compare on a board (default: convolutions with at most "
             "4 output samples per call become MatMuls and summed 1x1 convolutions one, which onnxruntime "
             "runs faster)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle (only once the new one is complete)")


def calibration_folder(run: Path, folder: Path | None, ckpt: dict) -> Path:
    """``--calibration DIR`` if given, else the training data folder the run records."""
    if folder is not None:
        return folder
    data_dir = ckpt.get("data_dir")
    if not data_dir:
        raise CalibrationSourceError(
            f"run {run} does not record its training data folder; give calibration audio with --calibration DIR"
        )
    folder = Path(data_dir)
    if not folder.is_dir():
        raise CalibrationSourceError(
            f"the run's training data folder {folder} is gone; give calibration audio with --calibration DIR"
        )
    return folder


def calibration_audio(folder: Path, sample_rate: int, files: int = CALIBRATION_FILES,
                      seconds: float = CALIBRATION_SECONDS, show: bool = True) -> list[np.ndarray]:
    """Up to ``files`` audio files spread evenly over ``folder``, each cut to ``seconds``."""
    from wavae.train.data import AudioError, find_audio, load_audio

    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationSourceError(f"calibration folder {folder} does not exist")
    found = find_audio(folder)
    if not found:
        raise CalibrationSourceError(f"no audio files in {folder}; int8 needs real audio to calibrate on")
    idx = np.unique(np.linspace(0, len(found) - 1, min(files, len(found))).round().astype(int))
    clips, skipped = [], []
    for i in track(idx, "loading calibration audio", "file", enabled=show):
        try:  # an unreadable file is skipped, as training skips it
            x = load_audio(found[i], sample_rate)
        except AudioError as e:
            log.warning("calibration: skipping %s", e)
            skipped.append(str(e))
            continue
        clips.append(x[: int(seconds * sample_rate)])
    if not clips:
        raise CalibrationSourceError(f"none of the audio files tried in {folder} could be read: {skipped[0]}")
    return clips


def main(args: argparse.Namespace) -> int:
    """Map the arguments to ``export_bundle``, which checks them all."""
    from wavae.train.checkpoint import load_run

    from .export import export_bundle, export_steps

    cfg, model, ckpt = load_run(args.run, require_vocoder=True)
    block = args.block if args.block is not None else cfg.default_block
    calibration = None
    if args.precision == "int8":
        calibration = calibration_audio(calibration_folder(args.run, args.calibration, ckpt), cfg.frontend.sample_rate)

    bar = None

    def progress(msg: str) -> None:
        nonlocal bar
        if bar is None:  # the first step: every input has been checked
            bar = Progress(export_steps(args.precision), "export", "step")
        bar.set_description(msg)
        bar.update(1)

    source = {
        "run": str(args.run),
        "vae_steps": int(ckpt.get("progress", {}).get("vae_steps", 0)),
        "vocoder_steps": int(ckpt.get("progress", {}).get("vocoder_steps", 0)),
    }
    try:
        path = export_bundle(
            model, cfg, args.out, block=block, precision=args.precision, calibration=calibration,
            source=source, force=args.force, progress=progress, int8_activations=args.int8_activations,
            lower=not args.keep_convs,
        )
    finally:
        if bar is not None:
            bar.close()
    manifest = json.loads((path / MANIFEST).read_text())
    sizes = {k: v["bytes"] for k, v in manifest["files"].items()}
    print(json.dumps({
        "bundle": str(path),
        "precision": manifest["precision"],
        "block": manifest["block"],
        "sample_rate": manifest["sample_rate"],
        "latency_samples": manifest["latency_samples"],
        "bytes": sizes,
    }, indent=2))
    return 0
