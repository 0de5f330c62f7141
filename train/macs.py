"""Parameter and multiply-accumulate counts, per second of audio.

MACs are measured, not derived from the config: one offline forward runs over a
whole number of latent frames with forward hooks on the convolutions, and each
hook counts what its layer actually computed:

* ``nn.Conv1d``: output elements x in_channels / groups x kernel;
* transposed convolutions: *input* elements x out_channels / groups x kernel
  (each input sample is scattered through the whole kernel; the causal wrapper
  calls ``F.conv_transpose1d`` itself, so it is the wrapper that is hooked);
* the front-end's mel filterbank matmul: frames x n_mels x n_bins.

Bias additions, batch norm, activations, the STFT magnitude and the loudness and
PCA steps are elementwise or per frame; the last two are reported under
``other`` (one MAC per audio sample for the loudness power, three d x d
rotations per latent frame for the PCA) so the total is honest, and the rest is
left out, as is usual.  Every count is linear in the analysed length, so dividing
by the duration gives an exact per-second rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .frontend import MelFrontend
from .streaming import CausalConvTranspose1d

SUBMODELS = ("frontend", "encoder", "decoder", "vocoder")


def count_params(module: nn.Module) -> int:
    """Number of scalar parameters (weight-normed convs count g and v, as stored)."""
    return sum(p.numel() for p in module.parameters())


def _conv_macs(conv: nn.Conv1d, out: Tensor) -> int:
    return out.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0]


def _transposed_macs(conv: nn.ConvTranspose1d, x: Tensor) -> int:
    return x.numel() * (conv.out_channels // conv.groups) * conv.kernel_size[0]


@contextmanager
def mac_counter(root: nn.Module) -> Iterator[dict[str, int]]:
    """Count the MACs of every convolution (and mel matmul) run inside the block.

    Yields a dict ``{qualified module name: MACs}`` that fills as ``root`` runs.
    """
    counts: dict[str, int] = defaultdict(int)
    handles = []
    wrapped = {id(m.conv) for m in root.modules() if isinstance(m, CausalConvTranspose1d)}

    def add(name: str):
        def hook(module, inputs, output):
            if isinstance(module, CausalConvTranspose1d):
                counts[name] += _transposed_macs(module.conv, inputs[0])
            elif isinstance(module, nn.ConvTranspose1d):
                counts[name] += _transposed_macs(module, inputs[0])
            elif isinstance(module, nn.Conv1d):
                counts[name] += _conv_macs(module, output)
            elif isinstance(module, MelFrontend):
                frames = output.numel() // module.n_mels
                counts[name + ".mel"] += frames * module.n_mels * module.n_bins

        return hook

    for name, module in root.named_modules():
        hooked = (
            isinstance(module, (CausalConvTranspose1d, MelFrontend, nn.Conv1d))
            or (isinstance(module, nn.ConvTranspose1d) and id(module) not in wrapped)
        )
        if hooked:
            handles.append(module.register_forward_hook(add(name)))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def module_macs(module: nn.Module, *inputs: Tensor) -> int:
    """MACs of one offline forward of ``module`` on ``inputs`` (not per second)."""
    with torch.no_grad(), mac_counter(module) as counts:
        module(*inputs)
    return sum(counts.values())


def count_macs(model, seconds: float = 1.0) -> dict[str, int]:
    """Multiply-accumulates per second of audio of a ``Wavae``, per sub-model.

    Keys: ``frontend``, ``encoder``, ``decoder``, ``vocoder``, ``other`` (loudness
    and PCA) and ``total``.  The forward runs over ``seconds`` rounded up to whole
    latent frames; the result does not depend on ``seconds``.
    """
    sr, frame = model.sample_rate, model.frame
    n = max(1, math.ceil(seconds * sr / frame)) * frame
    param = next(model.parameters())
    audio = torch.zeros(1, 1, n, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mac_counter(model) as counts:
            model(audio)
    finally:
        model.train(was_training)
    per: dict[str, float] = {k: 0.0 for k in SUBMODELS}
    per["other"] = 0.0
    for name, macs in counts.items():
        top = name.split(".", 1)[0]
        per[top if top in SUBMODELS else "other"] += macs
    d = model.latent_dim
    per["other"] += n + 3 * d * d * (n // frame)  # loudness power, PCA rotations
    scale = sr / n
    out = {k: int(round(v * scale)) for k, v in per.items()}
    out["total"] = sum(out.values())
    return out
