"""``make demo``: the whole job on one machine, through the same commands a person types.

The shipped model (``models/pi``, what ``wavae run`` plays when no bundle is named),
on the device path, over a strings clip and a speech clip of the demo corpus (which
it was not trained on):

    wavae run       reconstruction, then a performance: a latent bias sweep, noise,
                    freeze, and feedback shaping through the band-pass
    wavae transfer  style transfer: speech played through the model
    wavae latent    A->B: strings encoded, speech encoded, interpolated, decoded
    wavae profile   the shipped fp32 and int8 bundles (JSON, Markdown, PNG)
    demo/spectrograms.png: input against each output

Then the training pipeline, on a small run of the ``tiny`` preset (DEMO_STEPS,
DEMO_PRESET): corpus -> wavae train -> wavae export (fp32, int8) -> wavae verify ->
wavae reconstruct and wavae run, into ``demo/tiny/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def sh(*args: str) -> None:
    cmd = [sys.executable, "-m", "wavae", *args]
    print(f"\n$ wavae {' '.join(args)}", flush=True)
    t = time.monotonic()
    r = subprocess.run(cmd)
    if r.returncode != 0:
        sys.exit(f"demo: `wavae {args[0]}` failed with exit code {r.returncode}")
    print(f"  ({time.monotonic() - t:.1f} s)", flush=True)


def control_script(path: Path, seconds: float) -> None:
    """A small performance: sweep PCA dim 0, add randomness, freeze, then feedback."""
    s = seconds
    events = [
        {"t": 0.0, "control": "bias.0", "value": 0.0},
        {"t": 0.25 * s, "control": "bias.0", "value": 2.0},
        {"t": 0.40 * s, "control": "bias.0", "value": -2.0},
        {"t": 0.50 * s, "control": "bias.0", "value": 0.0},
        {"t": 0.50 * s, "control": "noise", "value": 0.5},
        {"t": 0.65 * s, "control": "noise", "value": 0.0},
        {"t": 0.65 * s, "control": "freeze", "value": True},
        {"t": 0.75 * s, "control": "freeze", "value": False},
        {"t": 0.75 * s, "control": "feedback_freq", "value": 800.0},
        {"t": 0.75 * s, "control": "feedback_q", "value": 4.0},
        {"t": 0.75 * s, "control": "feedback_gain", "value": 0.6},
    ]
    path.write_text(json.dumps({"events": events}, indent=2) + "\n")


def spectrograms(pngs: Path, files: list[tuple[str, Path]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import soundfile as sf
    from scipy.signal import stft

    fig, axes = plt.subplots(len(files), 1, figsize=(10, 2.6 * len(files)), sharex=True)
    for ax, (title, path) in zip(axes, files):
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        f, t, z = stft(x[:, 0], fs=sr, nperseg=1024, noverlap=768)
        ax.pcolormesh(t, f / 1000, 20 * np.log10(np.abs(z) + 1e-6), vmin=-100, vmax=-20, shading="auto")
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9)
    axes[-1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(pngs, dpi=110)
    plt.close(fig)


def shipped_model(out: Path, strings: Path, speech: Path | None) -> list[tuple[str, Path]]:
    """The shipped default model on the device path; returns (title, wav) for the figure."""
    from wavae.device.shipped import DEFAULT_MODEL, DEFAULT_PRECISION, default_bundle, shipped_bundle

    if default_bundle() is None:
        sys.exit(f"demo: the shipped model {shipped_bundle()} is missing (a clone without models/?)")
    fp32, int8 = shipped_bundle(precision="fp32"), shipped_bundle(precision="int8")
    import soundfile as sf

    recon, performed = out / "reconstruction.wav", out / "performance.wav"
    sh("run", "--input", str(strings), "--output", str(recon))  # no --bundle: the shipped default
    script = out / "controls.json"
    control_script(script, sf.info(str(strings)).duration)
    sh("run", "--input", str(strings), "--output", str(performed), "--controls", str(script))
    figure = [("input: " + strings.name, strings), (f"reconstruction ({DEFAULT_MODEL}, {DEFAULT_PRECISION}, device engine)", recon),
              ("performance: bias sweep, noise, freeze, then feedback band-pass 800 Hz, Q 4", performed)]
    if speech is not None:
        transfer, ab = out / "speech-transfer.wav", out / "a-to-b.wav"
        sh("transfer", str(speech), "-o", str(transfer))
        a, b, path = out / "a.npz", out / "b.npz", out / "a-to-b.npz"
        sh("latent", "encode", str(strings), "-o", str(a))
        sh("latent", "encode", str(speech), "-o", str(b))
        sh("latent", "interpolate", str(a), str(b), "-o", str(path))
        sh("latent", "decode", str(path), "-o", str(ab))
        figure += [("input: " + speech.name, speech), ("style transfer: that speech through the model", transfer),
                   ("A->B: z[n] = z_strings[n](1-n/N) + z_speech[n](n/N), decoded", ab)]
    sh("profile", "--bundle", str(fp32), str(int8), "--report", str(out / "profile"), "--seconds", "5")
    return figure


def train_pipeline(a: argparse.Namespace, out: Path, run: Path, source: Path) -> None:
    """The desktop side on a small run: train, export, verify, reconstruct, play."""
    out.mkdir(parents=True, exist_ok=True)
    if (run / "checkpoint.pt").exists():
        sh("train", "--data", a.data, "--out", str(run), "--resume", "--steps", str(a.steps))
    else:
        sh("train", "--preset", a.preset, "--data", a.data, "--out", str(run), "--steps", str(a.steps))
    fp32, int8 = out / "bundle-fp32", out / "bundle-int8"
    sh("export", str(run), "--out", str(fp32), "--precision", "fp32", "--force")
    sh("export", str(run), "--out", str(int8), "--precision", "int8", "--force")
    sh("verify", str(int8), "--run", str(run), "--input", str(source))
    sh("reconstruct", str(run), str(source), str(out / "reconstruction-torch.wav"), "--streaming", "--block", "512")
    sh("run", "--bundle", str(int8), "--input", str(source), "--output", str(out / "reconstruction-int8.wav"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/corpus")
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--out", default="demo")
    p.add_argument("--minutes", type=float, default=float(os.environ.get("DEMO_MINUTES", 3)))
    p.add_argument("--steps", type=int, default=int(os.environ.get("DEMO_STEPS", 1500)))
    p.add_argument("--preset", default=os.environ.get("DEMO_PRESET", "tiny"))
    a = p.parse_args()
    out, run = Path(a.out), Path(a.run)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    sh("data", "--out", a.data, "--minutes", str(a.minutes))
    speech = sorted(Path(a.data).glob("speech/*.wav"))
    strings = sorted(Path(a.data).glob("strings/*.wav"))
    source = (strings or speech)[0]

    figure = shipped_model(out, source, speech[0] if speech else None)
    png = out / "spectrograms.png"
    spectrograms(png, figure)
    train_pipeline(a, out / a.preset, run, source)
    print(f"\ndemo done in {time.monotonic() - t0:.0f} s. Listen to {out}/*.wav; see {png}, "
          f"{out}/profile/report.md, models/pi/MODEL_CARD.md and `tensorboard --logdir {run}/logs`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
