"""Config -> modules.  The only place where the config system meets model code."""

from __future__ import annotations

from .config import Config
from .frontend import MelFrontend
from .loudness import LoudnessClassifier, LoudnessFlattener
from .melgan import Generator, MultiScaleDiscriminator
from .model import Wavae
from .pqmf import PQMFAnalysis
from .vae import Decoder, Encoder


def build_model(cfg: Config) -> Wavae:
    fe, vae, ld, voc = cfg.frontend, cfg.vae, cfg.loudness, cfg.vocoder
    frontend = MelFrontend(
        fe.sample_rate, fe.n_fft, fe.hop, fe.n_mels, fe.fmin, fe.fmax, fe.window, fe.window_fall
    )
    encoder = Encoder(vae.encoder_channels, vae.encoder_strides, vae.kernel, vae.negative_slope)
    decoder = Decoder(vae.encoder_channels, vae.encoder_strides, vae.kernel, vae.negative_slope)
    vocoder = Generator(fe.n_mels, voc.ngf, voc.ratios, voc.n_residual, voc.kernel,
                        voc.bands, voc.pqmf_taps, voc.pqmf_cutoff, voc.pqmf_beta)
    flattener = LoudnessFlattener(ld.n_components)
    classifier = LoudnessClassifier(cfg.latent_dim, ld.classifier_channels, ld.n_bins)
    model = Wavae(frontend, encoder, decoder, vocoder, flattener, classifier)
    assert model.frame == cfg.frame, (model.frame, cfg.frame)
    return model


def build_discriminator(cfg: Config) -> MultiScaleDiscriminator:
    voc = cfg.vocoder
    return MultiScaleDiscriminator(voc.disc_scales, voc.disc_channels, voc.disc_max_channels, voc.disc_downsample)


def build_pqmf_analysis(cfg: Config) -> PQMFAnalysis | None:
    """The analysis bank matching the vocoder's synthesis (training targets), or None for one band."""
    voc = cfg.vocoder
    if voc.bands == 1:
        return None
    return PQMFAnalysis(voc.bands, voc.pqmf_taps, voc.pqmf_cutoff, voc.pqmf_beta)
