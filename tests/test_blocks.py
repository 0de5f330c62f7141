"""One block check (wavae.blocks.check_block) for every place a block is given:
the same bad block gets the same error type and message from the export, the
torch streaming reference and the device engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wavae.blocks import MAX_BLOCK_SECONDS, BlockSizeError, check_block, default_block, max_block
from wavae.device.bundle import load_bundle
from wavae.device.engine import check_servable
from wavae.errors import WavaeError
from wavae.quantize.export import export_bundle
from wavae.train.config import resolve
from wavae.train.factory import build_model


def test_default_block_is_about_21_ms_in_whole_frames():
    assert default_block(512, 24000) == 512
    assert default_block(128, 16000) == 384  # 341 samples rounded up to whole frames
    assert resolve("tiny").default_block == default_block(resolve("tiny").frame, 16000)


@pytest.mark.parametrize("block", [0, -128, 100, 129, 128.0, True])
def test_bad_blocks_are_one_error_type_naming_the_frame(block):
    with pytest.raises(BlockSizeError, match=r"multiple of the latent frame \(128 samples at 16000 Hz\)") as e:
        check_block(block, 128, 16000)
    assert isinstance(e.value, WavaeError)
    assert "--block 384" in str(e.value)


def test_live_limit_is_the_engines_and_the_reference_streams_past_it():
    limit = max_block(128, 16000)
    assert limit == 16000 == MAX_BLOCK_SECONDS * 16000  # whole frames within the limit
    assert max_block(384, 16000) == 15744
    check_block(limit, 128, 16000)
    with pytest.raises(BlockSizeError, match="too long for live use"):
        check_block(limit + 128, 128, 16000)
    check_block(limit + 128, 128, 16000, live=False)


def test_same_bad_block_same_error_from_export_model_and_engine(tmp_path, tiny_bundle):
    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    bad = cfg.frame + 1
    with pytest.raises(BlockSizeError) as from_check:
        check_block(bad, cfg.frame, cfg.frontend.sample_rate)
    with pytest.raises(BlockSizeError) as from_export:
        export_bundle(model, cfg, tmp_path / "b", block=bad)
    with pytest.raises(BlockSizeError) as from_model:
        model.stream(torch.zeros(1, 1, 4 * bad), bad)
    assert str(from_export.value) == str(from_model.value) == str(from_check.value)

    b = load_bundle(tiny_bundle)
    huge = dataclasses.replace(b, block=max_block(b.frame, b.sample_rate) + b.frame)
    with pytest.raises(BlockSizeError) as from_engine:
        check_servable(huge, 48000, 256, 1, 1)
    with pytest.raises(BlockSizeError) as from_export:
        export_bundle(model, cfg, tmp_path / "c", block=huge.block)
    assert str(from_engine.value) == str(from_export.value) and "too long for live use" in str(from_export.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written
    with torch.no_grad():  # the torch reference is not bound by the live limit
        y = model.stream(torch.zeros(1, 1, 2 * huge.block), huge.block)
    assert y.shape[-1] == 2 * huge.block and np.isfinite(y.numpy()).all()
