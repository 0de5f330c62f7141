"""WAV in and out for file mode: read with checks a person can act on, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavae.errors import WavaeError
from wavae.fileio import atomic_path

from .engine import DEVICE_RATES


class AudioFileError(WavaeError, ValueError):
    """An audio file that file mode cannot read as it is, or cannot write."""


def read_wav(path: str | Path, rates: tuple[int, ...] = DEVICE_RATES) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 ``[frames, channels]`` (1 or 2 channels) and its rate.

    Refuses a missing or unreadable file, an empty one, more than two channels,
    a rate the engine does not run at, and NaN/Inf samples.
    """
    import soundfile as sf

    path = Path(path)
    try:
        return _read_wav(sf, path, rates)
    except OSError as e:  # permissions, I/O errors: not a traceback
        raise AudioFileError(
            f"cannot read input {path}: {e.strerror or e}; check that it is readable (`ls -l {path}`)"
        ) from e


def _read_wav(sf, path: Path, rates: tuple[int, ...]) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise AudioFileError(f"input {path} does not exist")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioFileError(f"cannot read {path} as audio ({e}); give a WAV/FLAC/OGG file") from e
    if info.frames == 0:
        raise AudioFileError(f"input {path} is empty (no audio frames)")
    if info.channels > 2:
        raise AudioFileError(
            f"input {path} has {info.channels} channels; file mode takes mono or stereo (stereo is mixed to mono "
            f"for the model and the output is written in stereo). Downmix first, e.g. "
            f"`sox {path.name} -c 1 mono.wav`"
        )
    if info.samplerate not in rates:
        near = min(rates, key=lambda r: abs(r - info.samplerate))
        raise AudioFileError(
            f"input {path} is at {info.samplerate} Hz, which is not a device rate this engine runs at "
            f"({', '.join(map(str, rates))}); resample it first, e.g. `sox {path.name} -r {near} out.wav`"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioFileError(f"cannot read {path} as audio ({e}); the file may be truncated or damaged") from e
    if data.shape[0] == 0:
        raise AudioFileError(f"input {path} is empty (no audio frames)")
    bad = ~np.isfinite(data)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise AudioFileError(
            f"input {path} contains {int(bad.sum())} NaN/Inf sample(s), the first at frame {i} "
            f"({i / rate:.3f} s); the file is corrupt, re-render or re-record it"
        )
    return np.ascontiguousarray(data), int(rate)


def write_wav_atomic(path: str | Path, data: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    """Write ``data`` [frames, channels] to ``path`` via a temporary file and ``os.replace``."""
    import soundfile as sf

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sf.write(tmp, data, rate, subtype=subtype, format="WAV")
    except (OSError, sf.LibsndfileError) as e:  # no permission, no such folder, disk full
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise AudioFileError(
            f"cannot write output {path}: {reason}; check that its folder can be created and written "
            f"(`ls -ld {path.parent}`) and that the disk has room (`df -h {path.parent}`)"
        ) from e
    return path
