"""Spectral losses for the vocoder (the VAE's Gaussian term lives in the trainer)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def stft_magnitude(x: Tensor, n_fft: int) -> Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.squeeze(1), n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return spec.abs().clamp(min=1e-7)


def multires_stft_loss(y: Tensor, x: Tensor, ffts: Sequence[int]) -> Tensor:
    """Spectral convergence plus log-magnitude L1, averaged over resolutions."""
    loss = y.new_zeros(())
    for n in ffts:
        my, mx = stft_magnitude(y, n), stft_magnitude(x, n)
        sc = torch.linalg.norm(mx - my) / torch.linalg.norm(mx).clamp(min=1e-7)
        loss = loss + sc + F.l1_loss(torch.log(my), torch.log(mx))
    return loss / len(ffts)


def default_ffts(n_fft: int) -> tuple[int, ...]:
    return (n_fft // 2, n_fft, n_fft * 2)
