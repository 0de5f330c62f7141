"""Loudness: measured per latent frame, flattened to a uniform value, and kept
out of the latent by an adversarial classifier behind gradient reversal."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .streaming import State, StreamingModule

DB_FLOOR = -100.0


class FrameLoudness(StreamingModule):
    """Log-loudness (dB RMS) of each block of ``frame`` samples: [N,1,T] -> [N,1,T/frame]."""

    def __init__(self, frame: int):
        super().__init__()
        from fractions import Fraction

        self.frame = frame
        self.ratio = Fraction(1, frame)
        self.lookahead = frame - 1

    def forward(self, x: Tensor) -> Tensor:
        power = F.avg_pool1d(x * x, self.frame, self.frame)
        return 10.0 * torch.log10(power + 10 ** (DB_FLOOR / 10))

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self.forward(x), []


def fit_gmm_1d(x: np.ndarray, k: int, iters: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a 1-D Gaussian mixture by EM. Returns (weights, means, stds)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < k:
        raise ValueError(f"need at least {k} loudness values to fit {k} components, got {x.size}")
    rng = np.random.default_rng(seed)
    qs = np.quantile(x, (np.arange(k) + 0.5) / k)
    means = qs + 1e-3 * rng.standard_normal(k)
    spread = max(float(x.std()), 1e-3)
    stds = np.full(k, spread / k + 1e-3)
    weights = np.full(k, 1.0 / k)
    for _ in range(iters):
        z = (x[:, None] - means) / stds
        logp = -0.5 * z * z - np.log(stds) - 0.5 * np.log(2 * np.pi) + np.log(weights)
        logp -= logp.max(axis=1, keepdims=True)
        resp = np.exp(logp)
        resp /= resp.sum(axis=1, keepdims=True)
        nk = resp.sum(axis=0) + 1e-9
        weights = nk / nk.sum()
        means = (resp * x[:, None]).sum(axis=0) / nk
        var = (resp * (x[:, None] - means) ** 2).sum(axis=0) / nk
        stds = np.sqrt(var + (1e-2 * spread) ** 2)
    return weights, means, stds


class LoudnessFlattener(nn.Module):
    """Maps dB loudness to [0, 1] through the CDF of a fitted Gaussian mixture,
    so the decoder's loudness channel is uniformly distributed over the data."""

    def __init__(self, n_components: int):
        super().__init__()
        self.register_buffer("weights", torch.full((n_components,), 1.0 / n_components))
        self.register_buffer("means", torch.linspace(-60.0, -10.0, n_components))
        self.register_buffer("stds", torch.full((n_components,), 10.0))

    def set_params(self, weights, means, stds) -> None:
        self.weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
        self.means.copy_(torch.as_tensor(means, dtype=torch.float32))
        self.stds.copy_(torch.as_tensor(stds, dtype=torch.float32))

    def params(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("weights", "means", "stds")}

    def forward(self, db: Tensor) -> Tensor:
        z = (db.unsqueeze(-1) - self.means) / (self.stds * math.sqrt(2.0))
        return (self.weights * 0.5 * (1.0 + torch.erf(z))).sum(-1)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return -ctx.strength * grad, None


def grad_reverse(x: Tensor, strength: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-strength`` backward."""
    return _GradReverse.apply(x, strength)


class LoudnessClassifier(nn.Module):
    """Predicts the flattened-loudness bin of each latent frame from z."""

    def __init__(self, latent_dim: int, channels: int, n_bins: int):
        super().__init__()
        self.n_bins = n_bins
        self.net = nn.Sequential(
            nn.Conv1d(latent_dim, channels, 1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, 1),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, n_bins, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    def loss(self, z: Tensor, flat_loudness: Tensor, strength: float) -> Tensor:
        """Cross-entropy of the classifier; the encoder sees its gradient reversed."""
        logits = self.forward(grad_reverse(z, strength))
        target = torch.clamp((flat_loudness.squeeze(1) * self.n_bins).long(), 0, self.n_bins - 1)
        return F.cross_entropy(logits, target)
