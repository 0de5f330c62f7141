"""How much a trained model sounds like its input: the measurements of ``wavae evaluate``.

    evaluate(target, clips, sample_rate, reference=None) -> {"files": [...], "total": {...}, ...}

``target`` is a *renderer*: a training run (torch, offline; streaming gives the
same signal) or a bundle (onnxruntime, block by block from zero state, as the
device runs it).  Both expose ``encode(audio) -> (z, loudness)``, ``decode(z,
loudness) -> audio`` and ``delay`` (samples by which the output lags the input:
a multi-band vocoder's PQMF delay), so every metric below means the same for both.

Per file, output aligned to its input by ``delay``:

* ``log_mel_l1_db``: mean |difference| of 80-band log-mel power spectra (n_fft
  1024, hop 256) in dB, each floored 80 dB below the input's peak, so silence
  is not scored at -inf;
* ``mrstft``: the training's multi-resolution STFT distance (spectral
  convergence plus log-magnitude L1, at 512, 1024 and 2048 points);
* ``rms_corr``: Pearson correlation of the frame RMS envelopes in dB (2048 /
  256, floored at -80 dB);
* ``f0_cents``: median |f0 error| in cents, by librosa's pYIN (C2 to C7), on
  frames both sides voice, with ``voicing_agreement`` (share of frames whose
  voiced flags agree); None when fewer than 10 frames are voiced on both.

Over all files:

* ``loudness_probe_accuracy``: a linear (logistic) probe on the latent ``z``
  that predicts the input frame's loudness quartile, trained on the even files'
  frames and scored on the odd ones (chance 25 %): the lower, the better the
  latent is disentangled from loudness;
* ``loudness_sweep_corr``: each file's latent decoded with the loudness control
  swept linearly from 0 to 1; Pearson correlation of the output's RMS (dB) with
  the sweep;
* with ``reference`` (the fp32 bundle of the same run), ``reference_log_mel_l1_db``:
  the log-mel distance between the two renderers' outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wavae.device.bundle import load_bundle
from wavae.errors import WavaeError

from .bundle import BundleStreamer

N_MELS, N_FFT, HOP = 80, 1024, 256
TOP_DB = 80.0
RMS_FRAME = 2048
F0_MIN, F0_MAX = 65.4, 2093.0  # C2 .. C7
MIN_VOICED = 10
MAX_FILES = 8  # clips taken from a --data folder, spread over it
SECONDS = 10.0  # at most this much of each clip

# Issue 13's targets for the shipped model: metric -> (comparison, bound, what it is measured on).
# The f0 target means something on monophonic strings only (`wavae data --recipe solo`).
TARGETS: dict[str, tuple[str, float, str]] = {
    "log_mel_l1_db": ("<=", 5.0, "held-out clips"),
    "f0_cents": ("<=", 50.0, "monophonic strings"),
    "rms_corr": (">=", 0.95, "held-out clips"),
    "loudness_probe_accuracy": ("<=", 0.35, "held-out clips; chance is 0.25"),
    "reference_log_mel_l1_db": ("<=", 1.0, "int8 against the fp32 bundle"),
}


def target_text(key: str) -> str:
    """``<= 5 (held-out clips)``: the target of ``key`` as the reports print it ("" if none)."""
    if key not in TARGETS:
        return ""
    op, bound, scope = TARGETS[key]
    return f"{op} {bound:g} ({scope})"


def meets(key: str, value: float | None) -> bool | None:
    """Whether ``value`` meets the target of ``key`` (None: no value, or no target)."""
    if value is None or key not in TARGETS:
        return None
    op, bound, _ = TARGETS[key]
    return value <= bound if op == "<=" else value >= bound


class EvaluateError(WavaeError, ValueError):
    """Nothing to evaluate, or a target that is neither a run nor a bundle."""


class Renderer(Protocol):
    name: str
    kind: str
    sample_rate: int
    frame: int
    delay: int

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def decode(self, z: np.ndarray, loudness: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- renderers
class RunRenderer:
    """A training run's torch model, offline (equal to streaming, layer by layer)."""

    kind = "run"

    def __init__(self, run: Path):
        import torch

        from wavae.train.checkpoint import load_run

        self.name = str(run)
        self.cfg, self.model, _ = load_run(run, require_vocoder=True)
        self.sample_rate = self.cfg.frontend.sample_rate
        self.delay = self.model.delay
        self.frame = self.model.frame
        self._torch = torch

    def _pad(self, audio: np.ndarray) -> np.ndarray:
        return np.pad(audio, (0, (-audio.size) % self.frame))

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.no_grad():
            z, _, loud = self.model.encode(torch.from_numpy(self._pad(audio)).float().view(1, 1, -1))
        return z[0].numpy(), loud[0, 0].numpy()

    def decode(self, z: np.ndarray, loudness: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            y = self.model.decode(torch.from_numpy(z)[None].float(), torch.from_numpy(loudness).float().view(1, 1, -1))
        return y.view(-1).numpy()


class BundleRenderer:
    """A bundle streaming in onnxruntime, block by block from zero state."""

    kind = "bundle"

    def __init__(self, bundle: Path, threads: int = 1):
        b = load_bundle(bundle)
        self.name = str(bundle)
        self.streamer = BundleStreamer(b, threads=threads)
        self.sample_rate, self.block, self.frame = b.sample_rate, b.block, b.frame
        self.delay = b.model_delay
        self.precision = b.precision

    def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        audio = np.pad(audio, (0, (-audio.size) % self.block)).astype(np.float32)
        self.streamer.reset()
        zs, louds = [], []
        for i in range(0, audio.size, self.block):
            z, _, loud = self.streamer.encode(audio[i : i + self.block])
            zs.append(z[0])
            louds.append(loud.reshape(-1))
        return np.concatenate(zs, axis=1), np.concatenate(louds)

    def decode(self, z: np.ndarray, loudness: np.ndarray) -> np.ndarray:
        per = self.block // self.frame
        n = z.shape[1] - z.shape[1] % per
        self.streamer.reset()
        out = [self.streamer.decode(z[None, :, i : i + per], loudness[i : i + per].reshape(1, 1, -1)).reshape(-1)
               for i in range(0, n, per)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def open_target(path: Path, threads: int = 1) -> Renderer:
    path = Path(path)
    if (path / "manifest.json").is_file():
        return BundleRenderer(path, threads)
    if (path / "config.json").is_file():
        return RunRenderer(path)
    raise EvaluateError(f"{path} is neither a training run (config.json) nor a bundle (manifest.json)")


def gather_clips(sample_rate: int, data: Path | None = None, inputs: list[Path] | tuple[Path, ...] = (),
                 max_files: int = MAX_FILES, seconds: float = SECONDS) -> list[Clip]:
    """``inputs`` and up to ``max_files`` audio files spread over the folder ``data``, at
    ``sample_rate``, each cut to ``seconds``."""
    from wavae.train.data import AudioError, find_audio, load_audio

    if max_files < 1 or seconds <= 0:
        raise EvaluateError("--max-files must be at least 1 and --seconds positive")
    paths = list(inputs)
    if data is not None:
        if not Path(data).is_dir():
            raise EvaluateError(f"--data {data} is not a folder")
        found = find_audio(data)
        step = max(1, len(found) // max_files)
        paths += found[::step][:max_files]
    clips = []
    n = int(seconds * sample_rate)
    for path in paths:
        try:
            audio = load_audio(path, sample_rate)[:n]
        except AudioError as e:
            raise EvaluateError(str(e)) from e
        clips.append(Clip(Path(path).name, audio))
    return clips


def reconstruct(r: Renderer, audio: np.ndarray) -> np.ndarray:
    """The renderer's output for ``audio``, aligned to it (delay removed) and cut to its length."""
    z, loud = r.encode(audio)
    y = r.decode(z, loud)
    y = np.concatenate([y[r.delay :], np.zeros(r.delay, np.float32)])
    y = np.pad(y, (0, max(0, audio.size - y.size)))
    return y[: audio.size].astype(np.float32)


# --------------------------------------------------------------------------- metrics
def log_mel_db(x: np.ndarray, sr: int, floor_ref: float | None = None) -> np.ndarray:
    import librosa

    s = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
    db = 10 * np.log10(np.maximum(s, 1e-12))
    ref = db.max() if floor_ref is None else floor_ref
    return np.maximum(db, ref - TOP_DB)


def log_mel_l1_db(x: np.ndarray, y: np.ndarray, sr: int) -> float:
    a = log_mel_db(x, sr)
    b = log_mel_db(y, sr, floor_ref=float(a.max()))
    return float(np.mean(np.abs(a - b)))


def mrstft(x: np.ndarray, y: np.ndarray) -> float:
    import torch

    from wavae.train.losses import multires_stft_loss

    with torch.no_grad():
        return float(multires_stft_loss(torch.from_numpy(y).view(1, 1, -1), torch.from_numpy(x).view(1, 1, -1),
                                        (512, 1024, 2048)))


def rms_db(x: np.ndarray) -> np.ndarray:
    import librosa

    r = librosa.feature.rms(y=x, frame_length=RMS_FRAME, hop_length=HOP)[0]
    return 20 * np.log10(np.maximum(r, 1e-4))


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def f0_error(x: np.ndarray, y: np.ndarray, sr: int) -> tuple[float | None, float]:
    import librosa

    kw = dict(fmin=F0_MIN, fmax=F0_MAX, sr=sr, frame_length=2048, hop_length=HOP)
    fx, vx, _ = librosa.pyin(x, **kw)
    fy, vy, _ = librosa.pyin(y, **kw)
    agree = float(np.mean(vx == vy))
    both = vx & vy & np.isfinite(fx) & np.isfinite(fy)
    if both.sum() < MIN_VOICED:
        return None, agree
    return float(np.median(np.abs(1200 * np.log2(fy[both] / fx[both])))), agree


def loudness_probe(zs: list[np.ndarray], louds_db: list[np.ndarray], seed: int = 0) -> float | None:
    """Accuracy of a logistic probe predicting the loudness quartile from z (train even files, test odd)."""
    from sklearn.linear_model import LogisticRegression

    if len(zs) < 2:
        return None
    edges = np.quantile(np.concatenate(louds_db), [0.25, 0.5, 0.75])
    xs = [z.T for z in zs]
    ys = [np.digitize(l, edges) for l in louds_db]
    xtr, ytr = np.concatenate(xs[0::2]), np.concatenate(ys[0::2])
    xte, yte = np.concatenate(xs[1::2]), np.concatenate(ys[1::2])
    if len(np.unique(ytr)) < 2:
        return None
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit((xtr - mu) / sd, ytr)
    return float(probe.score((xte - mu) / sd, yte))


# --------------------------------------------------------------------------- the evaluation
@dataclass
class Clip:
    name: str
    audio: np.ndarray


def frame_loudness_db(x: np.ndarray, frame: int) -> np.ndarray:
    """The model's own loudness measure (``FrameLoudness``) of each whole frame of ``x``."""
    import torch

    from wavae.train.loudness import FrameLoudness

    n = x.size - x.size % frame
    with torch.no_grad():
        return FrameLoudness(frame)(torch.from_numpy(x[:n]).float().view(1, 1, -1)).view(-1).numpy()


def evaluate(target: Renderer, clips: list[Clip], reference: Renderer | None = None,
             f0: bool = True) -> dict[str, Any]:
    """Every metric of the module docstring, per clip and in total."""
    if not clips:
        raise EvaluateError("no audio to evaluate: pass --input files or a --data folder with audio")
    sr, frame = target.sample_rate, int(target.frame)
    files, zs, louds, sweeps = [], [], [], []
    outputs = {}
    for clip in clips:
        x = clip.audio.astype(np.float32)
        x = x[: x.size - x.size % frame]
        if x.size < 4 * RMS_FRAME:
            raise EvaluateError(f"{clip.name} is too short to evaluate ({x.size} samples; at least {4 * RMS_FRAME})")
        clip.audio = x
        y = reconstruct(target, x)
        outputs[clip.name] = y
        row: dict[str, Any] = {
            "file": clip.name,
            "seconds": round(x.size / sr, 3),
            "log_mel_l1_db": log_mel_l1_db(x, y, sr),
            "mrstft": mrstft(x, y),
            "rms_corr": _corr(rms_db(x), rms_db(y)),
        }
        if f0:
            row["f0_cents"], row["voicing_agreement"] = f0_error(x, y, sr)
        if reference is not None:
            row["reference_log_mel_l1_db"] = log_mel_l1_db(reconstruct(reference, x), y, sr)
        files.append(row)
        # loudness: the latent's frames against the input's, and a manual sweep of the control
        z, _ = target.encode(x)  # a bundle pads to whole blocks: keep the frames of x
        loud = frame_loudness_db(x, frame)
        zs.append(z[:, : loud.size])
        louds.append(loud)
        env = rms_db(target.decode(z, np.linspace(0.0, 1.0, z.shape[1], dtype=np.float32)))
        sweeps.append(_corr(env, np.linspace(0.0, 1.0, env.size)))
    total: dict[str, Any] = {}
    for key in ("log_mel_l1_db", "mrstft", "rms_corr", "f0_cents", "voicing_agreement", "reference_log_mel_l1_db"):
        vals = [f[key] for f in files if f.get(key) is not None]
        total[key] = float(np.mean(vals)) if vals else None
    total["loudness_probe_accuracy"] = loudness_probe(zs, louds)
    sw = [s for s in sweeps if s is not None]
    total["loudness_sweep_corr"] = float(np.mean(sw)) if sw else None
    return {
        "target": target.name,
        "kind": target.kind,
        "precision": getattr(target, "precision", "torch fp32"),
        "reference": reference.name if reference is not None else None,
        "sample_rate": sr,
        "delay_samples": target.delay,
        "files": files,
        "total": total,
        "_outputs": outputs,
    }


# --------------------------------------------------------------------------- the report
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(result: dict[str, Any]) -> str:
    t = result["total"]
    lines = [
        f"# Evaluation of `{result['target']}`",
        "",
        f"{result['kind']} ({result['precision']}), {result['sample_rate']} Hz, output aligned by its "
        f"{result['delay_samples']}-sample filter-bank delay. Metrics are defined in `wavae/quantize/evaluate.py`.",
        "",
        "| metric | value | issue 13 target |",
        "|---|---:|---|",
    ]
    rows = [("log_mel_l1_db", "log-mel L1 (dB)", 2), ("mrstft", "multi-resolution STFT distance", 3),
            ("rms_corr", "RMS-envelope correlation", 3), ("f0_cents", "f0 median error (cents)", 1),
            ("voicing_agreement", "voicing agreement", 3),
            ("loudness_probe_accuracy", "loudness probe accuracy (chance 0.25)", 3),
            ("loudness_sweep_corr", "loudness sweep correlation", 3)]
    if result["reference"]:
        rows.append(("reference_log_mel_l1_db", f"log-mel L1 from `{result['reference']}` (dB)", 2))
    lines += [f"| {label} | {_fmt(t[key], digits)} | {target_text(key)} |" for key, label, digits in rows]
    lines += ["", "## Per file", "", "| file | s | log-mel L1 dB | MR-STFT | RMS corr | f0 cents | voicing |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for f in result["files"]:
        lines.append(f"| {f['file']} | {f['seconds']:.1f} | {_fmt(f['log_mel_l1_db'])} | {_fmt(f['mrstft'], 3)} | "
                     f"{_fmt(f['rms_corr'], 3)} | {_fmt(f.get('f0_cents'), 1)} | {_fmt(f.get('voicing_agreement'), 3)} |")
    lines += ["", "![input and output log-mel spectrograms](spectrograms.png)", ""]
    return "\n".join(lines)


def plot_spectrograms(clip: Clip, output: np.ndarray, sr: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = log_mel_db(clip.audio, sr)
    b = log_mel_db(output, sr, floor_ref=float(a.max()))
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, img, title in ((axes[0], a, f"input: {clip.name}"), (axes[1], b, "output")):
        im = ax.imshow(img, origin="lower", aspect="auto", vmin=a.max() - TOP_DB, vmax=a.max(),
                       extent=(0, img.shape[1] * HOP / sr, 0, N_MELS))
        ax.set_title(title)
        ax.set_ylabel("mel band")
    axes[1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="dB")
    from wavae.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def write_report(result: dict[str, Any], clips: list[Clip], report: Path) -> dict[str, Path]:
    from wavae.fileio import atomic_write_bytes, atomic_write_json

    report = Path(report)
    report.mkdir(parents=True, exist_ok=True)
    outputs = result.pop("_outputs")
    paths = {"json": report / "metrics.json", "markdown": report / "report.md", "png": report / "spectrograms.png"}
    atomic_write_json(paths["json"], result)
    atomic_write_bytes(paths["markdown"], render_markdown(result).encode())
    plot_spectrograms(clips[0], outputs[clips[0].name], result["sample_rate"], paths["png"])
    result["_outputs"] = outputs
    return paths


def to_json(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2)
