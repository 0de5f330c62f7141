"""``wavae prune RUN --ratio R [--steps N] [--data DIR] --out RUN2 [--force]``.

Structured channel pruning of a trained run (VAE and MelGAN), a short
distillation fine-tune from the unpruned model, and a report of parameters, MACs
per second of audio and reconstruction quality at each stage.

RUN2 is a run like any other (``config.json`` + ``checkpoint.pt``, the source's
config unchanged) whose checkpoint also holds ``pruned_widths``, the channel
count of each pruned group; ``load_run`` rebuilds the smaller model from it, so
``wavae reconstruct RUN2`` and ``wavae export RUN2`` work.  The optimiser states
of the model (``opt_vae``, ``opt_g``) are dropped: they no longer fit its shapes.
The report is also written to ``RUN2/prune.json``.  RUN2 is written into a
temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_json, replace_dir

PRUNE_REPORT = "prune.json"
DROPPED_KEYS = ("opt_vae", "opt_g")  # optimiser states over the model's (now resized) parameters


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="trained run directory (both stages trained)")
    p.add_argument("--ratio", type=float, required=True,
                   help="fraction of the channels of each prunable layer to remove, in [0, 1) (e.g. 0.5)")
    p.add_argument("--out", required=True, help="directory of the pruned run to write")
    p.add_argument("--steps", type=int, default=200, help="distillation fine-tune steps (0: none; default 200)")
    p.add_argument("--data", default=None,
                   help="folder of training audio (default: the data folder recorded in the run)")
    p.add_argument("--batch", type=int, default=None, help="fine-tune batch (default: the run's train.batch)")
    p.add_argument("--lr", type=float, default=None,
                   help="fine-tune learning rate (default: the run's train.vocoder_lr)")
    p.add_argument("--eval-chunks", type=int, default=8,
                   help="held-out chunks the quality is measured on (default 8)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="torch device for the fine-tune")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def split_chunks(n: int, n_eval: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, eval indices): ``n_eval`` evenly spaced chunks held out.

    Chunks overlap by half, so each held-out chunk's neighbours are left out of
    training too.  With too few chunks to spare, training uses all of them.
    """
    n_eval = max(1, min(n_eval, n))
    eval_idx = np.unique(np.linspace(0, n - 1, n_eval).round().astype(int))
    banned = np.zeros(n, dtype=bool)
    for i in eval_idx:
        banned[max(0, i - 1) : i + 2] = True
    train_idx = np.flatnonzero(~banned)
    if train_idx.size == 0:
        train_idx = np.arange(n)
    return train_idx, eval_idx


class IndexedRows:
    """Rows ``idx`` of a (memory-mapped) [N, T] array, read only when indexed."""

    def __init__(self, array: np.ndarray, idx: np.ndarray):
        self.array, self.idx = array, np.asarray(idx)
        self.shape = (len(self.idx), array.shape[1])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i):
        return self.array[self.idx[i]]


def write_pruned_run(out: Path, cfg, ckpt: dict, model, report: dict, source: Path, force: bool) -> None:
    from wavae.train.checkpoint import CHECKPOINT, atomic_torch_save, write_config

    from .prune import widths_of

    new = {k: v for k, v in ckpt.items() if k not in DROPPED_KEYS}
    new["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    new["pruned_widths"] = widths_of(model)
    new["pruned"] = {"source": str(source), "ratio": report["ratio"], "steps": report["steps"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        write_config(tmp, cfg)
        atomic_torch_save(new, tmp / CHECKPOINT)
        atomic_write_json(tmp / PRUNE_REPORT, report)
        os.chmod(tmp, 0o755)
        if out.exists() and not force:  # appeared while we worked
            raise WavaeError(f"{out} already exists; pass --force to replace it")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(args: argparse.Namespace) -> int:
    import torch

    from wavae.train.checkpoint import load_run
    from wavae.train.data import ChunkCache

    from .prune import PruneError, format_report, prune_and_finetune

    run, out = Path(args.run), Path(args.out)
    if not 0.0 <= args.ratio < 1.0:
        raise PruneError(f"--ratio must be in [0, 1), got {args.ratio}")
    if args.steps < 0:
        raise PruneError(f"--steps must be 0 or more, got {args.steps}")
    for name in ("batch", "lr", "eval_chunks"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise PruneError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise PruneError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu")
    if out.exists() and not args.force:
        raise WavaeError(f"{out} already exists; pass --force to replace it, or choose another --out")
    if out.exists() and not ((out / "config.json").is_file() or (out / "checkpoint.pt").is_file()):
        raise WavaeError(f"{out} exists and is not a training run; refusing to replace it, even with --force")
    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise WavaeError("--out must not be the source run or a folder holding it; the source is never overwritten")

    cfg, model, ckpt = load_run(run, require_vocoder=True)
    data = args.data or ckpt.get("data_dir")
    if not data:
        raise PruneError(
            f"run {run} does not record its data folder; pass --data DIR (the audio it was trained on)"
        )
    cache = ChunkCache.build(data, cfg.frontend.sample_rate, cfg.train.chunk)
    train_idx, eval_idx = split_chunks(len(cache.chunks), args.eval_chunks)
    eval_chunks = torch.from_numpy(np.array(cache.chunks[eval_idx], dtype=np.float32))
    train_chunks = IndexedRows(cache.chunks, train_idx)
    print(f"data: {len(cache.chunks)} chunks of {cfg.train.chunk} samples from {data}; "
          f"{len(eval_idx)} held out for the quality figures")

    model = model.to(args.device)
    pruned, report = prune_and_finetune(
        model, args.ratio, train_chunks, eval_chunks, steps=args.steps,
        batch=args.batch or cfg.train.batch, lr=args.lr or cfg.train.vocoder_lr,
    )
    print(format_report(report))
    write_pruned_run(out, cfg, ckpt, pruned.cpu(), report, run, args.force)
    print(f"wrote pruned run {out}")
    return 0
