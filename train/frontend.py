"""Mel front-end as a causal strided convolution, so it streams like any layer.

audio [N, 1, T] -> STFT (a fixed-weight strided conv: real and imaginary DFT
rows times the window) -> magnitude -> mel filterbank (librosa) -> log ->
normalisation -> [N, n_mels, T / hop].

Frame ``j`` is the window that *ends* at the last sample of hop block ``j``;
nothing after that block is seen, so the front-end adds ``hop - 1`` samples of
lookahead and no more.  With an asymmetric window the newest samples, which a
Hann window would nearly silence, carry most of the weight.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .streaming import CausalConv1d, State, StreamingModule

LOG_FLOOR = 1e-5


def analysis_window(n_fft: int, kind: str = "hann", fall: int = 0) -> np.ndarray:
    """A periodic Hann window, or an asymmetric one: a long rising half-Hann of
    ``n_fft - fall`` samples followed by a short falling half-Hann of ``fall``."""
    if kind == "hann":
        return np.hanning(n_fft + 1)[:n_fft].astype(np.float64)
    if kind == "asymmetric":
        rise = n_fft - fall
        up = np.sin(0.5 * np.pi * (np.arange(rise) + 0.5) / rise) ** 2
        down = np.cos(0.5 * np.pi * (np.arange(fall) + 0.5) / fall) ** 2
        return np.concatenate([up, down])
    raise ValueError(f"unknown window {kind!r}")


class MelFrontend(StreamingModule):
    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop: int,
        n_mels: int,
        fmin: float = 0.0,
        fmax: float | None = None,
        window: str = "hann",
        window_fall: int = 0,
    ):
        super().__init__()
        import librosa  # desktop-only dependency, imported where it is used

        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        win = analysis_window(n_fft, window, window_fall)
        n_bins = n_fft // 2 + 1
        k = np.arange(n_bins)[:, None]
        t = np.arange(n_fft)[None, :]
        phase = 2 * np.pi * k * t / n_fft
        # rows: [real parts ; imaginary parts], window folded in, scaled so a full-scale
        # sine gives a magnitude near 1 whatever the window length
        scale = 2.0 / win.sum()
        weight = np.concatenate([np.cos(phase) * win, -np.sin(phase) * win]) * scale
        self.stft = CausalConv1d(1, 2 * n_bins, n_fft, stride=hop, bias=False)
        self.stft.conv.weight.data.copy_(torch.from_numpy(weight[:, None, :]).float())
        self.stft.conv.weight.requires_grad_(False)
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float())
        # normalisation of the log-mel, set from data statistics (see set_stats)
        self.register_buffer("log_mean", torch.zeros(()))
        self.register_buffer("log_std", torch.ones(()))
        self.n_bins = n_bins
        self.ratio = self.stft.ratio
        self.lookahead = self.stft.lookahead

    def set_stats(self, mean: float, std: float) -> None:
        self.log_mean.fill_(float(mean))
        self.log_std.fill_(max(float(std), 1e-3))

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.stft.state_shapes(batch)

    def log_mel(self, spec: Tensor) -> Tensor:
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        mag = torch.sqrt(re * re + im * im + 1e-12)
        mel = torch.matmul(self.mel_basis, mag)
        return torch.log(torch.clamp(mel, min=LOG_FLOOR))

    def _post(self, spec: Tensor) -> Tensor:
        return (self.log_mel(spec) - self.log_mean) / self.log_std

    def forward(self, x: Tensor) -> Tensor:
        return self._post(self.stft(x))

    def raw_log_mel(self, x: Tensor) -> Tensor:
        """Un-normalised log-mel (for computing the normalisation statistics)."""
        return self.log_mel(self.stft(x))

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        spec, state = self.stft.step(x, state)
        return self._post(spec), state

