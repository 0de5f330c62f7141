"""WAV in and out for file mode: read with checks a person can act on, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wavae.errors import WavaeError
from wavae.fileio import atomic_path

from .engine import DEVICE_RATES


class AudioFileError(WavaeError, ValueError):
    """An input audio file that file mode cannot take as it is."""


def read_wav(path: str | Path, rates: tuple[int, ...] = DEVICE_RATES) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 ``[frames, channels]`` (1 or 2 channels) and its rate.

    Refuses a missing or unreadable file, an empty one, more than two channels,
    a rate the engine does not run at, and NaN/Inf samples.
    """
    import soundfile as sf

    path = Path(path)
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
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(tmp, data, rate, subtype=subtype, format="WAV")
    return path
