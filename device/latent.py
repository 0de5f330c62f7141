"""Latent paths: a sound as the bundle's latent trajectory, its operators, and its file.

A latent path is what a bundle's encoder makes of a sound, one column per
latent frame (``frame`` samples at the model rate)::

    z         [latent_dim, N]  in the bundle's PCA space, in units of each dimension's std
    loudness  [N]              the encoder's flattened loudness, 0..1
    meta      {"format": "wavae-latent-path", "version": 1, "bundle_sha256": ...,
               "sample_rate": ..., "frame": ..., "latent_dim": ...}

stored as an ``.npz`` (``meta`` as a JSON string, so ``allow_pickle`` stays
off).  ``bundle_sha256`` is ``wavae.device.bundle.bundle_sha256``: a path
decodes only on the bundle that encoded it, since another model's latent
dimensions mean something else.

The model is block-causal and offline and streaming output are one signal, so
frame ``n`` of a path is the sound's frame ``n`` and decoding it gives the
output's frame ``n``: a path of ``N`` frames decodes to exactly ``N * frame``
samples.  The tail of the last graph block is filled by holding the last
frame and cut off again.

Operators are small frozen dataclasses with ``apply(path) -> path`` (the CLI
builds them from its flags, in the order given; the web page sends them as
JSON, ``op_from_json``).  Every formula lives here once:

* ``Scale(s)``:               ``z * s``
* ``Bias(dim, v)``:           ``z[dim] + v``
* ``Randomize(sigma, seed)``: ``z + sigma * N(0, 1)`` (numpy's PCG64 from ``seed``)
* ``Reverse()``:              both ``z`` and ``loudness`` back to front
* ``Curve(dim, points, mode)``: breakpoints ``[t, value]`` with ``t`` in 0..1 of
  the path (frame ``n`` is at ``t = n / (N - 1)``), linearly interpolated and
  held flat beyond the first and last point; added to dimension ``dim``
  (``add``) or replacing it (``set``)

and two combinations of paths:

* ``interpolate(a, b)``: the seed's A->B, ``z[n] = z_a[n] (1 - n/N) + z_b[n] (n/N)``
  (and the same for loudness), ``N`` the shorter length unless given;
* ``plane(a, b, c, d, xy)``: bilinear weights over four corners, A at (0, 0),
  B at (1, 0), C at (0, 1), D at (1, 1); ``xy`` a fixed position or breakpoints
  ``[t, x, y]`` (a gesture drawn on the pad).

A path shorter than the length asked for holds its last frame.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from wavae.errors import WavaeError
from wavae.fileio import atomic_path
from wavae.paths import input_file, output_file
from wavae.progress import Progress

from .audio_file import AudioReader, AudioWriter
from .backends import Backend, make_backend
from .bundle import Bundle
from .resample import make_resampler

FORMAT = "wavae-latent-path"
VERSION = 1
CURVE_MODES = ("add", "set")
READ_CHUNK = 16384  # input frames read (and resampled) at a time while encoding


class LatentPathError(WavaeError, ValueError):
    """A latent path file that cannot be used: not a path, damaged, or of an unknown version."""


class PathShapeError(LatentPathError):
    """A path whose arrays do not have the shapes its metadata (or the bundle) says."""


class BundleMismatchError(LatentPathError):
    """A path encoded by another bundle than the one asked to decode or combine it."""


class LatentOpError(WavaeError, ValueError):
    """An operator's argument is out of range (a dimension the latent lacks, a bad curve)."""


# ---------------------------------------------------------------------------
# the path and its file
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PathMeta:
    bundle_sha256: str
    sample_rate: int
    frame: int
    latent_dim: int

    @classmethod
    def of(cls, bundle: Bundle) -> "PathMeta":
        return cls(bundle.sha256, bundle.sample_rate, bundle.frame, bundle.latent_dim)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "bundle_sha256": self.bundle_sha256,
                "sample_rate": self.sample_rate, "frame": self.frame, "latent_dim": self.latent_dim}


@dataclass(frozen=True)
class LatentPath:
    z: np.ndarray  # [latent_dim, N] float32
    loudness: np.ndarray  # [N] float32
    meta: PathMeta

    def __post_init__(self) -> None:
        check_shapes(self.z, self.loudness, self.meta.latent_dim)

    @property
    def frames(self) -> int:
        return int(self.z.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames * self.meta.frame / self.meta.sample_rate

    def replace(self, z: np.ndarray | None = None, loudness: np.ndarray | None = None) -> "LatentPath":
        return LatentPath(self.z if z is None else np.ascontiguousarray(z, np.float32),
                          self.loudness if loudness is None else np.ascontiguousarray(loudness, np.float32),
                          self.meta)

    def check_bundle(self, bundle: Bundle, what: str = "the path") -> None:
        """Raise ``BundleMismatchError`` unless this path was encoded by ``bundle``'s model."""
        if self.meta.bundle_sha256 != bundle.sha256:
            raise BundleMismatchError(
                f"{what} was encoded by another bundle (sha256 {self.meta.bundle_sha256[:12]}...) than "
                f"{bundle.path} ({bundle.sha256[:12]}...); a latent only means something to the model that made "
                f"it: encode the sound again with `wavae latent encode --bundle {bundle.path} ...`"
            )


def check_shapes(z: Any, loudness: Any, latent_dim: int) -> None:
    """z ``[latent_dim, N]`` and loudness ``[N]``, float, finite, N >= 1; else ``PathShapeError``."""
    if not isinstance(z, np.ndarray) or z.ndim != 2 or z.shape[0] != latent_dim:
        got = list(z.shape) if isinstance(z, np.ndarray) else type(z).__name__
        raise PathShapeError(f"z must be [latent_dim={latent_dim}, frames], got {got}")
    if z.shape[1] < 1:
        raise PathShapeError("the path has no frames")
    if not isinstance(loudness, np.ndarray) or loudness.shape != (z.shape[1],):
        got = list(loudness.shape) if isinstance(loudness, np.ndarray) else type(loudness).__name__
        raise PathShapeError(f"loudness must be [frames={z.shape[1]}] like z, got {got}")
    for name, a in (("z", z), ("loudness", loudness)):
        if a.dtype.kind != "f":
            raise PathShapeError(f"{name} must hold floats, got {a.dtype}")
        if not np.isfinite(a).all():
            raise PathShapeError(f"{name} holds NaN or Inf; the path is damaged")


def save_path(file: str | Path, path: LatentPath, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``path`` to ``file`` (.npz) atomically."""
    out = output_file(file, tuple(inputs))
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, z=path.z.astype(np.float32), loudness=path.loudness.astype(np.float32),
                 meta=np.array(json.dumps(path.meta.to_json())))
    return out


def load_path(file: str | Path) -> LatentPath:
    """Read a path written by ``save_path``, with checks that say what is wrong."""
    p = input_file(file, "latent path")
    if not zipfile.is_zipfile(p):
        raise LatentPathError(f"{p} is not a latent path (an .npz archive); make one with `wavae latent encode`")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise LatentPathError(f"{p} is not a latent path (.npz) ({e}); make one with `wavae latent encode`") from e
    missing = {"z", "loudness", "meta"} - set(arrays)
    if missing:
        raise LatentPathError(f"{p} is not a latent path: it lacks {', '.join(sorted(missing))}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as e:
        raise LatentPathError(f"{p}: its meta is not JSON ({e}); the file is damaged") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LatentPathError(f"{p} is not a wavae latent path (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    if meta.get("version") != VERSION:
        raise LatentPathError(f"{p} is latent path version {meta.get('version')!r}; this wavae reads version "
                              f"{VERSION}: encode the sound again, or update wavae")
    try:
        pm = PathMeta(str(meta["bundle_sha256"]), int(meta["sample_rate"]), int(meta["frame"]),
                      int(meta["latent_dim"]))
    except (KeyError, TypeError, ValueError) as e:
        raise LatentPathError(f"{p}: its meta lacks or garbles {e}; the file is damaged") from e
    try:
        return LatentPath(arrays["z"].astype(np.float32), arrays["loudness"].astype(np.float32), pm)
    except PathShapeError as e:
        raise PathShapeError(f"{p}: {e}") from None


def same_bundle(paths: Sequence[LatentPath], names: Sequence[str]) -> PathMeta:
    """The common meta of paths to be combined; ``BundleMismatchError`` if they come from different bundles."""
    first = paths[0].meta
    for p, name in zip(paths[1:], names[1:]):
        if p.meta.bundle_sha256 != first.bundle_sha256:
            raise BundleMismatchError(
                f"{names[0]} and {name} were encoded by different bundles; paths combine only within one "
                f"model: encode both sounds with the same --bundle"
            )
    return first


# ---------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------
def _finite(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise LatentOpError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _dim(dim: Any, path: LatentPath) -> int:
    d = path.meta.latent_dim
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < d:
        raise LatentOpError(f"dimension {dim!r} does not exist: this latent has dimensions 0 .. {d - 1}")
    return dim


def positions(n: int) -> np.ndarray:
    """Where frame k of an n-frame path lies on 0..1: k / (n - 1) (0 for a single frame)."""
    return np.arange(n, dtype=np.float64) / max(n - 1, 1)


def check_curve(points: Any, what: str = "curve", columns: int = 2) -> np.ndarray:
    """Breakpoints ``[[t, v, ...], ...]`` (``columns`` numbers each, t in 0..1), sorted by t."""
    if not isinstance(points, list) or not points:
        raise LatentOpError(f"{what} must be a non-empty list of [t, value] breakpoints, got {points!r}"[:300])
    rows = []
    for row in points:
        if not isinstance(row, (list, tuple)) or len(row) != columns:
            raise LatentOpError(f"{what}: each breakpoint is a list of {columns} numbers, got {row!r}"[:300])
        rows.append([_finite(what, v) for v in row])
    a = np.array(rows, np.float64)
    if (a[:, 0] < 0).any() or (a[:, 0] > 1).any():
        raise LatentOpError(f"{what}: t runs from 0 (start of the path) to 1 (its end); got t outside 0..1")
    return a[np.argsort(a[:, 0], kind="stable")]


def eval_curve(points: np.ndarray, n: int) -> np.ndarray:
    """``points`` (from ``check_curve``), columns 1.. linearly interpolated at the n frames' positions."""
    t = positions(n)
    return np.stack([np.interp(t, points[:, 0], points[:, k]) for k in range(1, points.shape[1])])


@dataclass(frozen=True)
class Scale:
    s: float

    def apply(self, path: LatentPath) -> LatentPath:
        return path.replace(z=path.z * np.float32(_finite("scale", self.s)))


@dataclass(frozen=True)
class Bias:
    dim: int
    value: float

    def apply(self, path: LatentPath) -> LatentPath:
        z = path.z.copy()
        z[_dim(self.dim, path)] += np.float32(_finite("bias", self.value))
        return path.replace(z=z)


@dataclass(frozen=True)
class Randomize:
    sigma: float
    seed: int = 0

    def apply(self, path: LatentPath) -> LatentPath:
        sigma = _finite("randomize sigma", self.sigma)
        if sigma < 0:
            raise LatentOpError(f"randomize sigma must be >= 0, got {sigma}")
        rng = np.random.default_rng(self.seed)
        return path.replace(z=path.z + (sigma * rng.standard_normal(path.z.shape)).astype(np.float32))


@dataclass(frozen=True)
class Reverse:
    def apply(self, path: LatentPath) -> LatentPath:
        return path.replace(z=path.z[:, ::-1], loudness=path.loudness[::-1])


@dataclass(frozen=True)
class Curve:
    dim: int
    points: tuple[tuple[float, float], ...]
    mode: str = "add"

    def apply(self, path: LatentPath) -> LatentPath:
        if self.mode not in CURVE_MODES:
            raise LatentOpError(f"curve mode must be one of {', '.join(CURVE_MODES)}, got {self.mode!r}")
        d = _dim(self.dim, path)
        values = eval_curve(check_curve([list(p) for p in self.points]), path.frames)[0].astype(np.float32)
        z = path.z.copy()
        z[d] = z[d] + values if self.mode == "add" else values
        return path.replace(z=z)


Op = Scale | Bias | Randomize | Reverse | Curve


def apply_ops(path: LatentPath, ops: Sequence[Op]) -> LatentPath:
    """Apply ``ops`` in order."""
    for op in ops:
        path = op.apply(path)
    return path


def op_from_json(obj: Any) -> Op:
    """An operator from its JSON form, e.g. ``{"op": "bias", "dim": 0, "value": 1.5}`` (the web page's)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise LatentOpError(f"an operator is an object with an 'op' name, got {obj!r}"[:300])
    kind = obj["op"]
    try:
        if kind == "scale":
            return Scale(_finite("scale", obj["s"]))
        if kind == "bias":
            return Bias(_int(obj["dim"]), _finite("bias", obj["value"]))
        if kind == "randomize":
            return Randomize(_finite("randomize sigma", obj["sigma"]), _int(obj.get("seed", 0)))
        if kind == "reverse":
            return Reverse()
        if kind == "curve":
            pts = check_curve(obj["points"])
            return Curve(_int(obj["dim"]), tuple((float(t), float(v)) for t, v in pts), obj.get("mode", "add"))
    except KeyError as e:
        raise LatentOpError(f"operator {kind!r} needs {e}") from None
    raise LatentOpError(f"unknown operator {kind!r}; use scale, bias, randomize, reverse or curve")


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise LatentOpError(f"expected a whole number, got {v!r}")
    return v


# ---------------------------------------------------------------------------
# combinations
# ---------------------------------------------------------------------------
def _frames(length: int | None, paths: Sequence[LatentPath]) -> int:
    n = min(p.frames for p in paths) if length is None else length
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LatentOpError(f"length must be a whole number of frames >= 1, got {length!r}")
    return n


def _held(path: LatentPath, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n frames of ``path``, its last frame held where it is shorter."""
    idx = np.minimum(np.arange(n), path.frames - 1)
    return path.z[:, idx], path.loudness[idx]


def interpolate(a: LatentPath, b: LatentPath, length: int | None = None,
                names: Sequence[str] = ("A", "B")) -> LatentPath:
    """The seed's A->B: ``z[n] = z_a[n] (1 - n/N) + z_b[n] (n/N)``, loudness alike."""
    meta = same_bundle((a, b), names)
    n = _frames(length, (a, b))
    za, la = _held(a, n)
    zb, lb = _held(b, n)
    w = np.arange(n, dtype=np.float64) / n
    z = za * (1.0 - w) + zb * w
    loud = la * (1.0 - w) + lb * w
    return LatentPath(z.astype(np.float32), loud.astype(np.float32), meta)


def plane_weights(xy: np.ndarray) -> np.ndarray:
    """Bilinear weights ``[4, N]`` of corners A (0,0), B (1,0), C (0,1), D (1,1) at positions ``xy`` [2, N]."""
    x, y = xy
    return np.stack([(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y])


def plane(corners: Sequence[LatentPath], xy: Any, length: int | None = None,
          names: Sequence[str] = ("A", "B", "C", "D")) -> LatentPath:
    """Mix four paths with bilinear weights; ``xy`` is ``(x, y)`` or breakpoints ``[[t, x, y], ...]``."""
    if len(corners) != 4:
        raise LatentOpError(f"the plane has four corners, got {len(corners)} paths")
    meta = same_bundle(corners, names)
    n = _frames(length, corners)
    if isinstance(xy, tuple) and len(xy) == 2:
        x, y = (_finite("plane x", xy[0]), _finite("plane y", xy[1]))
        pts = np.array([[0.0, x, y]])
    else:
        pts = check_curve(xy, "the xy gesture", columns=3)
    if (pts[:, 1:] < 0).any() or (pts[:, 1:] > 1).any():
        raise LatentOpError("plane positions x and y run from 0 to 1 (A at 0,0; B at 1,0; C at 0,1; D at 1,1)")
    w = plane_weights(eval_curve(pts, n))
    z = np.zeros((meta.latent_dim, n))
    loud = np.zeros(n)
    for k, p in enumerate(corners):
        zk, lk = _held(p, n)
        z += zk * w[k]
        loud += lk * w[k]
    return LatentPath(z.astype(np.float32), loud.astype(np.float32), meta)


# ---------------------------------------------------------------------------
# encoding and decoding on a bundle
# ---------------------------------------------------------------------------
class PathCodec:
    """A bundle's encoder and decoder run over whole sounds and paths, from zero state.

    One backend session per graph, made once; use as a context manager.
    """

    def __init__(self, bundle: Bundle, backend: Backend | None = None, threads: int = 1):
        self.bundle = bundle
        self.backend = backend if backend is not None else make_backend(bundle, "onnxruntime", threads=threads)
        self.meta = PathMeta.of(bundle)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "PathCodec":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- encode ------------------------------------------------------------
    def encode_file(self, file: str | Path, progress: str | None = None) -> LatentPath:
        """Encode a mono or stereo audio file (any rate: resampled to the model's)."""
        with AudioReader(file, rates=None) as reader:
            n_model = max(1, int(round(reader.frames * self.bundle.sample_rate / reader.rate)))
            rs = make_resampler(reader.rate, self.bundle.sample_rate, READ_CHUNK)
            with Progress(reader.seconds, progress or "", "audio s", enabled=progress is not None) as bar:
                def chunks():
                    got = 0
                    for x in reader.blocks(READ_CHUNK):
                        bar.update(x.shape[0] / reader.rate)
                        y = rs.process(x.mean(axis=1, dtype=np.float32))
                        got += y.size
                        yield y
                    silence = np.zeros(READ_CHUNK, np.float32)
                    while got < n_model:  # flush the resampler's withheld filter delay
                        y = rs.process(silence)
                        got += y.size
                        yield y

                return self.encode_stream(chunks(), n_model)

    def encode(self, audio: np.ndarray) -> LatentPath:
        """Encode a mono signal already at the model rate."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        return self.encode_stream(iter((audio,)), audio.size)

    def encode_stream(self, chunks, n: int) -> LatentPath:
        """Encode the first ``n`` model-rate samples of ``chunks`` (an iterable of 1-D arrays)."""
        B, F, D = self.bundle.block, self.bundle.frame, self.bundle.latent_dim
        nf = self.bundle.frames_per_block
        frames = max(1, -(-n // F))
        blocks = -(-frames // nf)
        z = np.zeros((D, blocks * nf), np.float32)
        loud = np.zeros(blocks * nf, np.float32)
        buf = np.zeros(B, np.float32)
        fill = taken = k = 0
        state = self.backend.init_state("encoder")
        source = iter(chunks)
        pending = np.zeros(0, np.float32)
        while k < blocks:
            if not pending.size:
                pending = next(source, None)
                if pending is None:
                    pending = np.zeros(B, np.float32)  # past the end: zeros up to the whole block
                pending = np.asarray(pending, np.float32)
            take = min(B - fill, pending.size)
            part = pending[:take]
            keep = max(0, min(take, n - taken))  # samples past n are padding: zeros
            buf[fill : fill + keep] = part[:keep]
            buf[fill + keep : fill + take] = 0.0
            fill += take
            taken += take
            pending = pending[take:]
            if fill == B:
                out, state = self.backend.process("encoder", {"audio": buf}, state)
                z[:, k * nf : (k + 1) * nf] = out["z_mean"].reshape(D, nf)
                loud[k * nf : (k + 1) * nf] = out["loudness"].reshape(nf)
                fill = 0
                k += 1
        return LatentPath(z[:, :frames].copy(), loud[:frames].copy(), self.meta)

    # -- decode ------------------------------------------------------------
    def decode_blocks(self, path: LatentPath, write: Callable[[np.ndarray], None],
                      progress: str | None = None) -> int:
        """Decode ``path`` block by block; ``write`` gets mono model-rate audio, ``N * frame`` samples in all."""
        path.check_bundle(self.bundle)
        D, nf, F = self.bundle.latent_dim, self.bundle.frames_per_block, self.bundle.frame
        n = path.frames
        blocks = -(-n // nf)
        idx = np.minimum(np.arange(blocks * nf), n - 1)  # the last frame held to a whole block
        z, loud = path.z[:, idx], path.loudness[idx]
        state = self.backend.init_state("decoder")
        left = n * F
        with Progress(blocks, progress or "", "block", enabled=progress is not None) as bar:
            for k in range(blocks):
                cols = slice(k * nf, (k + 1) * nf)
                out, state = self.backend.process("decoder", {"z": z[:, cols].reshape(1, D, nf),
                                                              "loudness": loud[cols].reshape(1, 1, nf)}, state)
                y = out["audio"].reshape(-1)[: min(left, nf * F)]
                write(y)
                left -= y.size
                bar.update(1)
        return n * F

    def decode(self, path: LatentPath) -> np.ndarray:
        """The whole decoded signal (mono, model rate, ``N * frame`` samples)."""
        parts: list[np.ndarray] = []
        self.decode_blocks(path, lambda y: parts.append(y.copy()))
        return np.concatenate(parts)

    def decode_to_file(self, path: LatentPath, out: str | Path, inputs: Sequence[str | Path] = (),
                       progress: str | None = None) -> int:
        """Decode to a float WAV at the model rate, written atomically; returns its frames."""
        path.check_bundle(self.bundle)
        with AudioWriter(out, self.bundle.sample_rate, 1, inputs=tuple(inputs)) as w:
            self.decode_blocks(path, lambda y: w.write(y.reshape(-1, 1)), progress)
        return w.frames


def check_loudness(loudness: Any) -> float:
    """A loudness value the decoder takes: 0..1, its flattened scale."""
    v = _finite("loudness", loudness)
    if not 0.0 <= v <= 1.0:
        raise LatentOpError(f"loudness runs from 0 to 1 (the decoder's flattened scale), got {v:g}")
    return v


def with_loudness(path: LatentPath, loudness: float) -> LatentPath:
    """``path`` with a constant loudness (``check_loudness``)."""
    return path.replace(loudness=np.full(path.frames, check_loudness(loudness), np.float32))
