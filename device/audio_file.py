"""WAV in and out for file mode: read with checks a person can act on, write atomically."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from wavae.errors import WavaeError
from wavae.fileio import atomic_path
from wavae.paths import input_file, output_file

from .capabilities import DEVICE_RATES


class AudioFileError(WavaeError, ValueError):
    """An audio file that file mode cannot read as it is, or cannot write."""


def wav_truncation(path: str | Path) -> int | None:
    """Frames a RIFF/WAVE file's header promises but its data chunk lacks.

    ``None`` for a file that is not a plain RIFF WAV or whose header sizes are
    open-ended (0 or 0xFFFFFFFF, as streaming writers leave them); else the
    number of missing frames (0 for a whole file).  libsndfile reads a cut
    file quietly up to where it ends; this lets file mode say so.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    continue
                if cid == b"data":
                    if size in (0, 0xFFFFFFFF) or not block_align:
                        return None
                    start = f.tell()
                    f.seek(0, 2)
                    have = f.seek(0, 2) - start
                    return max(0, (size - have) // block_align)
                f.seek(size + (size & 1), 1)
    except OSError:
        return None


class AudioReader:
    """An audio file read block by block, so memory does not grow with its length.

    Checks up front what can be checked (exists, is a file, decodes, has frames,
    one or two channels, an allowed rate) and each block as it comes (NaN/Inf,
    with the time of the first bad sample).  ``truncated_frames`` says how much
    of a cut WAV is missing.  Use as a context manager.
    """

    def __init__(self, path: str | Path, rates: tuple[int, ...] | None = DEVICE_RATES, max_channels: int = 2,
                 what: str = "input") -> None:
        self.path = input_file(path, what)
        self.what = what
        try:
            self._file = sf.SoundFile(str(self.path))
        except (RuntimeError, sf.LibsndfileError) as e:
            raise AudioFileError(f"cannot read {what} {self.path} as audio ({e}); give a WAV/FLAC/OGG file") from e
        except OSError as e:  # permissions, I/O errors: not a traceback
            raise AudioFileError(
                f"cannot read {what} {self.path}: {e.strerror or e}; check that it is readable (`ls -l {self.path}`)"
            ) from e
        self.frames, self.channels, self.rate = self._file.frames, self._file.channels, self._file.samplerate
        self._pos = 0
        try:
            self._check(rates, max_channels)
        except BaseException:
            self._file.close()
            raise
        self.truncated_frames = wav_truncation(self.path) or 0

    def _check(self, rates: tuple[int, ...] | None, max_channels: int) -> None:
        path, what = self.path, self.what
        if self.frames <= 0:
            raise AudioFileError(f"{what} {path} is empty (no audio frames)")
        if self.channels > max_channels:
            raise AudioFileError(
                f"{what} {path} has {self.channels} channels; file mode takes mono or stereo (stereo is mixed to "
                f"mono for the model and the output is written in stereo). Downmix first, e.g. "
                f"`sox {path.name} -c 1 mono.wav`"
            )
        if rates is not None and self.rate not in rates:
            near = min(rates, key=lambda r: abs(r - self.rate))
            raise AudioFileError(
                f"{what} {path} is at {self.rate} Hz, which is not a device rate this engine runs at "
                f"({', '.join(map(str, rates))}); resample it first, e.g. `sox {path.name} -r {near} out.wav`"
            )

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` float32 frames ``[n, channels]``; an empty array at the end."""
        try:
            x = self._file.read(frames, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise AudioFileError(
                f"cannot read {self.what} {self.path} past {self._pos / self.rate:.3f} s ({e}); "
                f"the file may be truncated or damaged"
            ) from e
        bad = ~np.isfinite(x)
        if bad.any():
            i = self._pos + int(np.argwhere(bad)[0][0])
            raise AudioFileError(
                f"{self.what} {self.path} contains {int(bad.sum())} NaN/Inf sample(s), the first at frame {i} "
                f"({i / self.rate:.3f} s); the file is corrupt, re-render or re-record it"
            )
        self._pos += x.shape[0]
        return x

    def blocks(self, frames: int):
        """Iterate the file in blocks of ``frames`` (the last may be shorter)."""
        while True:
            x = self.read(frames)
            if not x.shape[0]:
                return
            yield x

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_wav(path: str | Path, rates: tuple[int, ...] = DEVICE_RATES) -> tuple[np.ndarray, int]:
    """Read a whole (short) file as float32 ``[frames, channels]`` and its rate,
    with ``AudioReader``'s checks.  Long files go through ``AudioReader`` in blocks."""
    with AudioReader(path, rates) as r:
        return np.ascontiguousarray(r.read(r.frames)), int(r.rate)


class AudioWriter:
    """An audio file written block by block into a temporary beside the target,
    fsynced and renamed into place on a clean exit; on any error the target is
    untouched and the temporary removed.  Use as a context manager."""

    def __init__(self, path: str | Path, rate: int, channels: int, subtype: str = "FLOAT",
                 inputs: tuple[str | Path, ...] = (), what: str = "output", format: str | None = None) -> None:
        self.path = output_file(path, inputs, what)
        fmt = format or self.path.suffix.lstrip(".").upper()
        if fmt not in sf.available_formats():
            raise AudioFileError(f"cannot write {what} {self.path}: unknown audio type "
                                 f"{self.path.suffix or '(no extension)'}; use .wav or .flac")
        self._format, self._rate, self._channels = fmt, rate, channels
        self._subtype = subtype if fmt == "WAV" else None
        self._atomic = None
        self._file = None
        self.frames = 0

    def __enter__(self) -> "AudioWriter":
        self._atomic = atomic_path(self.path)
        try:
            tmp = self._atomic.__enter__()
            self._file = sf.SoundFile(str(tmp), "w", self._rate, self._channels, self._subtype, format=self._format)
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            if self._atomic is not None:
                self._atomic.__exit__(type(e), e, e.__traceback__)
            raise self._error(e) from e
        return self

    def write(self, block: np.ndarray) -> None:
        try:
            self._file.write(block)
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            raise self._error(e) from e
        self.frames += block.shape[0]

    def _error(self, e: BaseException) -> AudioFileError:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return AudioFileError(
            f"cannot write output {self.path}: {reason}; check that its folder can be written "
            f"(`ls -ld {self.path.parent}`) and that the disk has room (`df -h {self.path.parent}`)"
        )

    def __exit__(self, et, ev, tb) -> bool:
        try:
            self._file.close()
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            if et is None:  # a failed close (disk full at the last flush) fails the write
                self._atomic.__exit__(type(e), e, e.__traceback__)
                raise self._error(e) from e
        try:
            self._atomic.__exit__(et, ev, tb)  # on an error: removes the temporary; else fsync + rename
        except OSError as e:
            raise self._error(e) from e
        return False


def write_wav_atomic(path: str | Path, data: np.ndarray, rate: int, subtype: str = "FLOAT",
                     inputs: tuple[str | Path, ...] = ()) -> Path:
    """Write ``data`` [frames, channels] to ``path`` as WAV, atomically (``AudioWriter``)."""
    with AudioWriter(path, rate, data.shape[1], subtype, inputs=inputs, format="WAV") as w:
        w.write(data)
    return w.path
