"""MAC and parameter counting (wavae.train.macs) against hand formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from wavae.train.config import resolve
from wavae.train.factory import build_model
from wavae.train.macs import count_macs, count_params, module_macs
from wavae.train.streaming import CausalConv1d, CausalConvTranspose1d


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 3)])
def test_conv_macs_match_hand_formula(stride, dilation):
    cin, cout, k, t = 4, 6, 5, 64
    layer = CausalConv1d(cin, cout, k, stride=stride, dilation=dilation)
    x = torch.randn(2, cin, t)
    t_out = layer(x).shape[-1]
    assert t_out == t // stride
    assert module_macs(layer, x) == 2 * t_out * cout * cin * k


def test_grouped_conv_macs_match_hand_formula():
    conv = nn.Conv1d(8, 6, 3, groups=2)
    x = torch.randn(1, 8, 20)
    assert module_macs(conv, x) == 18 * 6 * (8 // 2) * 3


def test_transposed_conv_macs_count_input_elements():
    cin, cout, k, s, t = 6, 4, 8, 4, 10
    layer = CausalConvTranspose1d(cin, cout, k, stride=s)
    x = torch.randn(1, cin, t)
    assert layer(x).shape[-1] == t * s
    assert module_macs(layer, x) == t * cin * cout * k  # in elements x out channels x kernel


def test_weight_norm_does_not_change_the_count():
    plain = CausalConv1d(5, 7, 3, dilation=3)
    normed = CausalConv1d(5, 7, 3, dilation=3)
    weight_norm(normed.conv)
    up_plain, up_normed = CausalConvTranspose1d(7, 3, 4, stride=2), CausalConvTranspose1d(7, 3, 4, stride=2)
    weight_norm(up_normed.conv)
    x, y = torch.randn(1, 5, 32), torch.randn(1, 7, 16)
    assert module_macs(normed, x) == module_macs(plain, x) > 0
    assert module_macs(up_normed, y) == module_macs(up_plain, y) > 0


def test_count_params_counts_weights_and_biases():
    assert count_params(nn.Conv1d(4, 6, 5)) == 6 * 4 * 5 + 6
    assert count_params(nn.Conv1d(4, 6, 5, bias=False)) == 6 * 4 * 5


@pytest.mark.parametrize("preset", ["tiny", "lowlatency"])
def test_macs_are_per_second_of_audio(preset):
    model = build_model(resolve(preset)).eval()
    one, two = count_macs(model, seconds=1.0), count_macs(model, seconds=2.0)
    assert one == two
    assert one["total"] == sum(v for k, v in one.items() if k != "total")
    assert all(one[k] > 0 for k in ("frontend", "encoder", "decoder", "vocoder"))


def test_frontend_macs_match_hand_formula():
    cfg = resolve("tiny")
    fe = cfg.frontend
    model = build_model(cfg).eval()
    n_bins = fe.n_fft // 2 + 1
    frames_per_second = fe.sample_rate / fe.hop
    per_frame = 2 * n_bins * fe.n_fft + fe.n_mels * n_bins  # DFT conv + mel matmul
    assert count_macs(model)["frontend"] == round(frames_per_second * per_frame)


def test_wavae_preset_matches_the_seed_figure():
    """The seed's default model: about 4.8 GMAC per second of audio, 89 % in MelGAN."""
    macs = count_macs(build_model(resolve("wavae")).eval())
    assert 4.7e9 < macs["total"] < 4.9e9
    assert 0.88 < macs["vocoder"] / macs["total"] < 0.90
