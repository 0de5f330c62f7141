"""The engine's DSP parts: feedback band-pass, DC blocker, limiters, resampler, FIFO."""

from __future__ import annotations

import numpy as np
import pytest

from wavae.device.dsp import (
    Biquad,
    DCBlocker,
    FeedbackShaper,
    bandpass_coefficients,
    biquad_response,
    soft_limit,
)
from wavae.device.fifo import Fifo, FifoError
from wavae.device.resample import PolyphaseResampler, resample_offline


def measured_response(process, sr: int, n: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """|H(f)| of a block processor, from its impulse response (driven in blocks of 256)."""
    x = np.zeros(n, np.float32)
    x[0] = 0.1  # small enough that no limiter is touched
    y = np.zeros(n, np.float32)
    for i in range(0, n, 256):
        process(x[i : i + 256], y[i : i + 256])
    h = np.abs(np.fft.rfft(y.astype(np.float64))) / 0.1
    return np.fft.rfftfreq(n, 1 / sr), h


def peak_and_bandwidth(freqs, mag):
    k = int(np.argmax(mag))
    half = mag[k] / np.sqrt(2)
    lo = k
    while lo > 0 and mag[lo] > half:
        lo -= 1
    hi = k
    while hi < mag.size - 1 and mag[hi] > half:
        hi += 1
    # linear interpolation of the -3 dB crossings
    f_lo = np.interp(half, [mag[lo], mag[lo + 1]], [freqs[lo], freqs[lo + 1]])
    f_hi = np.interp(half, [mag[hi], mag[hi - 1]], [freqs[hi], freqs[hi - 1]])
    return freqs[k], mag[k], f_hi - f_lo


@pytest.mark.parametrize("sr,f,q", [(16000, 1000.0, 2.0), (24000, 440.0, 8.0), (24000, 3000.0, 1.0), (16000, 250.0, 20.0)])
def test_feedback_bandpass_peaks_at_f_with_bandwidth_f_over_q(sr, f, q):
    """The whole feedback shaper (band-pass, unit gain, DC blocker, limiter) measured from its impulse response."""
    shaper = FeedbackShaper(sr, 256)
    shaper.set_filter(f, q)
    shaper.gain = 1.0  # no ramp: the response of the steady loop filter

    freqs, mag = measured_response(lambda x, y: shaper.process(x, 1.0, y), sr)
    f_peak, gain, bw = peak_and_bandwidth(freqs, mag)
    res = freqs[1]
    assert abs(f_peak - f) <= max(0.01 * f, 2 * res)
    assert gain == pytest.approx(1.0, abs=0.02)  # constant 0 dB peak gain
    assert bw == pytest.approx(f / q, rel=0.05)


def test_bandpass_analytic_response_matches_cookbook():
    c = bandpass_coefficients(1000.0, 4.0, 24000)
    w0 = 2 * np.pi * 1000 / 24000
    rbj = np.sin(w0) / (2 * 4.0)  # the cookbook's alpha: the same filter up to the bandwidth warping
    assert c[0] / (1 - c[0]) == pytest.approx(rbj, rel=0.02)
    assert abs(biquad_response(c, [1000.0], 24000)[0]) == pytest.approx(1.0, abs=1e-12)
    assert abs(biquad_response(c, [0.0], 24000)[0]) == pytest.approx(0.0, abs=1e-12)
    assert c[1] == 0.0 and c[2] == pytest.approx(-c[0])  # b = [alpha, 0, -alpha] / a0
    bq = Biquad(c, 256)
    freqs, mag = measured_response(bq.process, 24000)
    k = np.argmin(np.abs(freqs - 1500.0))
    assert mag[k] == pytest.approx(abs(biquad_response(c, [freqs[k]], 24000)[0]), rel=1e-3)


def test_feedback_loop_stays_bounded_at_maximum_gain():
    """A pathological 'model' (x20, unbounded, no limiter after it) in the loop, feedback gain at its maximum (2)."""
    sr, B = 24000, 512
    shaper = FeedbackShaper(sr, B)
    shaper.set_filter(1000.0, 50.0)  # the most resonant setting
    fb = np.zeros(B, np.float32)
    x = np.zeros(B, np.float32)
    peak_in = peak_fb = 0.0
    rng = np.random.default_rng(0)
    for i in range(2000):
        x[:] = 0.0 if i else rng.standard_normal(B).astype(np.float32)  # one burst, then silence
        x += fb  # mixed into the next input block
        if i:
            peak_in = max(peak_in, float(np.abs(x).max()))
        y = 20.0 * x  # the model amplifies without bound (the engine limits only its device-rate output)
        shaper.process(y, 2.0, fb)
        assert np.isfinite(fb).all()
        peak_fb = max(peak_fb, float(np.abs(fb).max()))
    assert peak_fb <= 0.5  # the limiter inside the loop holds whatever the gain (at its ceiling: float32 tanh = 1)
    assert peak_fb > 0.2  # and the loop really is driven hard (it rings at the limiter)
    assert peak_in <= 0.5  # after the burst the model only ever hears the bounded feedback


def test_dc_blocker_removes_dc_and_passes_audio():
    sr = 24000
    dc = DCBlocker(sr, 20.0, block=512)
    n = 94 * 512  # 2 s
    x = np.full(n, 0.5, np.float32)
    y = np.zeros(n, np.float32)
    for i in range(0, n, 512):
        dc.process(x[i : i + 512], y[i : i + 512])
    assert abs(float(y[-sr // 2 :].mean())) < 1e-4  # the step has died away
    dc.reset()
    t = np.arange(n) / sr
    s = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    for i in range(0, n, 512):
        dc.process(s[i : i + 512], y[i : i + 512])
    assert np.abs(y[-sr:]).max() == pytest.approx(1.0, abs=0.01)


def test_feedback_shaper_removes_dc():
    shaper = FeedbackShaper(24000, 512)
    shaper.set_filter(100.0, 0.5)  # a wide band reaching down towards DC
    y = np.full(512, 0.4, np.float32)
    out = np.zeros(512, np.float32)
    for _ in range(200):
        shaper.process(y, 1.0, out)
    assert abs(float(out.mean())) < 1e-3


def test_soft_limit_is_identity_below_knee_and_bounded():
    rng = np.random.default_rng(0)
    x = (0.89 * np.tanh(rng.standard_normal(4096))).astype(np.float32)
    out, work = np.zeros_like(x), np.zeros_like(x)
    np.testing.assert_array_equal(soft_limit(x, 0.9, 1.0, out, work), x)
    big = np.linspace(-100, 100, 4001, dtype=np.float32)
    y = soft_limit(big, 0.9, 1.0, np.zeros_like(big), np.zeros_like(big))
    assert np.abs(y).max() <= 1.0
    assert np.abs(soft_limit(np.float32([1.5]), 0.9, 1.0, np.zeros(1, np.float32), np.zeros(1, np.float32))) < 1.0
    assert np.all(np.diff(y) >= 0)  # monotonic
    assert np.abs(np.diff(y)).max() <= (big[1] - big[0]) * 1.0001  # slope never above 1: continuous


@pytest.mark.parametrize("a,b", [(48000, 24000), (24000, 48000), (48000, 16000), (44100, 24000), (24000, 44100)])
def test_resampler_streaming_equals_offline_and_is_clean(a, b):
    t = np.arange(a) / a
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    rs = PolyphaseResampler(a, b, 300)
    chunks = [97, 300, 1, 256, 31]
    out, i, k = [], 0, 0
    while i < x.size:
        n = chunks[k % len(chunks)]
        out.append(rs.process(x[i : i + n]).copy())
        i, k = i + n, k + 1
    y = np.concatenate(out)
    ref = resample_offline(x, a, b)
    np.testing.assert_allclose(y, ref[: y.size], atol=1e-6, rtol=0)  # chunking does not matter (BLAS rounding aside)
    tt = np.arange(y.size) / b
    err = y[300:] - 0.5 * np.sin(2 * np.pi * 1000 * tt[300:])
    assert np.abs(err).max() < 1e-4  # passband accurate, time-aligned (no delay in the signal)
    assert y.size == pytest.approx(x.size * b / a - rs.delay, abs=1.0)  # the delay is withheld, not added


def test_resampler_rejects_aliases():
    a, b = 48000, 24000
    t = np.arange(a) / a
    x = np.sin(2 * np.pi * 13000 * t).astype(np.float32)  # above the 12 kHz Nyquist of the output
    y = resample_offline(x, a, b)
    assert 20 * np.log10(np.abs(y[500:-500]).max()) < -75


def test_fifo_wraps_and_refuses_over_and_underflow():
    f = Fifo(8)
    out = np.zeros(5, np.float32)
    f.write(np.arange(6, dtype=np.float32))
    f.read_into(out)
    f.write(np.arange(6, 12, dtype=np.float32))  # wraps around
    got = np.zeros(7, np.float32)
    f.read_into(got)
    np.testing.assert_array_equal(got, [5, 6, 7, 8, 9, 10, 11])
    with pytest.raises(FifoError):
        f.read_into(np.zeros(1, np.float32))
    with pytest.raises(FifoError):
        f.write(np.zeros(9, np.float32))


def reference_biquad(coefs, x: np.ndarray, s1: float = 0.0, s2: float = 0.0):
    """The transposed direct form II recursion, one sample at a time, in float64."""
    b0, b1, b2, a1, a2 = coefs
    y = np.zeros(x.size)
    for n, xn in enumerate(x.astype(np.float64).tolist()):
        yn = b0 * xn + s1
        s1 = b1 * xn - a1 * yn + s2
        s2 = b2 * xn - a2 * yn
        y[n] = yn
    return y, s1, s2


@pytest.mark.parametrize("block", [256, 512, 300, 97])
def test_block_biquad_equals_the_per_sample_recursion(block):
    """Chunked matrix form == the sample loop, for narrow, wide and near-DC filters, across coefficient changes."""
    rng = np.random.default_rng(block)
    settings = [(16000, 1000.0, 2.0), (16000, 20.0, 50.0), (16000, 7000.0, 0.1), (48000, 1.0, 50.0),
                (24000, 3000.0, 1.0)]
    bq = Biquad(bandpass_coefficients(*settings[0][1:], settings[0][0]), block)
    assert block % bq.chunk == 0 and (bq.chunk == 1 if block == 97 else bq.chunk >= 16)
    s1 = s2 = 0.0
    for sr, f, q in settings:  # the state carries over each change of coefficients, as in the engine
        c = bandpass_coefficients(f, q, sr)
        bq.set_coefs(c)
        x = rng.standard_normal(6 * block).astype(np.float32)
        y = np.zeros(x.size, np.float32)
        for i in range(0, x.size, block):
            bq.process(x[i : i + block], y[i : i + block])
        ref, s1, s2 = reference_biquad(c, x, s1, s2)
        np.testing.assert_allclose(y, ref, rtol=0, atol=2e-7 * max(1.0, np.abs(ref).max()))  # float32 output rounding
        assert (bq.s1, bq.s2) == pytest.approx((s1, s2), rel=1e-9, abs=1e-9)


def test_feedback_shaper_switches_off_once_its_gain_is_zero_and_its_tail_has_died():
    sr, B = 16000, 256
    shaper = FeedbackShaper(sr, B)
    shaper.set_filter(1000.0, 2.0)
    y = (0.3 * np.random.default_rng(0).standard_normal(B)).astype(np.float32)
    out = np.zeros(B, np.float32)
    for _ in range(10):
        shaper.process(y, 0.5, out)
    assert shaper.active and np.abs(out).max() > 0.01
    blocks = 0
    while shaper.active:  # the input keeps coming: only the gain went to 0
        shaper.process(y, 0.0, out)
        blocks += 1
        assert blocks < 20  # the 20 Hz DC blocker's tail falls below 1e-7 in ~8 blocks of 16 ms
    assert np.abs(out).max() < 1e-6 and abs(out[-1]) <= FeedbackShaper.SILENCE  # the last block was inaudible
    shaper.process(y, 0.0, out)
    assert not shaper.active and not np.any(out)  # then zeros, exactly
    assert (shaper._bp.s1, shaper._bp.s2, shaper._dc.s1, shaper.gain) == (0.0, 0.0, 0.0, 0.0)  # and reset
    shaper.process(y, 0.5, out)  # gain up again: it runs, ramping in from 0
    assert shaper.active and np.abs(out).max() > 0.01
