"""The mel-spectrogram VAE: causal conv encoder and decoder (kernel 5, LeakyReLU,
batch normalisation), strided down in the encoder and transposed up in the
decoder.  The decoder takes z plus one loudness channel."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .streaming import (
    CausalConv1d,
    CausalConvTranspose1d,
    Pointwise,
    State,
    StreamingModule,
    StreamingSequential,
)


def _block(conv: StreamingModule, channels: int, slope: float) -> list[StreamingModule]:
    return [conv, Pointwise(nn.BatchNorm1d(channels)), Pointwise(nn.LeakyReLU(slope))]


class Encoder(StreamingModule):
    """log-mel [N, n_mels, T] -> (mean, logvar) each [N, D, T / prod(strides)]."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], kernel: int = 5, slope: float = 0.2):
        super().__init__()
        layers: list[StreamingModule] = []
        n = len(channels) - 1
        for i, (cin, cout, s) in enumerate(zip(channels[:-1], channels[1:], strides)):
            k = max(kernel, 2 * s)  # a strided conv's kernel must cover its stride
            conv = CausalConv1d(cin, cout, k, stride=s)
            layers += [conv] if i == n - 1 else _block(conv, cout, slope)
        self.net = StreamingSequential(*layers)
        self.latent_dim = channels[-1] // 2
        self.ratio, self.lookahead = self.net.ratio, self.net.lookahead

    @property
    def min_block(self) -> int:
        return self.net.min_block

    def state_shapes(self, batch: int = 1):
        return self.net.state_shapes(batch)

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = h[:, : self.latent_dim], h[:, self.latent_dim :]
        return mean, torch.clamp(logvar, -12.0, 6.0)

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        return self._split(self.net(mel))

    def step(self, mel: Tensor, state: State):
        h, state = self.net.step(mel, state)
        return self._split(h), state


class Decoder(StreamingModule):
    """[z ; loudness] [N, D + 1, T'] -> log-mel [N, n_mels, T' * prod(strides)].

    Mirrors the encoder: ``channels`` is the encoder's list, read backwards, with
    the first entry replaced by D + 1; stride-S encoder layers become
    transposed-conv upsamplers (kernel 2S) at the mirrored place.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int], kernel: int = 5, slope: float = 0.2):
        super().__init__()
        latent_dim = channels[-1] // 2
        rev = [latent_dim + 1] + list(channels[::-1][1:])
        rstrides = list(strides[::-1])
        layers: list[StreamingModule] = []
        n = len(rev) - 1
        for i, (cin, cout, s) in enumerate(zip(rev[:-1], rev[1:], rstrides)):
            if s > 1:
                conv: StreamingModule = CausalConvTranspose1d(cin, cout, 2 * s, stride=s)
            else:
                conv = CausalConv1d(cin, cout, kernel)
            layers += [conv] if i == n - 1 else _block(conv, cout, slope)
        self.net = StreamingSequential(*layers)
        self.ratio, self.lookahead = self.net.ratio, self.net.lookahead

    def state_shapes(self, batch: int = 1):
        return self.net.state_shapes(batch)

    def forward(self, zl: Tensor) -> Tensor:
        return self.net(zl)

    def step(self, zl: Tensor, state: State):
        return self.net.step(zl, state)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)), summed over latent dims, averaged over frames."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


def reparameterize(mean: Tensor, logvar: Tensor) -> Tensor:
    return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
