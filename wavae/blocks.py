"""The streaming block: how many samples one model call takes (torch-free, importable everywhere).

A block must hold whole latent frames (the model's smallest step) and, to be
played live, last at most ``MAX_BLOCK_SECONDS``: the engine buffers one block
between capture and playback, so a longer one is latency no instrument can use.
Every block given by a person (``--block`` of export, reconstruct and profile)
and every bundle the engine runs is checked here, by ``check_block``, so one bad
block gets one error type and one message wherever it is given.
"""

from __future__ import annotations

from wavae.errors import WavaeError

MAX_BLOCK_SECONDS = 1.0  # the longest block the device engine serves live
DEFAULT_BLOCK_SECONDS = 512 / 24000  # about 21 ms: 512 samples at 24 kHz


class BlockSizeError(WavaeError, ValueError):
    """A streaming block that is not a whole number of latent frames, or too long for live use."""


def default_block(frame: int, sample_rate: int) -> int:
    """About 21 ms (512 samples at 24 kHz), rounded up to whole latent frames."""
    target = round(DEFAULT_BLOCK_SECONDS * sample_rate)
    return max(1, -(-target // frame)) * frame


def max_block(frame: int, sample_rate: int) -> int:
    """The longest block the device serves live: whole latent frames within ``MAX_BLOCK_SECONDS``."""
    return int(MAX_BLOCK_SECONDS * sample_rate) // frame * frame


def check_block(block: int, frame: int, sample_rate: int, *, live: bool = True) -> None:
    """Raise BlockSizeError unless ``block`` is a positive multiple of ``frame`` and,
    with ``live`` (a block for the device), at most ``max_block`` samples.

    ``live=False`` is for the torch streaming reference, which streams a block of
    any whole number of frames.
    """
    hint = f"e.g. --block {default_block(frame, sample_rate)}"
    where = f"the latent frame ({frame} samples at {sample_rate} Hz)"
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise BlockSizeError(f"block {block!r} must be a positive multiple of {where}; {hint}")
    if block % frame:
        raise BlockSizeError(
            f"block {block} is not even a multiple of {where}, so no model with this frame can stream it; "
            f"use a multiple of {frame}, {hint}"
        )
    if live and block > max_block(frame, sample_rate):
        raise BlockSizeError(
            f"block {block} samples is {block / sample_rate:.2f} s at {sample_rate} Hz, too long for live use "
            f"(at most {MAX_BLOCK_SECONDS:g} s, {max_block(frame, sample_rate)} samples); "
            f"export the bundle with a smaller block, {hint}"
        )
