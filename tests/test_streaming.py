"""The keystone: streaming output equals offline output, layer by layer and for
the whole chain, for every preset and block sizes of 1x, 2x and 4x the frame."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wavae.train.config import PRESETS, resolve
from wavae.train.factory import build_model
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
    cfg = resolve(preset)
    model = build_model(cfg)
    assert model.latency == cfg.frame
    assert model.frontend.min_block == cfg.frontend.hop
    if preset == "lowlatency":
        assert 1000 * model.latency / cfg.frontend.sample_rate <= 8.0


def test_state_shapes_derive_from_config():
    cfg = resolve("tiny")
    a, b = build_model(cfg), build_model(cfg)
    assert a.encoder_state_shapes(1) == b.encoder_state_shapes(1)
    assert a.decoder_state_shapes(3)[0][0] == 3
    for shape, t in zip(a.decoder_state_shapes(1), a.init_decoder_state(1)):
        assert tuple(t.shape) == shape and not t.any()
