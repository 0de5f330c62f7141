"""Training data: a folder of audio decoded once into a cache of fixed-length chunks.

    load_audio(path, sr)        one file -> float32 mono at ``sr`` (soundfile + soxr HQ)
    find_audio(folder)          the audio files under a folder, recursive and sorted
    ChunkCache.build(folder, sr, chunk)
                                every file decoded once, cut into chunks of ``chunk``
                                samples (hop chunk//2), stored as one float32 .npy
                                [N, chunk] in FOLDER/.wavae-cache/; later builds with
                                the same files, rate and chunk memory-map it instead.

Formats are whatever the installed libsndfile reads: wav, flac, ogg (vorbis, opus)
and aiff always; mp3 needs libsndfile >= 1.1 (the soundfile >= 0.12 wheels bundle
1.2, which has it; a system libsndfile may not).

This module is torch-free (numpy only), so it is cheap to import; the trainer
samples its batches from ``ChunkCache.chunks``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from wavae.errors import WavaeError
from wavae.paths import PathError, input_file
from wavae.progress import Progress
from wavae.fileio import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
CACHE_DIRNAME = ".wavae-cache"
CACHE_VERSION = 1  # bump when the chunking below changes: old caches are then ignored
GAP_SECONDS = 0.1  # digital silence put between two files before chunking


class DataError(WavaeError, ValueError):
    """The training data cannot be used: missing folder, no audio, too little audio."""


class AudioError(WavaeError, ValueError):
    """One audio file cannot be read: unreadable, corrupt, empty or not finite."""


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate``: channels averaged, soxr HQ resampling.

    Raises AudioError, naming the file, when it cannot be decoded, holds no
    samples or holds NaN/Inf.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise AudioError(f"sample rate must be positive, got {sample_rate}")
    try:
        input_file(path, "audio file")
    except PathError as e:
        raise AudioError(str(e)) from None
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        hint = ""
        if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
            hint = f" (this libsndfile {sf.__libsndfile_version__} cannot read mp3: it needs libsndfile >= 1.1)"
        raise AudioError(f"{path}: unreadable audio file: {e}{hint}") from e
    if x.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: the file holds NaN or infinite samples")
    mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def find_audio(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (by extension, any case), recursive and sorted.

    Hidden files and folders (``.wavae-cache``, editors' temporaries, half-written
    ``.name.tmp`` files) are left out.
    """
    folder = Path(folder)
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
            found.append(p)
    return sorted(found)


def _cache_key(folder: Path, files: Sequence[Path], sample_rate: int, chunk: int) -> str:
    """A hash of what the chunks depend on: file names, sizes and mtimes, rate, chunk."""
    entries = []
    for p in files:
        st = p.stat()
        entries.append([p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"version": CACHE_VERSION, "sample_rate": sample_rate, "chunk": chunk, "gap": GAP_SECONDS, "files": entries},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class _Chunker:
    """Cuts one long stream, fed piece by piece, into chunks with hop chunk//2.

    Non-silent chunks are appended as raw float32 rows to ``sink``. After the
    regular chunks, one more chunk aligned to the end of the stream covers the
    samples that the last regular chunk did not reach.
    """

    def __init__(self, chunk: int, sink) -> None:
        self.chunk, self.hop, self.sink = chunk, chunk // 2, sink
        self.buffer = np.zeros(0, np.float32)  # the stream from the next chunk's start
        self.tail = np.zeros(0, np.float32)  # the stream's last `chunk` samples
        self.length = 0  # samples fed so far
        self.n_chunks = 0  # non-silent chunks written
        self.n_silent = 0

    def _emit(self, c: np.ndarray) -> None:
        if np.any(c != 0.0):
            self.sink.write(np.ascontiguousarray(c, dtype="<f4").tobytes())
            self.n_chunks += 1
        else:
            self.n_silent += 1

    def feed(self, x: np.ndarray) -> None:
        self.length += len(x)
        self.tail = np.concatenate([self.tail, x])[-self.chunk :]
        buf = np.concatenate([self.buffer, x])
        start = 0
        while start + self.chunk <= len(buf):
            self._emit(buf[start : start + self.chunk])
            start += self.hop
        self.buffer = buf[start:]

    def finish(self) -> None:
        if self.length >= self.chunk and (self.length - self.chunk) % self.hop:
            self._emit(self.tail)


def _write_npy(raw_path: Path, n: int, chunk: int, dest: Path) -> None:
    """Write ``n`` raw float32 rows from ``raw_path`` as ``dest`` (.npy), atomically."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f, open(raw_path, "rb") as raw:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, chunk)}
        np.lib.format.write_array_header_1_0(f, header)
        shutil.copyfileobj(raw, f, 1 << 22)


class ChunkCache:
    """The chunks of a folder of audio, decoded once and memory-mapped afterwards.

    Attributes: ``chunks`` (read-only float32 [N, chunk], memory-mapped), ``n_files``
    (files decoded), ``n_skipped`` and ``skipped`` (unreadable files), ``seconds``
    (decoded audio, gaps not counted), ``from_cache`` (True when nothing was
    decoded), ``path`` (the .npy file), ``sample_rate``, ``chunk``.
    """

    def __init__(self, path: Path, meta: dict, folder: Path, from_cache: bool) -> None:
        self.path = Path(path)
        self.chunks: np.ndarray = np.load(self.path, mmap_mode="r")
        self.sample_rate = int(meta["sample_rate"])
        self.chunk = int(meta["chunk"])
        self.n_files = int(meta["n_files"])
        self.skipped = [Path(folder) / rel for rel, _reason in meta["skipped"]]
        self.n_skipped = len(self.skipped)
        self.seconds = float(meta["seconds"])
        self.from_cache = from_cache
        if self.chunks.dtype != np.float32 or self.chunks.shape != (meta["n_chunks"], self.chunk):
            raise DataError(f"the chunk cache {self.path} does not match its metadata; delete it and build again")

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        return (
            f"ChunkCache({len(self)} chunks of {self.chunk} samples, {self.seconds:.1f} s from "
            f"{self.n_files} files, {self.n_skipped} skipped, from_cache={self.from_cache})"
        )

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike,
        sample_rate: int,
        chunk: int,
        cache_dir: str | os.PathLike | None = None,
    ) -> ChunkCache:
        """Chunks of every audio file under ``folder``, from the cache when it is current.

        The cache lives in ``cache_dir`` (default ``FOLDER/.wavae-cache``), keyed by
        the files' relative paths, sizes and mtimes, the rate and the chunk length.
        """
        folder = Path(folder)
        if sample_rate <= 0:
            raise DataError(f"sample rate must be positive, got {sample_rate}")
        if chunk < 2:
            raise DataError(f"chunk must be at least 2 samples, got {chunk}")
        if not folder.exists():
            raise DataError(
                f"the data folder {folder} does not exist: pass a folder of audio files "
                f"(or build one with `wavae data --out {folder}`)"
            )
        if not folder.is_dir():
            raise DataError(f"the data path {folder} is not a folder: pass a folder of audio files")
        files = find_audio(folder)
        if not files:
            exts = " ".join(sorted(AUDIO_EXTENSIONS))
            raise DataError(
                f"the data folder {folder} holds no audio files ({exts}); add some, "
                f"or build a corpus with `wavae data --out {folder}`"
            )

        cache_dir = Path(cache_dir) if cache_dir is not None else folder / CACHE_DIRNAME
        key = _cache_key(folder, files, sample_rate, chunk)
        stem = f"chunks-{sample_rate}hz-{chunk}-{key}"
        npy, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        if npy.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                cache = cls(npy, meta, folder, from_cache=True)
            except (ValueError, OSError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
                log.warning("the chunk cache %s is unusable (%s); decoding the audio again", npy, e)
            else:
                if cache.n_skipped:
                    log.info("%d unreadable file(s) were skipped when this cache was built", cache.n_skipped)
                return cache

        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, raw_tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{stem}.", suffix=".raw.tmp")
        except OSError as e:
            raise DataError(f"cannot write the chunk cache in {cache_dir}: {e}; pass another cache folder") from e
        raw_path = Path(raw_tmp)
        try:
            skipped: list[list[str]] = []
            total = 0  # decoded samples, gaps not counted
            gap = np.zeros(round(GAP_SECONDS * sample_rate), np.float32)
            with os.fdopen(fd, "wb") as sink, Progress(len(files), "decoding audio", "file") as bar:
                chunker = _Chunker(chunk, sink)
                for p in files:
                    bar.update(1)
                    rel = p.relative_to(folder).as_posix()
                    try:
                        x = load_audio(p, sample_rate)
                    except AudioError as e:
                        log.warning("skipping %s", e)
                        skipped.append([rel, str(e)])
                        bar.set_postfix({"skipped": len(skipped)})
                        continue
                    if total:
                        chunker.feed(gap)
                    chunker.feed(x)
                    total += len(x)
                chunker.finish()

            n_files = len(files) - len(skipped)
            if n_files == 0:
                listed = "; ".join(reason for _rel, reason in skipped[:3])
                more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
                raise DataError(f"none of the {len(files)} audio files in {folder} could be read: {listed}{more}")
            if total < chunk:
                raise DataError(
                    f"too little audio in {folder}: training needs at least {chunk / sample_rate:.3f} s "
                    f"({chunk} samples at {sample_rate} Hz), found {total / sample_rate:.3f} s "
                    f"in {n_files} file(s); add more audio"
                )
            if chunker.n_chunks == 0:
                raise DataError(
                    f"the audio in {folder} is digital silence ({total / sample_rate:.1f} s of zeros): nothing to train on"
                )

            meta = {
                "version": CACHE_VERSION,
                "key": key,
                "sample_rate": sample_rate,
                "chunk": chunk,
                "n_chunks": chunker.n_chunks,
                "n_silent": chunker.n_silent,
                "n_files": n_files,
                "skipped": skipped,
                "seconds": total / sample_rate,
            }
            _write_npy(raw_path, chunker.n_chunks, chunk, npy)
            atomic_write_json(meta_path, meta)  # last: a cache counts only once its metadata exists
        finally:
            raw_path.unlink(missing_ok=True)

        # older caches of the same rate and chunk belong to a previous state of the folder
        for old in cache_dir.glob(f"chunks-{sample_rate}hz-{chunk}-*"):
            if old.name not in (npy.name, meta_path.name):
                old.unlink(missing_ok=True)
        return cls(npy, meta, folder, from_cache=False)
