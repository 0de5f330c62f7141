"""``make demo``: the whole job on one machine, through the same commands a person types.

    corpus (fluidsynth strings + espeak-ng speech, offline)
      -> wavae train  (tiny preset, both stages)
      -> wavae export (fp32 and int8 bundles)    -> wavae verify
      -> wavae run    (the device engine over a file, with a control script: a latent
                       bias sweep, randomize, freeze, and the feedback band-pass)
      -> wavae profile (latency report: JSON, Markdown, PNG)
      -> demo/spectrograms.png (input, reconstruction, performance)

Each step is skipped when its output is already there, so a second `make demo`
is quick; DEMO_STEPS and DEMO_PRESET change the training.
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
    if (run / "checkpoint.pt").exists():
        sh("train", "--data", a.data, "--out", str(run), "--resume", "--steps", str(a.steps))
    else:
        sh("train", "--preset", a.preset, "--data", a.data, "--out", str(run), "--steps", str(a.steps))

    fp32, int8 = out / "bundle-fp32", out / "bundle-int8"
    sh("export", str(run), "--out", str(fp32), "--precision", "fp32", "--force")
    sh("export", str(run), "--out", str(int8), "--precision", "int8", "--force")

    speech = sorted(Path(a.data).glob("speech/*.wav"))
    strings = sorted(Path(a.data).glob("strings/*.wav"))
    source = (strings or speech)[0]
    sh("verify", str(int8), "--run", str(run), "--input", str(source))

    recon = out / "reconstruction.wav"
    sh("reconstruct", str(run), str(source), str(recon), "--streaming", "--block", "512")
    script = out / "controls.json"
    import soundfile as sf

    control_script(script, sf.info(str(source)).duration)
    performed = out / "performance.wav"
    sh("run", "--bundle", str(fp32), "--input", str(source), "--output", str(performed), "--controls", str(script))
    # style transfer: speech through a model that was also trained on strings
    if speech:
        sh("run", "--bundle", str(int8), "--input", str(speech[0]), "--output", str(out / "speech-int8.wav"))
    sh("profile", "--bundle", str(fp32), str(int8), "--report", str(out / "profile"), "--seconds", "5")

    png = out / "spectrograms.png"
    spectrograms(png, [("input", source), ("reconstruction (torch, streaming)", recon),
                       ("performance (device engine, control script)", performed)])
    print(f"\ndemo done in {time.monotonic() - t0:.0f} s. Listen to {out}/*.wav; see {png}, "
          f"{out}/profile/report.md and `tensorboard --logdir {run}/logs`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
