"""The device engine against the torch reference, and its controls, guard and safety.

Tolerance: the engine runs the exported graphs in onnxruntime and the reference
is ``Wavae.stream`` in torch, both float32; they agree to ~1e-7 here.  The
tests allow 1e-5 absolute (the output is ~0.16 peak).  At 48 kHz the reference
is resampled with the engine's own polyphase filter (``resample_offline``), so
the comparison is exact up to the same float tolerance.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import synth_audio
from wavae.device.backends import make_backend
from wavae.device.bundle import load_bundle
from wavae.device.controls import Controls
from wavae.device.engine import Engine, EngineError
from wavae.device.resample import resample_offline

TOL = 1e-5


@pytest.fixture(scope="module")
def model_and_bundle(tmp_path_factory):
    """An untrained tiny model and its fp32 bundle (block 256 = 2 latent frames of 128 at 16 kHz)."""
    from wavae.quantize.export import export_bundle
    from wavae.train.config import resolve
    from wavae.train.factory import build_model

    torch.manual_seed(0)
    cfg = resolve("tiny")
    model = build_model(cfg).eval()
    path = export_bundle(model, cfg, tmp_path_factory.mktemp("eng") / "tiny", block=2 * cfg.frame)
    bundle = load_bundle(path)
    return model, bundle, make_backend(bundle, "onnxruntime", threads=1)


def run_engine(engine: Engine, x: np.ndarray, events=None) -> np.ndarray:
    """Feed ``x`` [n, ch] period by period (zero-padded); ``events`` = {period_index: {name: value}}."""
    P = engine.period
    if x.ndim == 1:
        x = x[:, None]
    calls = -(-x.shape[0] // P)
    xp = np.zeros((calls * P, x.shape[1]), np.float32)
    xp[: x.shape[0]] = x
    out = np.zeros((calls * P, engine.channels_out), np.float32)
    for k in range(calls):
        for name, v in (events or {}).get(k, {}).items():
            engine.controls.set(name, v)
        engine.process(xp[k * P : (k + 1) * P], out=out[k * P : (k + 1) * P])
    return out


def torch_stream(model, x: np.ndarray, block: int) -> np.ndarray:
    n = x.size // block * block
    with torch.no_grad():
        return model.stream(torch.from_numpy(np.ascontiguousarray(x[:n])).view(1, 1, -1), block).view(-1).numpy()


@pytest.mark.parametrize("period", [256, 100, 512])
def test_equals_torch_reference_at_model_rate(model_and_bundle, period):
    model, bundle, backend = model_and_bundle
    x = synth_audio(1.5, 16000, seed=3)
    ref = torch_stream(model, x, bundle.block)
    eng = Engine(bundle, backend, device_rate=16000, period=period)
    shift = eng.latency()["signal_delay_samples"]
    y = run_engine(eng, np.concatenate([x, np.zeros(shift + period, np.float32)]))[:, 0]
    assert np.abs(ref).max() > 0.01  # the comparison is not between two silences
    np.testing.assert_allclose(y[shift : shift + ref.size], ref, atol=TOL, rtol=0)
    assert not np.any(y[:shift])  # the prefill is silence


@pytest.mark.parametrize("rate,period", [(48000, 256), (44100, 441)])
def test_equals_torch_reference_through_resampler(model_and_bundle, rate, period):
    model, bundle, backend = model_and_bundle
    xd = resample_offline(synth_audio(1.5, 16000, seed=4), 16000, rate)
    # what the engine computes: device -> 16 kHz -> model -> device, with the same filters
    ref = resample_offline(torch_stream(model, resample_offline(xd, rate, 16000), bundle.block), 16000, rate)
    eng = Engine(bundle, backend, device_rate=rate, period=period)
    shift = eng.latency()["signal_delay_samples"]
    y = run_engine(eng, np.concatenate([xd, np.zeros(shift + 4 * period, np.float32)]))[:, 0]
    n = ref.size - 256  # the reference's tail is flushed with zeros the engine has not seen
    np.testing.assert_allclose(y[shift : shift + n], ref[:n], atol=TOL, rtol=0)


def test_latency_report_adds_up_and_prefill_is_minimal(model_and_bundle):
    _, bundle, backend = model_and_bundle
    eng = Engine(bundle, backend, device_rate=48000, period=256)
    lat = eng.latency()
    parts = lat["resampler_samples"] + lat["algorithmic_samples"] + lat["buffering_samples"]
    assert parts == pytest.approx(lat["total_samples"], abs=1e-2)
    assert lat["total_samples"] == eng.period + eng.prefill
    assert lat["algorithmic_samples"] == pytest.approx(bundle.latency_samples * 3)
    assert lat["total_ms"] == pytest.approx(1000 * lat["total_samples"] / 48000, abs=1e-2)
    x = np.zeros((256 * 200, 1), np.float32)
    run_engine(eng, x)
    assert eng.stats["fifo_underruns"] == 0
    # one sample less of prefill and the output FIFO runs dry: the buffering is exact, not padded
    eng.prefill -= 1
    eng.reset()
    run_engine(eng, x)
    assert eng.stats["fifo_underruns"] > 0


def test_process_always_returns_period_frames_and_checks_shape(model_and_bundle):
    _, bundle, backend = model_and_bundle
    eng = Engine(bundle, backend, device_rate=44100, period=97)
    for _ in range(50):
        y = eng.process(np.zeros((97, 1), np.float32))
        assert y.shape == (97, 1) and y.dtype == np.float32
    with pytest.raises(EngineError, match=r"\[97, 1\]"):
        eng.process(np.zeros((96, 1), np.float32))


def test_stereo_is_mixed_to_mono_and_duplicated(model_and_bundle):
    _, bundle, backend = model_and_bundle
    a = synth_audio(0.5, 16000, seed=5)
    b = synth_audio(0.5, 16000, seed=6)
    mono = run_engine(Engine(bundle, backend, device_rate=16000, period=256), 0.5 * (a + b))
    st = run_engine(Engine(bundle, backend, device_rate=16000, period=256, channels_in=2, channels_out=2),
                    np.stack([a, b], axis=1))
    assert st.shape[1] == 2
    np.testing.assert_array_equal(st[:, 0], st[:, 1])
    np.testing.assert_allclose(st[:, 0], mono[:, 0], atol=1e-6)


def test_reset_reproduces_the_run(model_and_bundle):
    _, bundle, backend = model_and_bundle
    eng = Engine(bundle, backend, device_rate=48000, period=256)
    eng.controls.update({"noise": 0.5, "feedback_gain": 0.5})
    x = resample_offline(synth_audio(0.5, 16000, seed=7), 16000, 48000)
    first = run_engine(eng, x)
    eng.reset()
    np.testing.assert_array_equal(run_engine(eng, x), first)


def test_bias_change_changes_output_without_step(model_and_bundle):
    _, bundle, backend = model_and_bundle
    x = synth_audio(2.0, 16000, seed=2)
    k, value, at = 3, 8.0, 40  # bias.3 jumps to 8 at period 40 (= latent frame 80)

    def run(events):
        eng = Engine(bundle, backend, device_rate=16000, period=256)
        zs, ys = [], []
        for p in range(x.size // 256):
            for name, v in events.get(p, {}).items():
                eng.controls.set(name, v)
            ys.append(eng.process(x[p * 256 : (p + 1) * 256, None])[:, 0])
            zs.append(eng.decoder_input()[0].copy())
        return np.concatenate(ys), np.concatenate(zs, axis=1), eng

    y0, z0, _ = run({})
    y1, z1, eng = run({at: {f"bias.{k}": value}})
    assert np.abs(y1 - y0).max() > 1e-5  # the knob is heard
    # the decoder's latent follows a one-pole ramp, one step per latent frame, never a jump
    a = np.exp(-(bundle.frame / bundle.sample_rate) / eng.controls.snapshot.smoothing)
    traj = (z1 - z0)[k, 2 * at :]
    expect = value * (1 - a ** np.arange(1, traj.size + 1))
    np.testing.assert_allclose(traj, expect, atol=1e-4)
    assert np.abs(np.diff(np.concatenate([[0.0], traj]))).max() <= (1 - a) * value + 1e-4
    np.testing.assert_allclose(np.delete(z1 - z0, k, axis=0), 0.0, atol=1e-6)  # only dimension k moves
    # and the audio has no step: around the change it moves no faster than it does on its own
    c = at * 256
    jump_near = np.abs(np.diff(y1[c - 256 : c + 4096])).max()
    jump_alone = max(np.abs(np.diff(y1[: c - 256])).max(), np.abs(np.diff(y1[c + 4096 :])).max())
    assert jump_near <= 1.1 * jump_alone


def test_freeze_holds_the_latent(model_and_bundle):
    _, bundle, backend = model_and_bundle
    a = synth_audio(3.0, 16000, seed=8)
    b = a.copy()
    change = 100 * 256  # after the freeze (period 40) has fully faded in, the inputs part ways
    b[change:] = synth_audio(3.0, 16000, seed=9)[change:]
    ev = {40: {"freeze": True}}
    ya = run_engine(Engine(bundle, backend, device_rate=16000, period=256), a, ev)
    yb = run_engine(Engine(bundle, backend, device_rate=16000, period=256), b, ev)
    np.testing.assert_array_equal(ya, yb)  # nothing of the new input gets through
    assert np.abs(ya[change:]).max() > 1e-3  # frozen is not silent
    free_a = run_engine(Engine(bundle, backend, device_rate=16000, period=256), a)
    free_b = run_engine(Engine(bundle, backend, device_rate=16000, period=256), b)
    # without freeze the new input is heard (an untrained decoder hears it faintly, hence 1e-6)
    assert np.abs(free_a[change:] - free_b[change:]).max() > 1e-6


def test_generative_mode_runs_without_input(model_and_bundle):
    _, bundle, backend = model_and_bundle
    ctl = {0: {"generative": True, "noise": 1.0, "bias.0": 2.0, "loudness": 0.7}}
    silent = np.zeros(16000, np.float32)
    noise = 0.3 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    eng = Engine(bundle, backend, device_rate=48000, period=256)
    y = run_engine(eng, np.zeros(48000, np.float32), ctl)
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    assert eng.stats["generative_blocks"] == eng.stats["blocks"]  # the encoder never ran
    y1 = run_engine(Engine(bundle, backend, device_rate=16000, period=256), silent, ctl)
    y2 = run_engine(Engine(bundle, backend, device_rate=16000, period=256), noise, ctl)
    np.testing.assert_array_equal(y1, y2)  # the input is ignored


def test_loudness_manual_and_noise_change_output(model_and_bundle):
    _, bundle, backend = model_and_bundle
    x = synth_audio(1.0, 16000, seed=10)
    base = run_engine(Engine(bundle, backend, device_rate=16000, period=256), x)
    for ctl in ({"loudness_source": "manual", "loudness": 1.0}, {"noise": 2.0}, {"scale": 0.0}):
        y = run_engine(Engine(bundle, backend, device_rate=16000, period=256), x, {0: ctl})
        assert np.abs(y - base).max() > 1e-5, ctl


def test_nan_guard_mutes_resets_and_logs_once(model_and_bundle, caplog):
    _, bundle, backend = model_and_bundle
    x = synth_audio(2.0, 16000, seed=11)
    P = 256
    xn = x.copy()
    xn[10 * P + 17] = np.nan
    xn[20 * P + 3] = np.inf
    eng = Engine(bundle, backend, device_rate=16000, period=P)  # 1 period = 1 block, no FIFO delay
    with caplog.at_level(logging.WARNING, logger="wavae.device.engine"):
        y = run_engine(eng, xn)[:, 0]
    assert eng.stats["nan_resets"] == 2
    assert len([r for r in caplog.records if "NaN" in r.getMessage()]) == 1  # logged once
    assert not np.any(y[10 * P : 11 * P]) and not np.any(y[20 * P : 21 * P])  # those blocks are muted
    assert np.isfinite(y).all()
    assert np.abs(y[11 * P : 20 * P]).max() > 1e-3  # and the next ones play
    # after the guard the model runs from zero state: same as a fresh engine fed silence, then the input
    fresh = run_engine(Engine(bundle, backend, device_rate=16000, period=P),
                       np.concatenate([np.zeros(P, np.float32), x[11 * P : 20 * P]]))[:, 0]
    np.testing.assert_array_equal(y[11 * P : 20 * P], fresh[P:])


def test_feedback_at_maximum_gain_stays_bounded(model_and_bundle):
    _, bundle, backend = model_and_bundle
    x = 0.5 * np.random.default_rng(1).standard_normal(48000 * 3).astype(np.float32)
    eng = Engine(bundle, backend, device_rate=48000, period=256)
    ctl = {0: {"feedback_gain": 2.0, "feedback_q": 0.7, "feedback_freq": 2000.0, "output_gain": 4.0}}
    y = run_engine(eng, x, ctl)
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0  # the output soft limiter's ceiling
    assert np.abs(eng._fb_buf).max() < 0.5  # the feedback limiter's ceiling
    assert np.abs(eng._fb_buf).max() > 0.05  # and the loop is really feeding back, hard


def test_controls_of_another_size_are_refused(model_and_bundle):
    _, bundle, backend = model_and_bundle
    with pytest.raises(EngineError, match="bias dimensions"):
        Engine(bundle, backend, device_rate=48000, period=256, controls=Controls(bundle.latent_dim + 1))
