"""Make a trained model export-ready: weight norm removed, batch norm folded.

Both transformations change the parameters, never the function: ``fold_model``
returns a deep copy whose offline and streaming outputs equal the original's (up
to float rounding), and which has no parametrizations and no BatchNorm left, so
the exported graphs hold plain Conv / ConvTranspose weights and biases.

Batch norm is folded into the convolution *before* it (our blocks are
conv -> BatchNorm1d -> LeakyReLU).  Per output channel ``c``::

    s_c = gamma_c / sqrt(var_c + eps)
    W'[c] = s_c * W[c]            (Conv1d weight [out, in/groups, k])
    W'[:, c] = s_c * W[:, c]      (ConvTranspose1d weight [in, out/groups, k])
    b'_c = s_c * (b_c - mean_c) + beta_c

For the streaming transposed conv the carried overlap is the pre-bias output, so
it is scaled by ``s`` too and the streamed output is unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from wavae.train.melgan import remove_weight_norm
from wavae.train.streaming import CausalConv1d, CausalConvTranspose1d, Pointwise, StreamingSequential


@torch.no_grad()
def fold_batchnorm_into(conv: nn.Module, bn: nn.BatchNorm1d) -> None:
    """Fold an eval-mode ``bn`` that follows ``conv`` (Conv1d or ConvTranspose1d) into it."""
    if bn.training:
        raise ValueError("batch norm can only be folded in eval mode (call model.eval())")
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.double()
    if isinstance(conv, nn.ConvTranspose1d):
        if conv.groups != 1:
            raise ValueError("folding into a grouped transposed convolution is not supported")
        w = w * scale.view(1, -1, 1)
    elif isinstance(conv, nn.Conv1d):
        w = w * scale.view(-1, 1, 1)
    else:
        raise TypeError(f"cannot fold batch norm into {type(conv).__name__}")
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    bias = scale * (bias - mean) + beta
    conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


def fold_batchnorms(model: nn.Module) -> int:
    """Fold each BatchNorm1d that directly follows a causal conv in a StreamingSequential,
    replacing it by Identity, in place. Returns the count. Unfoldable BatchNorms raise."""
    n = 0
    for module in model.modules():
        if not isinstance(module, StreamingSequential):
            continue
        layers = list(module.layers)
        for prev, cur in zip(layers[:-1], layers[1:]):
            if isinstance(cur, Pointwise) and isinstance(cur.module, nn.BatchNorm1d):
                if not isinstance(prev, (CausalConv1d, CausalConvTranspose1d)):
                    raise ValueError(
                        f"a BatchNorm1d follows {type(prev).__name__}, not a convolution; cannot fold it"
                    )
                fold_batchnorm_into(prev.conv, cur.module)
                cur.module = nn.Identity()
                n += 1
    left = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"{len(left)} batch norm layer(s) could not be folded")
    return n


def fold_model(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy with weight norm removed and batch norm folded."""
    folded = copy.deepcopy(model).eval()
    remove_weight_norm(folded)
    fold_batchnorms(folded)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
