"""A training run on disk: its resolved config and an atomically written checkpoint.

    RUN/config.json       the resolved config (written once, at the start)
    RUN/checkpoint.pt     model, discriminator, optimisers, steps, RNG states
    RUN/logs/             tensorboard events

Checkpoints hold only tensors and plain Python values, so they load with
``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from wavae.errors import WavaeError
from wavae.fileio import atomic_path, atomic_write_json

from .config import Config, ConfigError, from_dict

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
FORMAT_VERSION = 1


class RunError(WavaeError, RuntimeError):
    """A run directory or checkpoint is missing, corrupt or unfinished."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_config(run: Path, cfg: Config) -> None:
    atomic_write_json(Path(run) / CONFIG, cfg.to_dict())


def read_config(run: Path) -> Config:
    path = Path(run) / CONFIG
    if not path.is_file():
        raise RunError(f"{run} is not a training run: {CONFIG} is missing")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as e:
        raise RunError(f"{path} is not a valid config: {e}") from e


def load_checkpoint(run: Path) -> dict[str, Any]:
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint in {run}: {CHECKPOINT} is missing (has training started?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise RunError(
            f"checkpoint {path} is corrupt, truncated or not a wavae checkpoint "
            f"({type(e).__name__}); restore it from a backup or train again"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise RunError(
            f"checkpoint {path} has format version {ckpt.get('format_version') if isinstance(ckpt, dict) else '?'}; "
            f"this wavae reads version {FORMAT_VERSION}"
        )
    return ckpt


def load_run(run: Path, require_vocoder: bool = False):
    """(config, model in eval mode, checkpoint dict) of a run."""
    from .factory import build_model

    run = Path(run)
    if not run.is_dir():
        raise RunError(f"run directory {run} does not exist")
    cfg = read_config(run)
    ckpt = load_checkpoint(run)
    model = build_model(cfg)
    if "pruned_widths" in ckpt:  # a `wavae prune` run: shrink to its saved widths first
        from .widths import PruneError, apply_widths

        try:
            apply_widths(model, ckpt["pruned_widths"])
        except PruneError as e:
            raise RunError(f"pruned run {run} does not fit its config: {e}") from e
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as e:
        raise RunError(f"checkpoint in {run} does not match its config: {e}") from e
    progress = ckpt.get("progress", {})
    if require_vocoder and progress.get("vae_steps") and not progress.get("pca_done"):
        raise RunError(
            f"run {run} has no latent PCA yet (its VAE stage was interrupted); finish it with "
            f"`wavae train --resume --out {run} --data DIR`"
        )
    if require_vocoder and not progress.get("vocoder_steps"):
        raise RunError(
            f"run {run} has no trained vocoder yet; train it with "
            f"`wavae train --stage vocoder --resume --out {run} --data DIR`"
        )
    return cfg, model.eval(), ckpt
