"""``wavae reconstruct RUN in.wav out.wav [--streaming --block N]``.

Renders a file through a trained run; this is the torch reference that
exports and the device engine are checked against.

The model is block-causal, so rendering it in blocks from zero state gives
the same audio as rendering the whole file at once.  Both modes therefore go
block by block, reading, resampling and writing as they go, so memory does
not grow with the file: "offline" uses long blocks (about a second, for
speed), ``--streaming`` the block the device would use.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from wavae.blocks import check_block
from wavae.device.audio_file import AudioReader, AudioWriter
from wavae.errors import WavaeError
from wavae.paths import input_dir
from wavae.progress import Progress

OFFLINE_BLOCK_SECONDS = 1.0  # long enough that per-call overhead vanishes, short enough to stay small


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("input", help="audio file to reconstruct")
    p.add_argument("output", help="output wav file")
    p.add_argument("--streaming", action="store_true", help="go block by block through the streaming path")
    p.add_argument("--block", type=int, default=None, help="streaming block in samples (multiple of the frame)")


def offline_block(frame: int, sample_rate: int) -> int:
    """The block "offline" rendering uses: about a second, a whole number of frames."""
    return max(1, round(OFFLINE_BLOCK_SECONDS * sample_rate / frame)) * frame


class Reconstructor:
    """The model's streaming path fed from arbitrary-length pieces.

    ``feed`` takes model-rate mono audio of any length and returns what the
    model produced for the whole blocks it now has; ``finish`` pads the rest
    to a whole frame and returns the remainder.  Out equals in, sample for
    sample, in length.
    """

    def __init__(self, model, block: int) -> None:
        import torch

        check_block(block, model.frame, model.sample_rate, live=False)
        self.model, self.block = model, block
        self._torch = torch
        self._pending = np.zeros(0, np.float32)
        self._enc = model.init_encoder_state()
        self._dec = model.init_decoder_state()

    @property
    def buffered(self) -> int:
        """Samples fed but not yet rendered (less than one block)."""
        return len(self._pending)

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            (z, _, loud), self._enc = self.model.encode_step(torch.from_numpy(x).view(1, 1, -1), self._enc)
            y, self._dec = self.model.decode_step(z, loud, self._dec)
        return y.view(-1).numpy()

    def feed(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._pending, x.astype(np.float32, copy=False)])
        whole = len(buf) // self.block * self.block
        self._pending = buf[whole:]
        if not whole:
            return np.zeros(0, np.float32)
        return np.concatenate([self._run(buf[i : i + self.block]) for i in range(0, whole, self.block)])

    def finish(self) -> np.ndarray:
        n = len(self._pending)
        if not n:
            return np.zeros(0, np.float32)
        frame = self.model.frame
        x = np.zeros(-(-n // frame) * frame, np.float32)
        x[:n] = self._pending
        self._pending = np.zeros(0, np.float32)
        return self._run(x)[:n]


def reconstruct(model, audio: np.ndarray, streaming: bool = False, block: int | None = None) -> np.ndarray:
    """Model-rate mono float32 in, same length out (in memory: for short clips and tests)."""
    block = block or (model.frame if streaming else offline_block(model.frame, model.sample_rate))
    r = Reconstructor(model, block)
    return np.concatenate([r.feed(audio), r.finish()])


def reconstruct_file(model, src, dst, block: int, progress: bool = True) -> tuple[int, int]:
    """Render ``src`` into ``dst`` at the model's rate, block by block.

    Returns (input frames, output frames).  Memory stays flat in the length.
    """
    import soxr

    rate = model.sample_rate
    with AudioReader(src, rates=None, max_channels=64) as reader:
        if reader.truncated_frames:
            print(f"warning: {src} is cut short: its header promises {reader.truncated_frames} more frames "
                  f"({reader.truncated_frames / reader.rate:.2f} s) than it holds; rendering what is there",
                  flush=True)
        n_out = round(reader.frames * rate / reader.rate)
        if n_out < 1:
            raise WavaeError(
                f"input {src} is too short: {reader.frames} sample(s) at {reader.rate} Hz is less than one "
                f"sample at the model's {rate} Hz"
            )
        resampler = soxr.ResampleStream(reader.rate, rate, 1, dtype="float32", quality="HQ") \
            if reader.rate != rate else None
        model_block = Reconstructor(model, block)
        read = max(4096, math.ceil(block * reader.rate / rate))
        written = 0
        with AudioWriter(dst, rate, 1, inputs=(src,)) as writer, \
                Progress(reader.seconds, "reconstruct", "audio s", enabled=progress) as bar:

            def emit(y: np.ndarray) -> None:
                nonlocal written
                y = y[: n_out - written]
                if y.size and not np.all(np.isfinite(y)):
                    raise WavaeError(f"the model produced non-finite audio for {src}; the run may have diverged")
                writer.write(y.reshape(-1, 1))
                written += y.size

            for x in reader.blocks(read):
                mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                emit(model_block.feed(mono))
                bar.update(x.shape[0] / reader.rate)
            if resampler is not None:
                emit(model_block.feed(resampler.resample_chunk(np.zeros(0, np.float32), last=True)))
            short = n_out - written - model_block.buffered
            if short > 0:  # the resampler may round one sample short of the exact length
                model_block.feed(np.zeros(short, np.float32))
            emit(model_block.finish())
        return reader.frames, written


def main(args: argparse.Namespace) -> int:
    from .checkpoint import load_run

    run = input_dir(args.run, "run directory")
    src, dst = args.input, args.output
    AudioReader(src, rates=None, max_channels=64).close()  # a bad input fails before the model loads
    AudioWriter(dst, 1, 1, inputs=(src,))  # so does a bad output (nothing is created yet)
    cfg, model, _ = load_run(run, require_vocoder=True)
    if args.block is not None:
        check_block(args.block, model.frame, model.sample_rate, live=False)
    block = args.block if args.streaming and args.block else (
        model.frame if args.streaming else offline_block(model.frame, model.sample_rate))
    n_in, n_out = reconstruct_file(model, src, dst, block)
    mode = f"streaming, block {block}" if args.streaming else "offline"
    print(f"wrote {dst}: {n_out / cfg.frontend.sample_rate:.2f} s at {cfg.frontend.sample_rate} Hz ({mode})")
    return 0
