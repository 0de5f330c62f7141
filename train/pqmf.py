"""Pseudo-QMF filter banks (as in Multi-band MelGAN and RAVE), as streaming layers.

A multi-band vocoder writes ``N`` sub-bands at ``rate / N``; a fixed synthesis
bank puts them back together.  Both banks come from one Kaiser-windowed
low-pass prototype of ``taps + 1`` coefficients, cosine-modulated to ``N``
bands (Nguyen's near-perfect-reconstruction design, the Parallel WaveGAN
recipe), so analysis followed by synthesis is a pure delay of ``taps`` samples
up to a small aliasing residue.

Causality and delay
-------------------
The published banks pad both sides of the signal (zero-phase).  Here both are
causal, so they stream with explicit state like every other layer:

* ``PQMFSynthesis`` is one causal transposed convolution (``N -> 1`` channels,
  kernel ``taps + 1``, stride ``N``): zero insertion and the synthesis filters
  in one polyphase layer.  Its output lags the zero-phase bank's by
  ``taps / 2`` audio samples: that is its ``delay``, and it is part of the
  model's algorithmic latency.
* ``PQMFAnalysis`` is one block-causal strided convolution (``1 -> N``, kernel
  ``taps + 1``, stride ``N``).  A block-causal stride-N layer already waits for
  its block (lookahead ``N - 1``), so its ``delay`` is the rest of the
  half-filter, ``taps / 2 - (N - 1)`` audio samples.  It is used only to make
  training targets: ``PQMFAnalysis.target`` removes that delay by advancing the
  signal, so that the synthesis of the target is the signal delayed by the
  synthesis' delay alone, which is what the vocoder is trained to produce.

``delay`` follows the ``lookahead`` convention of ``wavae.train.streaming``: it
is counted in samples at the layer's *input* rate (a Fraction where the input is
the slower, sub-band rate).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .streaming import CausalConv1d, CausalConvTranspose1d, State, StreamingModule


def prototype_filter(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """Kaiser-windowed sinc low-pass of ``taps + 1`` coefficients, cut-off ``cutoff * pi``."""
    n = np.arange(taps + 1) - 0.5 * taps
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.sin(np.pi * cutoff * n) / (np.pi * n)
    h[taps // 2] = cutoff
    return h * np.kaiser(taps + 1, beta)


def pqmf_filters(bands: int, taps: int, cutoff: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) filters, each ``[bands, taps + 1]``, as in Parallel WaveGAN's PQMF."""
    h = prototype_filter(taps, cutoff, beta)
    n = np.arange(taps + 1) - 0.5 * taps
    k = np.arange(bands)[:, None]
    arg = (2 * k + 1) * (np.pi / (2 * bands)) * n[None, :]
    phase = (-1.0) ** k * np.pi / 4
    return 2 * h * np.cos(arg + phase), 2 * h * np.cos(arg - phase)


def check_pqmf(bands: int, taps: int) -> None:
    if bands < 2:
        raise ValueError(f"a PQMF bank needs at least 2 bands, got {bands}")
    if taps % 2 or taps < 2 * (bands - 1):
        raise ValueError(f"PQMF taps must be even and at least 2 * (bands - 1) = {2 * (bands - 1)}, got {taps}")


class PQMFAnalysis(StreamingModule):
    """audio ``[B, 1, T]`` -> sub-bands ``[B, N, T / N]`` (fixed weights, block-causal)."""

    def __init__(self, bands: int, taps: int, cutoff: float, beta: float):
        super().__init__()
        check_pqmf(bands, taps)
        analysis, _ = pqmf_filters(bands, taps, cutoff, beta)
        self.bands, self.taps = bands, taps
        self.conv = CausalConv1d(1, bands, taps + 1, stride=bands, bias=False)
        self.conv.conv.weight.data.copy_(torch.from_numpy(analysis[:, None, :]).float())
        self.conv.conv.weight.requires_grad_(False)
        self.ratio = self.conv.ratio
        self.lookahead = self.conv.lookahead
        self.delay = Fraction(taps // 2 - (bands - 1))

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.conv.state_shapes(batch)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.conv.step(x, state)

    def target(self, x: Tensor) -> Tensor:
        """Sub-bands of ``x`` with this bank's delay removed (offline, training targets only):
        ``PQMFSynthesis(target(x))`` is ``x`` delayed by the synthesis' delay alone."""
        d = int(self.delay)
        return self.conv(F.pad(x, (0, d))[..., d:])


class PQMFSynthesis(StreamingModule):
    """sub-bands ``[B, N, T]`` -> audio ``[B, 1, T * N]``: one causal polyphase transposed conv."""

    def __init__(self, bands: int, taps: int, cutoff: float, beta: float):
        super().__init__()
        check_pqmf(bands, taps)
        _, synthesis = pqmf_filters(bands, taps, cutoff, beta)
        self.bands, self.taps = bands, taps
        # zero insertion (x N gain) then causal FIR g_k, as one transposed conv: the
        # transposed conv scatters with its kernel, so it holds g_k time-reversed
        weight = bands * synthesis[:, ::-1].copy()
        self.conv = CausalConvTranspose1d(bands, 1, taps + 1, stride=bands, bias=False)
        self.conv.conv.weight.data.copy_(torch.from_numpy(weight[:, None, :]).float())
        self.conv.conv.weight.requires_grad_(False)
        self.ratio = self.conv.ratio
        self.lookahead = 0
        self.delay = Fraction(taps // 2, bands)

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.conv.state_shapes(batch)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.conv.step(x, state)
