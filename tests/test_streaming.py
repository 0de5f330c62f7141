"""The keystone: streaming output equals offline output, layer by layer and for
the whole chain, for every preset and block sizes of 1x, 2x and 4x the frame."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wavae.train.config import PRESETS, resolve
from wavae.train.factory import build_model, build_pqmf_analysis
from wavae.train.pqmf import PQMFAnalysis, PQMFSynthesis
from wavae.train.streaming import (
    CausalConv1d,
    CausalConvTranspose1d,
    Pointwise,
    Residual,
    StreamingSequential,
    chain_lookahead,
    stream,
)

TOL = 1e-5


def _randomise_batchnorm(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _check(module, x, blocks):
    module.eval()
    with torch.no_grad():
        off = module(x)
        for b in blocks:
            st = stream(module, x, b)
            assert st.shape == off.shape
            assert (st - off).abs().max().item() < TOL, f"block {b}"


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("dilation", [1, 3])
def test_causal_conv_streams_exactly(kernel, stride, dilation):
    if (kernel - 1) * dilation < stride - 1:
        with pytest.raises(ValueError):
            CausalConv1d(3, 4, kernel, stride=stride, dilation=dilation)
        return
    torch.manual_seed(0)
    layer = CausalConv1d(3, 4, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 16 * stride)
    _check(layer, x, [stride, 2 * stride, 4 * stride, 16 * stride])
    assert layer.lookahead == stride - 1


def test_causal_conv_is_causal():
    """Changing the input after a block's end never changes that block's output."""
    torch.manual_seed(0)
    layer = CausalConv1d(1, 2, 5, stride=2).eval()
    x = torch.randn(1, 1, 32)
    y = x.clone()
    y[..., 20:] += 1.0  # change from sample 20 (start of output frame 10) onwards
    with torch.no_grad():
        a, b = layer(x), layer(y)
    assert torch.equal(a[..., :10], b[..., :10])
    assert not torch.equal(a[..., 10:], b[..., 10:])


@pytest.mark.parametrize("stride,kernel", [(2, 2), (2, 4), (4, 8), (8, 16), (3, 7)])
def test_transposed_conv_streams_exactly(stride, kernel):
    torch.manual_seed(0)
    layer = CausalConvTranspose1d(3, 2, kernel, stride=stride)
    x = torch.randn(2, 3, 12)
    _check(layer, x, [1, 2, 3, 4, 12])
    assert layer.lookahead == 0


def test_residual_and_sequential_stream_exactly():
    torch.manual_seed(0)
    body = StreamingSequential(
        Pointwise(nn.LeakyReLU(0.2)), CausalConv1d(4, 4, 3, dilation=9), Pointwise(nn.Tanh())
    )
    chain = StreamingSequential(
        CausalConv1d(1, 4, 5, stride=2),
        Residual(body, CausalConv1d(4, 4, 1)),
        CausalConvTranspose1d(4, 1, 4, stride=2),
    )
    x = torch.randn(1, 1, 64)
    _check(chain, x, [2, 4, 8, 64])
    assert chain.ratio == 1
    assert chain_lookahead(list(chain.layers)) == 1


@pytest.mark.parametrize("bands,taps", [(2, 14), (4, 30), (4, 62), (3, 48)])
def test_pqmf_banks_stream_exactly(bands, taps):
    torch.manual_seed(0)
    analysis = PQMFAnalysis(bands, taps, 0.142, 9.0)
    synthesis = PQMFSynthesis(bands, taps, 0.142, 9.0)
    x = torch.randn(2, 1, 24 * bands)
    _check(analysis, x, [bands, 2 * bands, 3 * bands, 24 * bands])
    _check(synthesis, torch.randn(2, bands, 24), [1, 2, 3, 24])
    assert analysis.lookahead == bands - 1 and synthesis.lookahead == 0
    assert analysis.delay == taps // 2 - (bands - 1)
    assert synthesis.delay * bands == taps // 2  # in sub-band samples: taps / 2 audio samples


def test_pqmf_reconstructs_the_input_delayed_by_its_reported_delay():
    """Multi-band MelGAN's bank (4 bands, 62 taps): the synthesis of the analysis target
    is the input delayed by exactly the synthesis' reported delay, to better than 60 dB."""
    torch.manual_seed(0)
    analysis, synthesis = PQMFAnalysis(4, 62, 0.142, 9.0), PQMFSynthesis(4, 62, 0.142, 9.0)
    x = torch.randn(1, 1, 4800)
    d = int(synthesis.delay * 4)
    with torch.no_grad():
        y = synthesis(analysis.target(x))
        # the full causal chain lags by both banks' delays and the analysis' block wait
        chain = synthesis(analysis(x))
    ref = torch.nn.functional.pad(x, (d, 0))[..., : x.shape[-1]]
    inner = slice(200, -200)
    snr = 10 * torch.log10(ref[..., inner].pow(2).mean() / (y - ref)[..., inner].pow(2).mean())
    assert snr > 60, snr
    total = d + int(analysis.delay)
    ref2 = torch.nn.functional.pad(x, (total, 0))[..., : x.shape[-1]]
    assert 10 * torch.log10(ref2[..., inner].pow(2).mean() / (chain - ref2)[..., inner].pow(2).mean()) > 60
    # one sample off is far worse: the delay is not approximately but exactly this
    off = torch.nn.functional.pad(x, (d + 1, 0))[..., : x.shape[-1]]
    assert 10 * torch.log10(off[..., inner].pow(2).mean() / (y - off)[..., inner].pow(2).mean()) < 10


def test_multiband_vocoder_matches_its_analysis_bank():
    cfg = resolve("pi-tiny")
    model = build_model(cfg)
    analysis = build_pqmf_analysis(cfg)
    assert model.vocoder.bands == analysis.bands == cfg.vocoder.bands == 4
    assert build_pqmf_analysis(resolve("tiny")) is None


def test_residual_refuses_misaligned_branches():
    with pytest.raises(ValueError):
        Residual(CausalConv1d(2, 2, 3, stride=2), CausalConv1d(2, 2, 1))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_part_and_full_chain_stream_exactly(preset):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = resolve(preset)
    model = build_model(cfg).eval()
    _randomise_batchnorm(model)
    frame, hop = cfg.frame, cfg.frontend.hop
    n_frames = 4
    audio = 0.3 * torch.randn(1, 1, frame * n_frames)
    blocks = [frame, 2 * frame, 4 * frame]
    # front-end, at audio rate
    _check(model.frontend, audio, blocks)
    with torch.no_grad():
        mel = model.frontend(audio)
    # encoder, at mel-frame rate
    mel_blocks = [b // hop for b in blocks]
    _check(model.encoder.net, mel, mel_blocks)
    # decoder, at latent rate
    zl = torch.randn(1, cfg.latent_dim + 1, n_frames)
    _check(model.decoder, zl, [1, 2, 4])
    # vocoder, at mel-frame rate
    _check(model.vocoder, mel, mel_blocks)
    # the whole chain, through PCA and loudness
    with torch.no_grad():
        off = model(audio)
        for b in blocks:
            st = model.stream(audio, b)
            assert (st - off).abs().max().item() < TOL, f"{preset} block {b}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_latency_is_one_latent_frame(preset):
    """One latent frame, plus the PQMF synthesis bank's group delay for a multi-band vocoder."""
    cfg = resolve(preset)
    model = build_model(cfg)
    bank_delay = cfg.vocoder.pqmf_taps // 2 if cfg.vocoder.bands > 1 else 0
    assert model.delay == bank_delay
    assert model.latency == cfg.frame + bank_delay
    assert model.frontend.min_block == cfg.frontend.hop
    if preset == "lowlatency":
        assert 1000 * model.latency / cfg.frontend.sample_rate <= 8.0
    if preset in ("pi", "pi-tiny"):
        assert 1000 * model.latency / cfg.frontend.sample_rate <= 5.4


def test_multiband_vocoder_is_causal():
    """Changing mel frame 3 of the pi layout's vocoder (PQMF bank included) changes no
    output sample before that frame's own block."""
    cfg = resolve("pi-tiny")
    model = build_model(cfg).eval()
    frames = 6
    mel = torch.zeros(1, cfg.frontend.n_mels, frames)
    with torch.no_grad():
        silent = model.vocoder(mel)
        mel[..., 3] = 1.0
        hit = model.vocoder(mel)
    changed = (hit - silent).abs().flatten() > 0
    first = int(changed.nonzero()[0])
    assert first >= 3 * cfg.frontend.hop  # causal: nothing before the frame that changed


def test_state_shapes_derive_from_config():
    cfg = resolve("tiny")
    a, b = build_model(cfg), build_model(cfg)
    assert a.encoder_state_shapes(1) == b.encoder_state_shapes(1)
    assert a.decoder_state_shapes(3)[0][0] == 3
    for shape, t in zip(a.decoder_state_shapes(1), a.init_decoder_state(1)):
        assert tuple(t.shape) == shape and not t.any()
