"""The whole wavae model, assembled from its parts, offline and streaming.

    audio -> MelFrontend -> Encoder -> (mean, logvar) -> PCA -> z_pca
    audio -> FrameLoudness -> LoudnessFlattener -> loudness in [0, 1]
    (z_pca, loudness) -> PCA^-1 -> Decoder -> log-mel -> Generator -> audio

Everything is block-causal, so streaming and offline output are the same signal
and the algorithmic latency is one latent frame (``frame`` samples): the output
for a frame can be emitted once that frame has been captured, and not before.
A multi-band vocoder's PQMF synthesis bank adds its group delay (``delay``
samples): the output is the input's reconstruction delayed by that much, offline
and streaming alike, and the latency counts it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wavae.blocks import check_block

from .frontend import MelFrontend
from .loudness import FrameLoudness, LoudnessClassifier, LoudnessFlattener
from .melgan import Generator
from .streaming import State, chain_delay, chain_lookahead
from .vae import Decoder, Encoder


class Wavae(nn.Module):
    def __init__(
        self,
        frontend: MelFrontend,
        encoder: Encoder,
        decoder: Decoder,
        vocoder: Generator,
        flattener: LoudnessFlattener,
        classifier: LoudnessClassifier | None = None,
    ):
        super().__init__()
        self.frontend, self.encoder, self.decoder, self.vocoder = frontend, encoder, decoder, vocoder
        self.flattener = flattener
        self.classifier = classifier
        self.latent_dim = encoder.latent_dim
        self.sample_rate = frontend.sample_rate
        self.frame = int(1 / (frontend.ratio * encoder.ratio))
        self.loudness = FrameLoudness(self.frame)
        d = self.latent_dim
        self.register_buffer("pca_mean", torch.zeros(d))
        self.register_buffer("pca_rotation", torch.eye(d))
        self.register_buffer("pca_scale", torch.ones(d))

    # latency ---------------------------------------------------------------
    @property
    def lookahead(self) -> int:
        """Samples past an output sample's own position the chain must see (frame - 1)."""
        enc = chain_lookahead([self.frontend, self.encoder])
        dec = chain_lookahead([self.decoder, self.vocoder])  # zero: upsamplers look back only
        return enc + dec

    @property
    def delay(self) -> int:
        """Samples by which the output signal lags the input (the vocoder's filter-bank delay)."""
        d = chain_delay([self.decoder, self.vocoder]) * self.frame  # latent frames -> samples
        if d.denominator != 1:
            raise ValueError(f"model delay {d} is not a whole number of samples")
        return int(d)

    @property
    def latency(self) -> int:
        """Algorithmic latency in samples: one whole latent frame must be in before it comes
        out, and the output lags its input by ``delay`` more."""
        return self.lookahead + 1 + self.delay

    # PCA -------------------------------------------------------------------
    def set_pca(self, mean: Tensor, rotation: Tensor, scale: Tensor) -> None:
        self.pca_mean.copy_(mean)
        self.pca_rotation.copy_(rotation)
        self.pca_scale.copy_(scale)

    def to_pca(self, z: Tensor) -> Tensor:
        zc = z - self.pca_mean.view(1, -1, 1)
        return torch.einsum("dk,ndt->nkt", self.pca_rotation, zc) / self.pca_scale.view(1, -1, 1)

    def from_pca(self, zp: Tensor) -> Tensor:
        z = torch.einsum("dk,nkt->ndt", self.pca_rotation, zp * self.pca_scale.view(1, -1, 1))
        return z + self.pca_mean.view(1, -1, 1)

    def std_to_pca(self, logvar: Tensor) -> Tensor:
        """Per-dimension posterior std in PCA space (diagonal of the rotated covariance)."""
        var = torch.einsum("dk,ndt->nkt", self.pca_rotation**2, logvar.exp())
        return torch.sqrt(var) / self.pca_scale.view(1, -1, 1)

    # offline ---------------------------------------------------------------
    def measure_loudness(self, audio: Tensor) -> Tensor:
        return self.flattener(self.loudness(audio))

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """audio [N,1,T] -> (z_pca mean, z_pca std, loudness), each per latent frame."""
        mean, logvar = self.encoder(self.frontend(audio))
        return self.to_pca(mean), self.std_to_pca(logvar), self.measure_loudness(audio)

    def decode_mel(self, z: Tensor, loudness: Tensor) -> Tensor:
        """Raw (un-rotated) latent plus loudness -> normalised log-mel."""
        return self.decoder(torch.cat([z, loudness], dim=1))

    def decode(self, z_pca: Tensor, loudness: Tensor) -> Tensor:
        return self.vocoder(self.decode_mel(self.from_pca(z_pca), loudness))

    def forward(self, audio: Tensor) -> Tensor:
        """Offline reconstruction through the posterior mean."""
        z, _, loud = self.encode(audio)
        return self.decode(z, loud)

    # streaming -------------------------------------------------------------
    def encoder_state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.frontend.state_shapes(batch) + self.encoder.state_shapes(batch)

    def decoder_state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        return self.decoder.state_shapes(batch) + self.vocoder.state_shapes(batch)

    def init_encoder_state(self, batch: int = 1) -> State:
        d = self.pca_mean.device
        return [torch.zeros(s, device=d) for s in self.encoder_state_shapes(batch)]

    def init_decoder_state(self, batch: int = 1) -> State:
        d = self.pca_mean.device
        return [torch.zeros(s, device=d) for s in self.decoder_state_shapes(batch)]

    def encode_step(self, audio: Tensor, state: State) -> tuple[tuple[Tensor, Tensor, Tensor], State]:
        nf = self.frontend.n_states
        mel, s_fe = self.frontend.step(audio, state[:nf])
        (mean, logvar), s_enc = self.encoder.step(mel, state[nf:])
        out = (self.to_pca(mean), self.std_to_pca(logvar), self.measure_loudness(audio))
        return out, s_fe + s_enc

    def decode_step(self, z_pca: Tensor, loudness: Tensor, state: State) -> tuple[Tensor, State]:
        nd = self.decoder.n_states
        zl = torch.cat([self.from_pca(z_pca), loudness], dim=1)
        mel, s_dec = self.decoder.step(zl, state[:nd])
        audio, s_voc = self.vocoder.step(mel, state[nd:])
        return audio, s_dec + s_voc

    def stream(self, audio: Tensor, block: int) -> Tensor:
        """Reconstruct ``audio`` block by block from zero state (length a multiple of block)."""
        check_block(block, self.frame, self.sample_rate, live=False)
        if audio.shape[-1] % block:
            raise ValueError(f"length {audio.shape[-1]} is not a multiple of block {block}")
        es = self.init_encoder_state(audio.shape[0])
        ds = self.init_decoder_state(audio.shape[0])
        outs = []
        for start in range(0, audio.shape[-1], block):
            (z, _, loud), es = self.encode_step(audio[..., start : start + block], es)
            y, ds = self.decode_step(z, loud, ds)
            outs.append(y)
        return torch.cat(outs, dim=-1)
