"""Frozen, typed configuration; presets are small overlays of one base config.

Config is parsed here, at the edge.  Model modules take plain constructor
arguments and know nothing of this file; ``wavae.train.factory`` maps one to the
other.  Every run saves its resolved config next to its checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from wavae.blocks import default_block
from wavae.errors import WavaeError


class ConfigError(WavaeError, ValueError):
    """A config key or value is wrong; the message names it."""


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 24000
    n_fft: int = 1024  # analysis window length in samples
    hop: int = 256
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    window: str = "hann"  # "hann" or "asymmetric"
    window_fall: int = 0  # asymmetric: length of the falling (most recent) part


@dataclass(frozen=True)
class VAEConfig:
    # first entry is n_mels; last is 2 * latent_dim (mean and log-variance)
    encoder_channels: tuple[int, ...] = (128, 256, 256, 512, 512, 512, 128, 32)
    # one stride per encoder layer (len(encoder_channels) - 1 of them)
    encoder_strides: tuple[int, ...] = (1, 1, 2, 1, 1, 1, 1)
    kernel: int = 5
    negative_slope: float = 0.2


@dataclass(frozen=True)
class LoudnessConfig:
    n_components: int = 4  # Gaussian mixture used to flatten the loudness distribution
    n_bins: int = 16  # classes of the adversarial loudness classifier
    classifier_channels: int = 64
    adv_weight: float = 1.0  # gradient-reversal strength after warm-up
    adv_warmup: int = 2000  # steps over which it ramps from 0


@dataclass(frozen=True)
class VocoderConfig:
    ngf: int = 32
    ratios: tuple[int, ...] = (8, 8, 2, 2)  # upsampling strides; they multiply to hop / bands
    n_residual: int = 3
    kernel: int = 7
    # Multi-band MelGAN: the generator writes `bands` sub-bands at rate / bands and a
    # causal PQMF synthesis bank (taps + 1 coefficients, Kaiser prototype with this
    # cut-off and beta) makes the waveform; its group delay, taps / 2 samples, adds
    # to the latency.  bands = 1 is plain MelGAN.
    bands: int = 1
    pqmf_taps: int = 62
    pqmf_cutoff: float = 0.142
    pqmf_beta: float = 9.0
    disc_scales: int = 3
    disc_channels: int = 16
    disc_max_channels: int = 1024
    disc_downsample: tuple[int, ...] = (4, 4, 4, 4)


@dataclass(frozen=True)
class TrainConfig:
    batch: int = 16
    chunk: int = 16384  # training excerpt length, samples
    lr: float = 1e-4
    vocoder_lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    kl_weight: float = 0.1
    kl_warmup: int = 5000
    recon_sigma: float = 1.0  # std of the Gaussian reconstruction likelihood on log-mel
    fm_weight: float = 10.0
    mel_weight: float = 45.0  # weight of the multi-resolution STFT loss
    # multi-band vocoders: the STFT loss is (full band + subband_weight * sub-bands) / (1 + subband_weight)
    subband_weight: float = 1.0
    adv_start: int = 0  # vocoder warm-up: steps on the STFT loss alone before the discriminator joins
    # learning rate per stage: lr_warmup steps of linear ramp, then "constant", or "cosine"
    # from lr down to lr * lr_floor over the next lr_decay_steps steps of that stage (then held)
    lr_schedule: str = "constant"
    lr_decay_steps: int = 0
    lr_floor: float = 0.1
    lr_warmup: int = 0
    finetune_on_vae: bool = False  # train the vocoder on the VAE's reconstructed mels
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    pca_batches: int = 32


@dataclass(frozen=True)
class Config:
    name: str = "wavae"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # derived -------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.vae.encoder_channels[-1] // 2

    @property
    def latent_stride(self) -> int:
        s = 1
        for x in self.vae.encoder_strides:
            s *= x
        return s

    @property
    def frame(self) -> int:
        """Audio samples per latent frame: the model's smallest streaming block."""
        return self.frontend.hop * self.latent_stride

    @property
    def default_block(self) -> int:
        """The export's default streaming block: about 21 ms in whole latent frames."""
        return default_block(self.frame, self.frontend.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def validate(self) -> "Config":
        fe, vae, voc, t = self.frontend, self.vae, self.vocoder, self.train
        positive = {
            "frontend.sample_rate": fe.sample_rate, "frontend.hop": fe.hop, "frontend.n_mels": fe.n_mels,
            "vae.kernel": vae.kernel, "vocoder.ngf": voc.ngf, "train.batch": t.batch, "train.chunk": t.chunk,
            "train.ckpt_every": t.ckpt_every, "train.log_every": t.log_every, "train.pca_batches": t.pca_batches,
            "train.lr": t.lr, "train.vocoder_lr": t.vocoder_lr,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        for name, values in (("vae.encoder_strides", vae.encoder_strides), ("vocoder.ratios", voc.ratios),
                             ("vae.encoder_channels", vae.encoder_channels)):
            if any(v < 1 for v in values):
                raise ConfigError(f"every entry of {name} must be at least 1, got {list(values)}")
        if fe.n_fft < fe.hop:
            raise ConfigError(f"frontend.n_fft ({fe.n_fft}) must be >= frontend.hop ({fe.hop})")
        if fe.window not in ("hann", "asymmetric"):
            raise ConfigError(f"frontend.window must be 'hann' or 'asymmetric', not {fe.window!r}")
        if fe.window == "asymmetric" and not 0 < fe.window_fall < fe.n_fft:
            raise ConfigError("frontend.window_fall must be between 1 and n_fft - 1 for an asymmetric window")
        if vae.encoder_channels[0] != fe.n_mels:
            raise ConfigError(
                f"vae.encoder_channels[0] ({vae.encoder_channels[0]}) must equal frontend.n_mels ({fe.n_mels})"
            )
        if vae.encoder_channels[-1] % 2:
            raise ConfigError("vae.encoder_channels[-1] must be even (mean and log-variance)")
        if len(vae.encoder_strides) != len(vae.encoder_channels) - 1:
            raise ConfigError(
                f"vae.encoder_strides needs {len(vae.encoder_channels) - 1} entries, one per encoder layer"
            )
        prod = 1
        for r in voc.ratios:
            prod *= r
        if voc.bands < 1:
            raise ConfigError(f"vocoder.bands must be at least 1, got {voc.bands}")
        if prod * voc.bands != fe.hop:
            raise ConfigError(
                f"vocoder.ratios multiply to {prod}, times vocoder.bands ({voc.bands}) is {prod * voc.bands}, "
                f"but frontend.hop is {fe.hop}"
            )
        if voc.bands > 1:
            if voc.pqmf_taps % 2 or voc.pqmf_taps < 2 * (voc.bands - 1):
                raise ConfigError(
                    f"vocoder.pqmf_taps must be even and at least {2 * (voc.bands - 1)} for {voc.bands} bands, "
                    f"got {voc.pqmf_taps}"
                )
            if not 0 < voc.pqmf_cutoff < 1:
                raise ConfigError(f"vocoder.pqmf_cutoff must be between 0 and 1, got {voc.pqmf_cutoff}")
        if t.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.lr_schedule must be 'constant' or 'cosine', not {t.lr_schedule!r}")
        if t.lr_schedule == "cosine" and t.lr_decay_steps <= 0:
            raise ConfigError("train.lr_schedule 'cosine' needs a positive train.lr_decay_steps")
        if not 0 < t.lr_floor <= 1:
            raise ConfigError(f"train.lr_floor must be in (0, 1], got {t.lr_floor}")
        if t.lr_warmup < 0 or t.adv_start < 0 or t.subband_weight < 0:
            raise ConfigError("train.lr_warmup, train.adv_start and train.subband_weight must not be negative")
        if self.train.chunk % self.frame:
            raise ConfigError(f"train.chunk ({self.train.chunk}) must be a multiple of the latent frame ({self.frame})")
        return self


_SECTIONS = {
    "frontend": FrontendConfig,
    "vae": VAEConfig,
    "loudness": LoudnessConfig,
    "vocoder": VocoderConfig,
    "train": TrainConfig,
}


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from a plain dict, naming any unknown or mistyped key."""
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key == "name":
            kwargs["name"] = str(value)
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"unknown config section {key!r}; expected one of {sorted(_SECTIONS)}")
        cls = _SECTIONS[key]
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a table of keys")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        sec: dict[str, Any] = {}
        for k, v in value.items():
            if k not in fields:
                raise ConfigError(f"unknown config key {key}.{k}; expected one of {sorted(fields)}")
            default = getattr(cls(), k)
            sec[k] = _coerce(f"{key}.{k}", v, default)
        kwargs[key] = cls(**sec)
    return Config(**kwargs).validate()


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        for v in value:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"every entry of {name} must be a finite number, got {list(value)}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    return value


def _merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# Presets: overlays of the base (= the seed's defaults).
PRESETS: dict[str, dict[str, Any]] = {
    # Faithful to the seed: 24 kHz, hop 256, 128 mels, one stride-2 encoder layer,
    # MelGAN ngf 32 with ratios 8.8.2.2 and 3 residual layers.
    "wavae": {"name": "wavae"},
    # Latent frame of 128 samples (5.3 ms at 24 kHz) and an asymmetric analysis
    # window whose falling edge is one hop, so the newest samples carry weight.
    "lowlatency": {
        "name": "lowlatency",
        "frontend": {"n_fft": 512, "hop": 64, "n_mels": 80, "window": "asymmetric", "window_fall": 64},
        "vae": {"encoder_channels": [80, 256, 256, 512, 512, 512, 128, 32]},
        "vocoder": {"ratios": [4, 4, 2, 2], "ngf": 32},
        "train": {"chunk": 16384},
    },
    # Tests and CI: trains in seconds on a CPU.
    "tiny": {
        "name": "tiny",
        "frontend": {"sample_rate": 16000, "n_fft": 256, "hop": 64, "n_mels": 32},
        "vae": {"encoder_channels": [32, 32, 32, 16], "encoder_strides": [1, 2, 1]},
        "loudness": {"n_components": 3, "n_bins": 8, "classifier_channels": 16, "adv_warmup": 20},
        "vocoder": {"ngf": 8, "ratios": [4, 4, 4], "n_residual": 1, "disc_scales": 2,
                    "disc_channels": 4, "disc_max_channels": 32, "disc_downsample": [4, 4]},
        "train": {"batch": 4, "chunk": 4096, "lr": 1e-3, "vocoder_lr": 3e-4, "kl_warmup": 20,
                  "ckpt_every": 50, "log_every": 5, "pca_batches": 4},
    },
}


# tiny's widths, for the "-tiny" variants of a preset: its timing, trainable in seconds on a CPU.
_TINY_WIDTHS = {
    "loudness": {"n_components": 3, "n_bins": 8, "classifier_channels": 16, "adv_warmup": 20},
    "vocoder": {"ngf": 8, "n_residual": 1, "disc_scales": 2, "disc_channels": 4, "disc_max_channels": 32,
                "disc_downsample": [4, 4]},
    "train": {"batch": 4, "lr": 1e-3, "vocoder_lr": 3e-4, "kl_warmup": 20, "ckpt_every": 50, "log_every": 5,
              "pca_batches": 4},
}

# The lowlatency preset's timing (rate, hop, window, frame, vocoder ratios) with tiny's widths:
# tests and CI of the low-latency path.
PRESETS["lowlatency-tiny"] = _merge(_merge(PRESETS["lowlatency"], _TINY_WIDTHS), {
    "name": "lowlatency-tiny",
    "vae": {"encoder_channels": [80, 32, 32, 16], "encoder_strides": [1, 2, 1]},
    "train": {"chunk": 4096},
})


# Sized for one Raspberry Pi 4 core: under 0.8 GMAC per second of audio and under
# 5.4 ms of algorithmic latency at 24 kHz.  Multi-band MelGAN (4 PQMF bands, the
# Parallel WaveGAN bank of 62 taps) makes the vocoder several times cheaper than a
# full-band one of the same widths; a 96-sample latent frame (hop 96, no encoder
# stride) plus the bank's 31-sample group delay is 127 samples.  A slim VAE at the
# frame rate.  Training: STFT-only warm-up before the discriminator joins, cosine
# learning-rate decay, a discriminator slim enough for a CPU.
PRESETS["pi"] = {
    "name": "pi",
    "frontend": {"n_fft": 512, "hop": 96, "n_mels": 80, "window": "asymmetric", "window_fall": 96},
    "vae": {"encoder_channels": [80, 128, 128, 128, 32], "encoder_strides": [1, 1, 1, 1]},
    "vocoder": {"ngf": 32, "ratios": [2, 3, 4], "bands": 4, "n_residual": 4,
                "disc_scales": 3, "disc_channels": 16, "disc_max_channels": 64, "disc_downsample": [4, 4, 4]},
    "train": {"batch": 8, "chunk": 8640, "lr": 3e-4, "vocoder_lr": 5e-4, "kl_warmup": 3000,
              "adv_start": 30000, "lr_schedule": "cosine", "lr_decay_steps": 200_000, "lr_floor": 0.1,
              "lr_warmup": 200, "ckpt_every": 500, "log_every": 50},
}

# The pi preset's timing and multi-band layout (rate, hop, frame, 4 PQMF bands) with
# tiny's widths: tests and CI of the multi-band path.
PRESETS["pi-tiny"] = _merge(_merge(PRESETS["pi"], _TINY_WIDTHS), {
    "name": "pi-tiny",
    "vae": {"encoder_channels": [80, 32, 32, 16], "encoder_strides": [1, 1, 1]},
    "train": {"chunk": 4224, "adv_start": 10, "lr_decay_steps": 200, "lr_warmup": 5},
})


def resolve(preset: str = "wavae", overrides: dict[str, Any] | None = None) -> Config:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = Config().to_dict()
    merged = _merge(base, PRESETS[preset])
    if overrides:
        merged = _merge(merged, overrides)
    return from_dict(merged)
