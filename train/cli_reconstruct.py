"""``wavae reconstruct RUN in.wav out.wav [--streaming --block N]``.

Renders a file through a trained run, offline or block by block through the
streaming path.  Both give the same audio (the model is block-causal); this is
the torch reference that exports and the device engine are checked against.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wavae.blocks import check_block
from wavae.errors import WavaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("input", help="audio file to reconstruct")
    p.add_argument("output", help="output wav file")
    p.add_argument("--streaming", action="store_true", help="go block by block through the streaming path")
    p.add_argument("--block", type=int, default=None, help="streaming block in samples (multiple of the frame)")


def reconstruct(model, audio: np.ndarray, streaming: bool = False, block: int | None = None) -> np.ndarray:
    """Model-rate mono float32 in, same length out."""
    import torch

    frame = model.frame
    block = block or frame
    if streaming:
        check_block(block, frame, model.sample_rate, live=False)
    step = block if streaming else frame
    n = audio.shape[0]
    padded = np.zeros(-(-n // step) * step, dtype=np.float32)
    padded[:n] = audio
    x = torch.from_numpy(padded).view(1, 1, -1)
    with torch.no_grad():
        y = model.stream(x, block) if streaming else model(x)
    return y.view(-1).numpy()[:n]


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Atomic write: a temp file beside the target, then rename."""
    import soundfile as sf

    from wavae.fileio import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, format=fmt, subtype="FLOAT" if fmt == "WAV" else None)


def main(args: argparse.Namespace) -> int:
    from .checkpoint import load_run
    from .data import load_audio

    import soundfile as sf

    out = Path(args.output)
    if not out.parent.is_dir():
        raise WavaeError(f"the folder of {out} does not exist; create it or choose another output path")
    if out.suffix.lstrip(".").upper() not in sf.available_formats():
        raise WavaeError(f"cannot write {out.suffix or 'a file without extension'}: use .wav or .flac")
    cfg, model, _ = load_run(Path(args.run), require_vocoder=True)
    audio = load_audio(args.input, cfg.frontend.sample_rate)
    y = reconstruct(model, audio, streaming=args.streaming, block=args.block)
    if not np.all(np.isfinite(y)):
        raise WavaeError(f"the model produced non-finite audio for {args.input}; the run may have diverged")
    write_audio(out, y, cfg.frontend.sample_rate)
    mode = f"streaming, block {args.block or model.frame}" if args.streaming else "offline"
    print(f"wrote {args.output}: {len(y) / cfg.frontend.sample_rate:.2f} s at {cfg.frontend.sample_rate} Hz ({mode})")
    return 0
