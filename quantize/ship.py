"""``wavae ship RUN --out models/NAME --heldout DIR --solo DIR``: a trained run made into a shipped model.

    models/NAME/
      NAME-fp32/       the fp32 bundle (`wavae export`), what `wavae run` plays on a desktop or Jetson CPU
      NAME-int8/       the int8 bundle (symmetric: the Pi's ARM CPU and TensorRT)
      run/             config.json + checkpoint.pt with the model's weights only (no optimisers, no
                       discriminator): `wavae export models/NAME/run --block N` re-exports another block
                       size, `wavae evaluate models/NAME/run` measures the torch model
      eval/fp32/       `wavae evaluate` of the fp32 bundle on held-out clips (report.md, metrics.json, PNG)
      eval/fp32-solo/  the same on monophonic strings: where the f0 target is measured
      eval/int8/       the int8 bundle, with its distance from the fp32 bundle
      MODEL_CARD.md    data, steps, time, every metric against its target, the commands that reproduce it
      card.json        the same figures, for programs

Every figure in the card is measured here, by the same functions as `wavae evaluate`;
a target that is missed is printed as missed.  The folder is written beside
``--out`` and moved into place only when complete (``wavae.fileio.replace_dir``), and
refused when it would exceed ``MAX_BYTES``.
"""

from __future__ import annotations

import argparse
import glob
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_bytes, atomic_write_json, replace_dir, temp_dir_beside

MAX_BYTES = 25 * 1024 * 1024  # issue 13: both bundles, the weights and the reports, in all
ACTIVE_GAP_S = 300.0  # log events further apart than this are a pause in training, not training time


class ShipError(WavaeError, ValueError):
    """The run cannot be shipped as asked."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="training run with a trained vocoder")
    p.add_argument("--out", type=Path, required=True, help="model folder to write, e.g. models/pi")
    p.add_argument("--heldout", type=Path, required=True,
                   help="held-out audio the run was not trained on (e.g. `wavae data --recipe varied --seed 1`)")
    p.add_argument("--solo", type=Path, default=None,
                   help="held-out monophonic strings for the f0 target (`wavae data --recipe solo --seed 1`)")
    p.add_argument("--calibration", type=Path, default=None, help="int8 calibration audio (default: the run's data)")
    p.add_argument("--block", type=int, default=None, help="samples per graph call (default: one latent frame)")
    p.add_argument("--max-files", type=int, default=None, help="held-out clips per set (default: evaluate's)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")


def training_hours(run: Path) -> float | None:
    """Hours the run spent training, from its tensorboard events: the sum of the gaps between
    consecutive events shorter than ``ACTIVE_GAP_S`` (stops and resumes are not counted)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ImportError:
        return None
    times: list[float] = []
    for path in sorted(glob.glob(str(run / "logs" / "events.out.tfevents.*"))):
        try:
            times += [e.wall_time for e in EventFileLoader(path).Load()]
        except Exception:  # a truncated event file (a power cut while training): count what was read
            continue
    times.sort()
    active = sum(b - a for a, b in zip(times, times[1:]) if b - a < ACTIVE_GAP_S)
    return active / 3600 if times else None


def slim_run(run_ckpt: dict[str, Any], cfg, out: Path) -> None:
    """``out/config.json`` and a checkpoint holding the model's weights and the steps only."""
    import torch

    from wavae.train.checkpoint import CHECKPOINT, FORMAT_VERSION, atomic_torch_save, write_config

    out.mkdir(parents=True)
    write_config(out, cfg)
    slim = {"format_version": FORMAT_VERSION, "model": {k: v.clone() for k, v in run_ckpt["model"].items()},
            "progress": dict(run_ckpt.get("progress", {}))}
    if "pruned_widths" in run_ckpt:
        slim["pruned_widths"] = run_ckpt["pruned_widths"]
    atomic_torch_save(slim, out / CHECKPOINT)
    torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)  # it must load as it will be loaded


def _minutes(files: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(p)).duration for p in files) / 60


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _row(label: str, key: str, value: float | None, digits: int) -> str:
    from .evaluate import meets, target_text

    met = meets(key, value)
    verdict = "" if met is None else ("met" if met else "**missed**")
    shown = "n/a" if value is None else f"{value:.{digits}f}"
    return f"| {label} | {shown} | {target_text(key)} | {verdict} |"


def model_card(info: dict[str, Any]) -> str:
    m, s, q = info["fp32"], info.get("solo") or {}, info["int8"]
    lines = [
        f"# Model card: `{info['name']}`",
        "",
        f"The default model of wavae-edge: what `wavae run` plays when no bundle is named. "
        f"Preset `{info['preset']}`, {info['sample_rate']} Hz, {info['latent_dim']} latent dimensions (PCA order), "
        f"algorithmic latency {info['latency_samples']} samples ({info['latency_ms']:.2f} ms), "
        f"{info['parameters']:,} parameters in the inference graphs, bundles at a block of "
        f"{info['block']} samples ({1000 * info['block'] / info['sample_rate']:.1f} ms).",
        "",
        "## Data",
        "",
        f"- Training corpus: `{info['data']}`, {info['data_files']} files, {info['data_minutes']:.1f} minutes "
        f"(`wavae data --recipe {info['recipe']}`: General MIDI instruments from FluidR3 by fluidsynth, and "
        "espeak-ng speech in several languages, voices, pitches and speeds; nothing downloaded).",
        f"- Held-out clips (not trained on): `{info['heldout']}`"
        + (f"; monophonic strings for the f0 target: `{info['solo_dir']}`." if info.get("solo_dir") else "."),
        "",
        "## Training",
        "",
        f"- VAE {info['vae_steps']:,} steps, vocoder {info['vocoder_steps']:,} steps "
        f"(multi-resolution STFT warm-up; the adversarial losses join at step {info['adv_start']:,}"
        + (", not reached" if info["vocoder_steps"] <= info["adv_start"] else "") + ").",
        f"- Training time: {info['train_hours']:.1f} h of a single CPU thread "
        "(active time from the run's logs, pauses left out)." if info["train_hours"] is not None
        else "- Training time: not recorded in the run's logs.",
        f"- Shipped {info['shipped']} on {info['machine']}.",
        "",
        "## Metrics against the targets",
        "",
        "Measured by `wavae evaluate` (definitions in `wavae/quantize/evaluate.py`) on the fp32 bundle, block by "
        "block from zero state as the device runs it. Reports with per-file rows and spectrograms: `eval/`.",
        "",
        "| metric | value | target | |",
        "|---|---:|---|---|",
        _row("log-mel L1 (dB)", "log_mel_l1_db", m["log_mel_l1_db"], 2),
        _row("f0 median error (cents)", "f0_cents", s.get("f0_cents"), 1),
        _row("RMS-envelope correlation", "rms_corr", m["rms_corr"], 3),
        _row("loudness probe accuracy", "loudness_probe_accuracy", m["loudness_probe_accuracy"], 3),
        _row("int8: log-mel L1 from the fp32 bundle (dB)", "reference_log_mel_l1_db",
             q["reference_log_mel_l1_db"], 2),
        "",
        "| also measured | fp32 | int8 |",
        "|---|---:|---|",
        f"| log-mel L1 (dB), held-out clips | {m['log_mel_l1_db']:.2f} | {q['log_mel_l1_db']:.2f} |",
        f"| multi-resolution STFT distance | {m['mrstft']:.3f} | {q['mrstft']:.3f} |",
        f"| RMS-envelope correlation | {m['rms_corr']:.3f} | {q['rms_corr']:.3f} |",
        f"| f0 median error, all held-out clips (cents) | {_fmt(m.get('f0_cents'), 1)} | {_fmt(q.get('f0_cents'), 1)} |",
        f"| voicing agreement, all held-out clips | {_fmt(m.get('voicing_agreement'), 3)} | "
        f"{_fmt(q.get('voicing_agreement'), 3)} |",
        f"| loudness sweep correlation | {_fmt(m.get('loudness_sweep_corr'), 3)} | "
        f"{_fmt(q.get('loudness_sweep_corr'), 3)} |",
        "",
        "![input and output log-mel spectrograms, fp32](eval/fp32/spectrograms.png)",
        "",
        "## Files",
        "",
        "| folder | bytes |",
        "|---|---:|",
    ]
    lines += [f"| `{k}/` | {v:,} |" for k, v in info["bytes"].items()]
    lines += [
        f"| in all | {sum(info['bytes'].values()):,} (limit {MAX_BYTES:,}) |",
        "",
        "## Reproduce",
        "",
        "```sh",
        *info["commands"],
        "```",
        "",
        "Training is seeded, but CPU thread scheduling and the stops and resumes make the weights differ "
        "slightly from run to run; the figures above should land within a few percent.",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def ship(run: Path, out: Path, heldout: Path, solo: Path | None = None, calibration: Path | None = None,
         block: int | None = None, max_files: int | None = None, force: bool = False,
         progress: Any = print) -> dict[str, Any]:
    """Export, evaluate and document ``run`` into the model folder ``out``; returns the card's figures."""
    from wavae.device.bundle import load_bundle
    from wavae.device.machine import cpu_name
    from wavae.train.checkpoint import load_run
    from wavae.train.data import find_audio

    from .cli_export import calibration_audio, calibration_folder
    from .evaluate import MAX_FILES, evaluate, gather_clips, open_target, write_report
    from .export import export_bundle

    run, out = Path(run), Path(out)
    if out.exists() and not force:
        raise ShipError(f"{out} exists; pass --force to replace it (the new one goes in only once complete)")
    for name, folder in (("--heldout", heldout), ("--solo", solo)):
        if folder is not None and not Path(folder).is_dir():
            raise ShipError(f"{name} {folder} is not a folder")
    cfg, model, ckpt = load_run(run, require_vocoder=True)
    block = block or cfg.frame
    cal = calibration_audio(calibration_folder(run, calibration, ckpt), cfg.frontend.sample_rate)
    max_files = max_files or MAX_FILES
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        steps = ckpt.get("progress", {})
        source = {"run": str(run), "vae_steps": int(steps.get("vae_steps", 0)),
                  "vocoder_steps": int(steps.get("vocoder_steps", 0))}
        for precision in ("fp32", "int8"):
            progress(f"ship: exporting the {precision} bundle (block {block})")
            export_bundle(model, cfg, tmp / f"{out.name}-{precision}", block=block, precision=precision,
                          calibration=cal if precision == "int8" else None, source=source)
        progress("ship: writing the run's weights (run/)")
        slim_run(ckpt, cfg, tmp / "run")

        sr = cfg.frontend.sample_rate
        fp32, int8 = open_target(tmp / f"{out.name}-fp32"), open_target(tmp / f"{out.name}-int8")
        clips = gather_clips(sr, heldout, max_files=max_files)
        results = {}
        plan = [("fp32", fp32, None, clips), ("int8", int8, fp32, clips)]
        if solo is not None:
            plan.insert(1, ("fp32-solo", fp32, None, gather_clips(sr, solo, max_files=max_files)))
        for name, target, reference, cl in plan:
            progress(f"ship: evaluating {name} on {len(cl)} clips")
            results[name] = evaluate(target, cl, reference)
            write_report(results[name], cl, tmp / "eval" / name)
            results[name].pop("_outputs", None)

        manifest = load_bundle(tmp / f"{out.name}-fp32").manifest
        data = Path(ckpt.get("data_dir") or "")
        data_files = find_audio(data) if data.is_dir() else []
        data_minutes = _minutes(data_files)
        recipe = "varied" if any("-varied-" in p.name for p in data_files) else "default"
        commands = [
            f"wavae data --recipe {recipe} --out data/{recipe}",
            f"wavae data --recipe {recipe} --seed 1 --minutes {math.ceil(_minutes(find_audio(heldout)))} --out data/heldout",
            "wavae data --recipe solo --seed 1 --out data/heldout-solo",
            f"wavae train --preset {cfg.name} --data data/{recipe} --out runs/{cfg.name} "
            f"--vae-steps {source['vae_steps']} --steps {source['vocoder_steps']}",
            f"wavae ship runs/{cfg.name} --out models/{out.name} --heldout data/heldout --solo data/heldout-solo",
        ]
        info: dict[str, Any] = {
            "name": out.name,
            "preset": cfg.name,
            "sample_rate": sr,
            "latent_dim": int(manifest["latent_dim"]),
            "latency_samples": int(model.latency),
            "latency_ms": 1000 * model.latency / sr,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier")),
            "block": block,
            "data": str(data) if data_files else "(not recorded)",
            "data_files": len(data_files),
            "data_minutes": data_minutes,
            "recipe": recipe,
            "heldout": str(heldout),
            "solo_dir": str(solo) if solo is not None else None,
            "vae_steps": source["vae_steps"],
            "vocoder_steps": source["vocoder_steps"],
            "adv_start": int(cfg.train.adv_start),
            "train_hours": training_hours(run),
            "shipped": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{cpu_name()} ({platform.machine()})",
            "fp32": results["fp32"]["total"],
            "solo": results["fp32-solo"]["total"] if "fp32-solo" in results else None,
            "int8": results["int8"]["total"],
            "commands": commands,
        }
        info["bytes"] = {p.name: folder_bytes(p) for p in sorted(tmp.iterdir()) if p.is_dir()}
        atomic_write_json(tmp / "card.json", info)
        atomic_write_bytes(tmp / "MODEL_CARD.md", model_card(info).encode())
        total = folder_bytes(tmp)
        if total > MAX_BYTES:
            raise ShipError(f"the model folder would hold {total:,} bytes, over the {MAX_BYTES:,} the repository allows")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-made is left beside the model folder
        raise
    return info


def main(args: argparse.Namespace) -> int:
    info = ship(args.run, args.out, args.heldout, args.solo, args.calibration, args.block, args.max_files,
                args.force)
    print((Path(args.out) / "MODEL_CARD.md").read_text().split("## Files")[0].rstrip())
    print(f"\nshipped: {args.out} ({sum(info['bytes'].values()):,} bytes)")
    return 0
