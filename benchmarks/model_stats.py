"""Model statistics per preset: parameters and MACs per second of audio of each
sub-model, algorithmic latency, and training steps per second on this CPU.

    .venv/bin/python benchmarks/model_stats.py [--presets wavae lowlatency tiny]
        [--threads 1] [--min-steps 3] [--min-seconds 2] [--out docs/benchmarks/model.md]

MACs are counted by ``wavae.train.macs.count_macs`` (forward hooks on every
convolution plus the mel matmul, over a whole number of latent frames, scaled to
one second).  Training speed uses the trainer's own step functions,
``Trainer.vae_step`` (frontend, encoder, decoder and loudness classifier forward
and backward, one Adam step) and ``Trainer.vocoder_step`` (generator forward,
discriminator step, generator adversarial + feature-matching + spectral loss,
backward, Adam), on batches of the preset's ``train.batch`` x ``train.chunk``
samples of random audio; one warm-up step, then as many steps as needed to
reach both ``--min-steps`` and ``--min-seconds``.

It also counts the same for each preset pruned at ``--prune-ratio`` (default 0.5)
by ``wavae.quantize.prune``.  Prints a Markdown report and writes it
(atomically) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from wavae.device.machine import cpu_name  # noqa: E402

# the seed's default configuration, as measured on the original wavae code
SEED_TOTAL_MACS = 4.8e9
SEED_MELGAN_SHARE = 0.89


def _inference_params(model) -> dict:
    from wavae.train.macs import count_params

    params = {k: count_params(getattr(model, k)) for k in ("frontend", "encoder", "decoder", "vocoder")}
    params["inference"] = sum(params.values())
    return params


def model_figures(preset: str, prune_ratio: float) -> dict:
    from wavae.train.config import resolve
    from wavae.train.factory import build_discriminator, build_model
    from wavae.train.macs import count_macs, count_params

    cfg = resolve(preset)
    model = build_model(cfg).eval()
    params = _inference_params(model)
    params["classifier"] = count_params(model.classifier)
    params["discriminator"] = count_params(build_discriminator(cfg))
    figs = {
        "cfg": cfg,
        "params": params,
        "macs": count_macs(model),
        "latency": model.latency,
        "delay": model.delay,
        "frame": model.frame,
        "sample_rate": model.sample_rate,
    }
    if prune_ratio > 0:
        from wavae.quantize.prune import prune_model

        pruned = prune_model(model, prune_ratio)
        figs["pruned"] = {"params": _inference_params(pruned), "macs": count_macs(pruned)}
    return figs


def _time_steps(step, min_steps: int, min_seconds: float) -> tuple[float, int]:
    step()  # warm-up: allocator, lazy init
    n, start = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - start < min_seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start), n


def training_speed(cfg, min_steps: int, min_seconds: float) -> dict:
    import numpy as np

    from wavae.train.trainer import Trainer

    import dataclasses

    rng = np.random.default_rng(0)
    # time the adversarial vocoder step (discriminator included), not a preset's STFT-only warm-up
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, adv_start=0))
    t = cfg.train
    chunks = (0.1 * rng.standard_normal((max(t.batch, 4), t.chunk))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", chunks, device="cpu", show_progress=False)
        trainer.fit_statistics()
        vae, n_vae = _time_steps(trainer.vae_step, min_steps, min_seconds)
        voc, n_voc = _time_steps(trainer.vocoder_step, min_steps, min_seconds)
        trainer.close()
    return {"vae": vae, "vae_n": n_vae, "vocoder": voc, "vocoder_n": n_voc,
            "batch": t.batch, "chunk": t.chunk}


def _m(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def _p(x: int) -> str:
    return f"{x:,}"


def render(figs: dict[str, dict], speeds: dict[str, dict], threads: int, prune_ratio: float = 0.0,
           load: tuple[float, float] | None = None) -> str:
    import torch

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Model statistics",
        "",
        f"Measured {now} by `benchmarks/model_stats.py` on {cpu_name()} "
        f"({os.cpu_count()} cores, shared), torch {torch.__version__}, {threads} thread(s).",
        "",
        "## Multiply-accumulates per second of audio (millions)",
        "",
        "Counted by forward hooks on every convolution and the mel matmul over a whole number of "
        "latent frames (`wavae.train.macs`); bias, batch norm and activations are not counted; "
        "*other* is the loudness power and the PCA rotations.",
        "",
        "| preset | rate | frontend (fixed DFT) | encoder | decoder | vocoder (MelGAN) | other | **total** | MelGAN share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in figs.items():
        m = f["macs"]
        lines.append(
            f"| {name} | {f['sample_rate']} Hz | {_m(m['frontend'])} | {_m(m['encoder'])} | {_m(m['decoder'])} | "
            f"{_m(m['vocoder'])} | {_m(m['other'])} | **{_m(m['total'])}** | {100 * m['vocoder'] / m['total']:.1f} % |"
        )
    if "wavae" in figs:
        m = figs["wavae"]["macs"]
        lines += [
            "",
            f"Seed comparison: the original wavae default model is {SEED_TOTAL_MACS / 1e9:.1f} GMAC per second "
            f"of audio, {100 * SEED_MELGAN_SHARE:.0f} % of it in MelGAN; our `wavae` preset is "
            f"{m['total'] / 1e9:.2f} GMAC/s, {100 * m['vocoder'] / m['total']:.1f} % in MelGAN.",
        ]
    lines += [
        "",
        "## Parameters",
        "",
        "The front-end's are its fixed DFT weights (not trained). The loudness classifier and the "
        "discriminator are used in training only.",
        "",
        "| preset | frontend | encoder | decoder | vocoder | **inference total** | classifier | discriminator |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in figs.items():
        p = f["params"]
        lines.append(
            f"| {name} | {_p(p['frontend'])} | {_p(p['encoder'])} | {_p(p['decoder'])} | {_p(p['vocoder'])} | "
            f"**{_p(p['inference'])}** | {_p(p['classifier'])} | {_p(p['discriminator'])} |"
        )
    pruned = {name: f["pruned"] for name, f in figs.items() if "pruned" in f}
    if pruned:
        lines += [
            "",
            f"## After structured pruning, ratio {prune_ratio}",
            "",
            f"`wavae.quantize.prune.prune_model(model, {prune_ratio})`: {100 * prune_ratio:.0f} % of the channels "
            "of every prunable layer removed (L1 criterion; interface channels and the fixed STFT front-end "
            "untouched). MACs per second of audio in millions, parameters of the inference graph.",
            "",
            "| preset | encoder | decoder | vocoder | **total MACs** | x fewer | parameters | x fewer |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in pruned.items():
            m, base = p["macs"], figs[name]
            lines.append(
                f"| {name} | {_m(m['encoder'])} | {_m(m['decoder'])} | {_m(m['vocoder'])} | **{_m(m['total'])}** | "
                f"{base['macs']['total'] / m['total']:.2f} | {_p(p['params']['inference'])} | "
                f"{base['params']['inference'] / p['params']['inference']:.2f} |"
            )
    lines += [
        "",
        "## Algorithmic latency",
        "",
        "`model.latency`: one latent frame must be captured before its output can be computed, and a "
        "multi-band vocoder's PQMF synthesis bank delays the output by its group delay.",
        "",
        "| preset | latent frame | PQMF delay | latency (samples) | latency (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, f in figs.items():
        lines.append(
            f"| {name} | {f['frame']} | {f['delay']} | {f['latency']} | {1000 * f['latency'] / f['sample_rate']:.2f} |"
        )
    if speeds:
        lines += [
            "",
            "## Training speed on this CPU",
            "",
            f"`Trainer.vae_step` and `Trainer.vocoder_step` (the trainer's own steps, discriminator "
            f"included in the vocoder step), random audio, batch x chunk of the preset, "
            f"{threads} thread(s); one warm-up step, then timed steps (n)."
            + (f" The machine is shared: 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after; "
               "expect the figures to vary by tens of percent between runs." if load else ""),
            "",
            "| preset | batch x chunk | VAE steps/s | s per VAE step | vocoder steps/s | s per vocoder step |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, s in speeds.items():
            lines.append(
                f"| {name} | {s['batch']} x {s['chunk']} | {s['vae']:.3f} (n={s['vae_n']}) | {1 / s['vae']:.3f} | "
                f"{s['vocoder']:.3f} (n={s['vocoder_n']}) | {1 / s['vocoder']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["wavae", "lowlatency", "pi", "tiny"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--min-steps", type=int, default=3, help="timed training steps, at least (default 3)")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per stage, at least (default 2)")
    ap.add_argument("--no-train", action="store_true", help="skip the training-speed measurement")
    ap.add_argument("--prune-ratio", type=float, default=0.5, help="also count a model pruned at this ratio (0: no)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "model.md")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    figs, speeds = {}, {}
    load_before = os.getloadavg()[0]
    for preset in args.presets:
        print(f"[{preset}] counting parameters and MACs", file=sys.stderr)
        figs[preset] = model_figures(preset, args.prune_ratio)
        if not args.no_train:
            print(f"[{preset}] timing training steps", file=sys.stderr)
            speeds[preset] = training_speed(figs[preset]["cfg"], args.min_steps, args.min_seconds)
    text = render(figs, speeds, args.threads, args.prune_ratio, (load_before, os.getloadavg()[0]))
    print(text)
    write_atomic(args.out, text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
