"""``wavae train``: train a run from a folder of audio.

    wavae train --preset tiny --data data/corpus --out runs/tiny [--stage all] [--steps N]
    torchrun --nproc_per_node=2 -m wavae train ...        # DDP: nccl on GPUs, gloo on CPUs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from wavae.errors import WavaeError

from .config import PRESETS, ConfigError, resolve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="config preset (default: wavae); a resumed run keeps its own")
    p.add_argument("--data", required=True, help="folder of audio (wav, flac, ogg, mp3)")
    p.add_argument("--out", required=True, help="run directory (config, checkpoint, tensorboard logs)")
    p.add_argument("--stage", default="all", choices=["vae", "vocoder", "all"])
    p.add_argument("--steps", type=int, default=None, help="steps per stage (default: preset's; 200 for tiny)")
    p.add_argument("--vae-steps", type=int, default=None,
                   help="steps of the VAE stage when they should differ from --steps (it converges sooner)")
    p.add_argument("--batch", type=int, default=None, help="override train.batch")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (JSON value), e.g. --set train.lr=3e-4")


DEFAULT_STEPS = {"tiny": 200, "lowlatency-tiny": 200, "pi-tiny": 200, "lowlatency": 200_000, "wavae": 200_000,
                 "pi": 200_000}


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr=3e-4")
        section, name = key.split(".", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def _dist_from_env():
    from .trainer import Dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def main(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from .checkpoint import CHECKPOINT, read_config
    from .data import ChunkCache
    from .trainer import Trainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    run = Path(args.out)
    if args.resume:
        cfg = read_config(run)
        if args.set or args.batch is not None:
            raise ConfigError("--resume continues a run with its saved config; drop --set/--batch")
        if args.preset is not None and args.preset != cfg.name:
            raise ConfigError(
                f"{run} was trained with the {cfg.name!r} preset and --resume keeps it; drop --preset "
                f"{args.preset}, or start a new run in another --out"
            )
    else:
        if (run / CHECKPOINT).exists():
            raise WavaeError(f"{run} already holds a run; continue it with --resume or choose another --out")
        overrides = parse_overrides(args.set)
        if args.batch is not None:
            overrides.setdefault("train", {})["batch"] = args.batch
        cfg = resolve(args.preset or "wavae", overrides)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(cfg.name, 1000)
    if steps <= 0 or (args.vae_steps is not None and args.vae_steps <= 0):
        raise ConfigError("--steps and --vae-steps must be positive")

    if args.device == "cuda" and not torch.cuda.is_available():
        raise WavaeError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu")
    d = _dist_from_env()
    device = args.device
    if d.world > 1:
        backend = "nccl" if args.device == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if args.device == "cuda":
            torch.cuda.set_device(d.local_rank)
            device = f"cuda:{d.local_rank}"

    try:
        # rank 0 decodes and caches; the others then read its cache
        if d.main:
            data = ChunkCache.build(args.data, cfg.frontend.sample_rate, cfg.train.chunk)
        d.barrier()
        if not d.main:
            data = ChunkCache.build(args.data, cfg.frontend.sample_rate, cfg.train.chunk)
        if d.main:
            print(f"data: {data.n_files} files, {data.seconds:.1f} s in {data.chunks.shape[0]} chunks"
                  f"{f', {data.n_skipped} unreadable files skipped' if data.n_skipped else ''}")
        # a progress bar only on a terminal; a log file gets the trainer's plain lines
        trainer = Trainer(cfg, run, data.chunks, device=device, dist_info=d,
                          data_dir=str(Path(args.data).resolve()), show_progress=sys.stderr.isatty())
        trainer.start(resume=args.resume)
        trainer.fit(args.stage, steps, args.vae_steps)
        if d.main:
            p = trainer.progress
            state = "interrupted, checkpoint saved" if trainer.interrupted else "done"
            print(f"{state}: {run} (vae {p['vae_steps']} steps, vocoder {p['vocoder_steps']} steps, "
                  f"latency {trainer.model.latency} samples = "
                  f"{1000 * trainer.model.latency / cfg.frontend.sample_rate:.1f} ms)")
        return 130 if trainer.interrupted else 0
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
