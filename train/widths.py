"""Channel groups and width surgery: shrink a model to given channel widths.

A *channel group* is a set of channels that must change together: the output
channels of its *producers* (convs writing them), the features of the batch
norms between, and the input channels of its *consumers* (convs reading them).
``widths_of(model)`` names every group with its width; ``apply_widths`` rebuilds
a freshly built model at the saved widths of a pruned run, so ``load_run`` can
load it.  The pruning criterion itself lives in ``wavae.quantize.prune``, which
builds on this module (train -> quantize, never the other way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavae.errors import WavaeError

from .melgan import Generator, remove_weight_norm
from .model import Wavae
from .streaming import CausalConv1d, CausalConvTranspose1d, Pointwise, Residual, StreamingSequential

Conv = CausalConv1d | CausalConvTranspose1d

class PruneError(WavaeError, ValueError):
    """A pruning request that cannot be honoured; the message says why."""


# ---------------------------------------------------------------------------
# channel groups
# ---------------------------------------------------------------------------
@dataclass
class ChannelGroup:
    name: str
    producers: list[Conv]
    consumers: list[Conv]
    norms: list[Pointwise] = field(default_factory=list)  # Pointwise(BatchNorm1d) on these channels
    # per-channel ops between a single producer and a single consumer (for bias folding)
    between: list[nn.Module] | None = None

    @property
    def size(self) -> int:
        sizes = {_out_channels(p) for p in self.producers}
        if len(sizes) != 1:
            raise PruneError(f"channel group {self.name} has producers of different widths {sorted(sizes)}")
        return sizes.pop()


def _out_channels(layer: Conv) -> int:
    return layer.conv.out_channels


def _is_conv(layer) -> bool:
    return isinstance(layer, (CausalConv1d, CausalConvTranspose1d))


def _chain_groups(prefix: str, seq: StreamingSequential) -> list[ChannelGroup]:
    """Groups between consecutive convs of a plain chain (conv, pointwise ops, conv, ...)."""
    groups: list[ChannelGroup] = []
    prev: Conv | None = None
    between: list[Pointwise] = []
    for layer in seq.layers:
        if _is_conv(layer):
            if prev is not None:
                norms = [p for p in between if isinstance(p.module, nn.BatchNorm1d)]
                groups.append(
                    ChannelGroup(f"{prefix}.{len(groups)}", [prev], [layer], norms, [p.module for p in between])
                )
            prev, between = layer, []
        elif isinstance(layer, Pointwise):
            between.append(layer)
        else:
            raise PruneError(f"{prefix}: unexpected layer {type(layer).__name__} in a conv chain")
    return groups


def _vocoder_groups(gen: Generator) -> list[ChannelGroup]:
    layers = list(gen.net.layers)
    convs = [(i, l) for i, l in enumerate(layers) if _is_conv(l)]
    stacks = [l for l in layers if isinstance(l, StreamingSequential)]
    ups = [l for l in layers if isinstance(l, CausalConvTranspose1d)]
    if not convs or convs[0][0] != 0 or not isinstance(convs[-1][1], CausalConv1d) or len(ups) != len(stacks):
        raise PruneError("the vocoder does not have the expected MelGAN layout (conv, [upsampler, stack]*, conv)")
    pre, post = convs[0][1], convs[-1][1]
    groups = [ChannelGroup("vocoder.pre", [pre], [ups[0] if ups else post])]
    for k, (up, stack) in enumerate(zip(ups, stacks)):
        nxt = ups[k + 1] if k + 1 < len(ups) else post
        shared = ChannelGroup(f"vocoder.stack{k}", [up], [])
        hidden: list[ChannelGroup] = []
        for j, block in enumerate(stack.layers):
            if not isinstance(block, Residual) or not isinstance(block.body, StreamingSequential):
                raise PruneError(f"vocoder stack {k} holds a {type(block).__name__}, not a residual block")
            body_convs = [l for l in block.body.layers if _is_conv(l)]
            if not body_convs:
                raise PruneError(f"vocoder stack {k} block {j} has no convolution in its body")
            shared.consumers.append(body_convs[0])
            shared.producers.append(body_convs[-1])
            if _is_conv(block.shortcut):
                shared.producers.append(block.shortcut)
                shared.consumers.append(block.shortcut)
            inner = _chain_groups(f"vocoder.stack{k}.block{j}", block.body)
            if len(inner) == 1:  # the usual body (conv, conv): name the group by its block
                inner[0].name = f"vocoder.stack{k}.block{j}"
            hidden.extend(inner)
        shared.consumers.append(nxt)
        groups.append(shared)
        groups.extend(hidden)
    return groups


def channel_groups(model: Wavae) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, in a fixed order."""
    groups = _chain_groups("encoder", model.encoder.net)
    groups += _chain_groups("decoder", model.decoder.net)
    groups += _vocoder_groups(model.vocoder)
    return groups


def widths_of(model: Wavae) -> dict[str, int]:
    """``{group name: channels}``: what ``apply_widths`` needs to rebuild this model's shapes."""
    return {g.name: g.size for g in channel_groups(model)}


# ---------------------------------------------------------------------------
# surgery
# ---------------------------------------------------------------------------
@torch.no_grad()
def _rebuild_conv(layer: Conv, keep_in: Tensor | None, keep_out: Tensor | None) -> None:
    old = layer.conv
    if old.groups != 1:
        raise PruneError("pruning grouped convolutions is not supported")
    w = old.weight.detach()
    keep_in = None if keep_in is None else keep_in.to(w.device)
    keep_out = None if keep_out is None else keep_out.to(w.device)
    transposed = isinstance(old, nn.ConvTranspose1d)
    if transposed:  # [in, out, k]
        w = w if keep_in is None else w[keep_in]
        w = w if keep_out is None else w[:, keep_out]
        cin, cout = w.shape[0], w.shape[1]
        new = nn.ConvTranspose1d(cin, cout, old.kernel_size[0], stride=old.stride[0], bias=old.bias is not None)
    else:  # [out, in, k]
        w = w if keep_out is None else w[keep_out]
        w = w if keep_in is None else w[:, keep_in]
        cout, cin = w.shape[0], w.shape[1]
        new = nn.Conv1d(
            cin, cout, old.kernel_size[0], stride=old.stride[0], dilation=old.dilation[0],
            bias=old.bias is not None,
        )
    new = new.to(device=w.device, dtype=w.dtype)
    new.weight.copy_(w)
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        b = old.bias.detach()
        new.bias.copy_(b if keep_out is None else b[keep_out])
    layer.conv = new


@torch.no_grad()
def _rebuild_norm(p: Pointwise, keep: Tensor) -> None:
    old: nn.BatchNorm1d = p.module
    new = nn.BatchNorm1d(len(keep), eps=old.eps, momentum=old.momentum, affine=old.affine,
                         track_running_stats=old.track_running_stats)
    ref = old.weight if old.affine else old.running_mean
    new = new.to(device=ref.device, dtype=ref.dtype)
    keep = keep.to(ref.device)
    if old.affine:
        new.weight.copy_(old.weight[keep])
        new.bias.copy_(old.bias[keep])
    if old.track_running_stats:
        new.running_mean.copy_(old.running_mean[keep])
        new.running_var.copy_(old.running_var[keep])
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    new.train(old.training)
    p.module = new


def _eval_op(op: nn.Module, x: Tensor) -> Tensor:
    if isinstance(op, nn.BatchNorm1d):  # inference statistics, whatever the module's mode
        return F.batch_norm(x, op.running_mean, op.running_var, op.weight, op.bias, False, 0.0, op.eps)
    return op(x)


@torch.no_grad()
def _dropped_shift(group: ChannelGroup, keep: Tensor) -> tuple[Conv, Tensor] | None:
    """(consumer, bias shift) folding the constant output of dropped channels (see module doc)."""
    if group.between is None or len(group.producers) != 1 or len(group.consumers) != 1:
        return None
    prod, cons = group.producers[0], group.consumers[0]
    if not isinstance(cons, CausalConv1d) or prod.conv.bias is None:
        return None
    bias = prod.conv.bias.detach()
    dropped = torch.ones(group.size, dtype=torch.bool, device=bias.device)
    dropped[keep.to(bias.device)] = False
    if not dropped.any():
        return None
    const = bias.view(1, -1, 1)
    for op in group.between:
        const = _eval_op(op, const)
    const = const.view(-1) * dropped
    return cons, torch.einsum("oik,i->o", cons.conv.weight.detach(), const)


def _shrink(model: Wavae, keeps: dict[str, Tensor], fold_dropped: bool = False) -> None:
    """Keep only ``keeps[name]`` channels of each named group, in place."""
    groups = {g.name: g for g in channel_groups(model)}
    unknown = sorted(set(keeps) - set(groups))
    if unknown:
        raise PruneError(f"unknown channel group(s) {unknown}; this model has {sorted(groups)}")
    keep_in: dict[int, Tensor] = {}
    keep_out: dict[int, Tensor] = {}
    layers: dict[int, Conv] = {}
    norms: list[tuple[Pointwise, Tensor]] = []
    shifts: list[tuple[Conv, Tensor]] = []
    for name, keep in keeps.items():
        g = groups[name]
        keep = torch.as_tensor(keep, dtype=torch.long)
        if keep.numel() == 0 or keep.min() < 0 or keep.max() >= g.size or keep.unique().numel() != keep.numel():
            raise PruneError(f"channel group {name}: keep indices must be distinct and in [0, {g.size})")
        shift = _dropped_shift(g, keep) if fold_dropped else None
        if shift is not None:
            shifts.append(shift)
        for p in g.producers:
            keep_out[id(p)], layers[id(p)] = keep, p
        for c in g.consumers:
            keep_in[id(c)], layers[id(c)] = keep, c
        norms += [(n, keep) for n in g.norms]
    with torch.no_grad():  # all shifts were computed from the unmodified weights
        for cons, shift in shifts:
            if cons.conv.bias is None:
                cons.conv.bias = nn.Parameter(shift.clone())
            else:
                cons.conv.bias.add_(shift)
    for key, layer in layers.items():
        _rebuild_conv(layer, keep_in.get(key), keep_out.get(key))
    for n, keep in norms:
        _rebuild_norm(n, keep)


def apply_widths(model: Wavae, widths: dict[str, int]) -> Wavae:
    """Shrink a freshly built model, in place, to the saved widths of a pruned run.

    Weight norm is removed first (a pruned model has none) and each group keeps
    its first ``widths[name]`` channels; the weights are meant to be overwritten by
    ``load_state_dict(ckpt["model"])`` right after.  Returns ``model``.
    """
    if not isinstance(widths, dict):
        raise PruneError("pruned widths must be a {group name: channels} table")
    remove_weight_norm(model)
    sizes = widths_of(model)
    keeps = {}
    for name, width in widths.items():
        if name not in sizes:
            raise PruneError(f"pruned widths name channel group {name!r}, which this model does not have")
        if not isinstance(width, int) or not 1 <= width <= sizes[name]:
            raise PruneError(f"pruned width of {name} is {width!r}; it must be between 1 and {sizes[name]}")
        keeps[name] = torch.arange(width)
    _shrink(model, keeps)
    return model
