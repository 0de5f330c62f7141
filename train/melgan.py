"""MelGAN: a causal, streamable generator and a multi-scale discriminator.

Generator: weight-normalised causal convs; transposed upsamplers whose strides
multiply to the hop; dilated residual stacks (dilations 1, 3, 9, ...).  With
``bands > 1`` it is Multi-band MelGAN: the upsamplers multiply to hop / bands,
the last conv writes ``bands`` sub-bands, and a fixed PQMF synthesis bank
(``wavae.train.pqmf``) makes the waveform; the bank's group delay is the
generator's ``delay``, part of the model's latency.
Discriminator (training only): several scales of strided grouped convs on
average-pooled audio, trained with the hinge loss; the generator also gets a
feature-matching loss.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from .streaming import (
    CausalConv1d,
    CausalConvTranspose1d,
    Pointwise,
    Residual,
    State,
    StreamingModule,
    StreamingSequential,
    chain_delay,
    chain_lookahead,
)
from .pqmf import PQMFSynthesis


def _wn(layer: StreamingModule) -> StreamingModule:
    weight_norm(layer.conv)
    return layer


def remove_weight_norm(model: nn.Module) -> int:
    """Bake every parametrization (weight norm) into a plain parameter, in place.

    Returns how many were removed.  ``parametrize.remove_parametrizations`` is not
    used: it deletes the parametrized property from the module's *class*, and a
    deep copy shares that class with its original, so the original model would
    lose its ``weight``.  Here only the instance changes.
    """
    n = 0
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        values = {name: getattr(module, name).detach().clone() for name in module.parametrizations.keys()}
        module.__class__ = type(module).__bases__[0]  # the un-parametrized class, e.g. nn.Conv1d
        del module._modules["parametrizations"]
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value))
            n += 1
    return n


def _lrelu() -> Pointwise:
    return Pointwise(nn.LeakyReLU(0.2))


def residual_stack(channels: int, n_layers: int) -> StreamingSequential:
    blocks = []
    for j in range(n_layers):
        body = StreamingSequential(
            _lrelu(),
            _wn(CausalConv1d(channels, channels, 3, dilation=3**j)),
            _lrelu(),
            _wn(CausalConv1d(channels, channels, 1)),
        )
        blocks.append(Residual(body, _wn(CausalConv1d(channels, channels, 1))))
    return StreamingSequential(*blocks)


class Generator(StreamingModule):
    """normalised log-mel [N, n_mels, T] -> audio [N, 1, T * prod(ratios) * bands].

    ``net`` ends in Tanh and writes ``bands`` channels (the sub-bands, or the
    audio itself when ``bands == 1``); ``synthesis`` is the PQMF bank, or None.
    """

    def __init__(self, n_mels: int, ngf: int, ratios: Sequence[int], n_residual: int, kernel: int = 7,
                 bands: int = 1, pqmf_taps: int = 62, pqmf_cutoff: float = 0.142, pqmf_beta: float = 9.0):
        super().__init__()
        ch = ngf * 2 ** len(ratios)
        layers: list[StreamingModule] = [_wn(CausalConv1d(n_mels, ch, kernel))]
        for r in ratios:
            layers += [
                _lrelu(),
                _wn(CausalConvTranspose1d(ch, ch // 2, 2 * r, stride=r)),
                residual_stack(ch // 2, n_residual),
            ]
            ch //= 2
        layers += [_lrelu(), _wn(CausalConv1d(ch, bands, kernel)), Pointwise(nn.Tanh())]
        self.net = StreamingSequential(*layers)
        self.bands = bands
        self.synthesis = PQMFSynthesis(bands, pqmf_taps, pqmf_cutoff, pqmf_beta) if bands > 1 else None
        chain = [self.net] + ([self.synthesis] if self.synthesis is not None else [])
        self.ratio = self.net.ratio * (self.synthesis.ratio if self.synthesis is not None else 1)
        self.lookahead, self.delay = chain_lookahead(chain), chain_delay(chain)

    def state_shapes(self, batch: int = 1):
        extra = self.synthesis.state_shapes(batch) if self.synthesis is not None else []
        return self.net.state_shapes(batch) + extra

    def synthesize(self, bands: Tensor) -> Tensor:
        """``net``'s output -> audio (the PQMF synthesis, or nothing for one band)."""
        return bands if self.synthesis is None else self.synthesis(bands)

    def forward(self, mel: Tensor) -> Tensor:
        return self.synthesize(self.net(mel))

    def step(self, mel: Tensor, state: State):
        n = self.net.n_states
        y, s_net = self.net.step(mel, state[:n])
        if self.synthesis is None:
            return y, s_net
        audio, s_syn = self.synthesis.step(y, state[n:])
        return audio, s_net + s_syn


class ScaleDiscriminator(nn.Module):
    def __init__(self, channels: int, max_channels: int, downsample: Sequence[int]):
        super().__init__()
        layers = [nn.Sequential(weight_norm(nn.Conv1d(1, channels, 15, padding=7)), nn.LeakyReLU(0.2))]
        ch = channels
        for d in downsample:
            out = min(ch * d, max_channels)
            groups = max(1, ch // 4)
            layers.append(
                nn.Sequential(
                    weight_norm(nn.Conv1d(ch, out, 10 * d + 1, stride=d, padding=5 * d, groups=groups)),
                    nn.LeakyReLU(0.2),
                )
            )
            ch = out
        layers.append(nn.Sequential(weight_norm(nn.Conv1d(ch, ch, 5, padding=2)), nn.LeakyReLU(0.2)))
        layers.append(weight_norm(nn.Conv1d(ch, 1, 3, padding=1)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats  # last entry is the score map


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, scales: int, channels: int, max_channels: int, downsample: Sequence[int]):
        super().__init__()
        self.discs = nn.ModuleList(
            ScaleDiscriminator(channels, max_channels, downsample) for _ in range(scales)
        )

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        outs = []
        for i, d in enumerate(self.discs):
            if i:
                x = F.avg_pool1d(x, 4, 2, padding=1, count_include_pad=False)
            outs.append(d(x))
        return outs


def discriminator_hinge(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    loss = real[0][-1].new_zeros(())
    for r, f in zip(real, fake):
        loss = loss + F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean()
    return loss


def generator_hinge(fake: list[list[Tensor]]) -> Tensor:
    return sum(-f[-1].mean() for f in fake)


def feature_matching(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    loss = fake[0][0].new_zeros(())
    n = 0
    for r, f in zip(real, fake):
        for rf, ff in zip(r[:-1], f[:-1]):
            loss = loss + F.l1_loss(ff, rf.detach())
            n += 1
    return loss / max(n, 1)
