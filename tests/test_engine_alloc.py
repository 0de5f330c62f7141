"""The audio path allocates nothing: ``Engine.process`` in steady state, under tracemalloc.

After a warm-up (the first calls fill numpy's and onnxruntime's caches), the
engine runs with every control busy: the feedback loop on, noise, freeze,
manual loudness and generative crossfading (smoothing 2 s), or generative
complete (the encoder skipped).  tracemalloc sees Python objects and numpy's
array buffers.

- Nothing is kept: over 2000 calls the traced memory grows by less than 8
  bytes a call (one float kept per call would be 24 bytes a call).
- Nothing period-sized is made and freed: within any one call the traced
  memory never rises more than 4 kB above where the call began, with periods
  of 2048 stereo frames (16 kB as float32).  What does rise within a call (about
  1.5 kB here) are a few Python floats and array views; a temporary of a
  model block (256 samples) would hide below this bound.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from wavae.device.backends import make_backend
from wavae.device.bundle import load_bundle
from wavae.device.engine import Engine

pytestmark = pytest.mark.slow

GLIDING = {"feedback_gain": 0.5, "noise": 0.3, "freeze": True, "output_gain": 1.5, "loudness_source": "manual",
           "generative": True, "smoothing": 2.0, "bias.0": 1.0}
GENERATIVE = {"generative": True, "noise": 0.5, "smoothing": 0.0}
CONTROLS = {"gliding": GLIDING, "generative": GENERATIVE}


@pytest.fixture(scope="module")
def bundle_and_backend(tiny_bundle):
    b = load_bundle(tiny_bundle)
    return b, make_backend(b, "onnxruntime", threads=1)


def _warm_engine(bundle_and_backend, rate: int, period: int, channels: int, controls: dict, warmup: int):
    bundle, backend = bundle_and_backend
    eng = Engine(bundle, backend, device_rate=rate, period=period, channels_in=channels, channels_out=channels)
    eng.controls.update(controls)
    x = (0.3 * np.random.default_rng(0).standard_normal((64 * period, channels))).astype(np.float32)
    periods = [x[k * period : (k + 1) * period] for k in range(64)]  # views made before measuring
    out = np.zeros((period, channels), np.float32)
    for k in range(warmup):
        eng.process(periods[k % 64], out=out)
    return eng, periods, out


@pytest.mark.parametrize("controls", list(CONTROLS))
@pytest.mark.parametrize("rate,period", [(48000, 256), (44100, 441), (16000, 100)])
def test_process_keeps_nothing_in_steady_state(bundle_and_backend, rate, period, controls):
    eng, periods, out = _warm_engine(bundle_and_backend, rate, period, 1, CONTROLS[controls], warmup=300)
    calls = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(calls):
            eng.process(periods[k % 64], out=out)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert eng.stats["blocks"] > 500 and eng.stats["fifo_underruns"] == 0
    if controls == "generative":
        assert eng.stats["generative_blocks"] > 0  # the encoder-skipping branch ran
    else:
        assert eng._fb_live  # the feedback branch ran
    assert grown < 8 * calls, f"{calls} calls kept {grown} bytes"


@pytest.mark.parametrize("controls", list(CONTROLS))
@pytest.mark.parametrize("rate", [48000, 44100])
def test_process_makes_no_period_sized_temporaries(bundle_and_backend, rate, controls):
    period, channels = 2048, 2
    eng, periods, out = _warm_engine(bundle_and_backend, rate, period, channels, CONTROLS[controls], warmup=40)
    rises = np.zeros(200, np.int64)
    tracemalloc.start()
    try:
        for k in range(rises.size):
            level = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            eng.process(periods[k % 64], out=out)
            rises[k] = tracemalloc.get_traced_memory()[1] - level
    finally:
        tracemalloc.stop()
    worst = int(rises.max())
    assert worst < 4096, f"a call rose {worst} bytes above its start (a period is {period * channels * 4} bytes)"
