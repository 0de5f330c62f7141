"""Small signal-processing parts of the engine, numpy only.

* ``bandpass_coefficients``: the RBJ Audio-EQ-Cookbook band-pass with constant
  0 dB peak gain (``b = [alpha, 0, -alpha] / a0``, ``a = [1 + alpha,
  -2 cos w0, 1 - alpha] / a0``): unity gain at the centre frequency f.  The
  cookbook's ``alpha = sin(w0) / (2 Q)`` gives bandwidth f/Q for the analog
  prototype, which the bilinear transform narrows (by 13 % at f = rate/8);
  ``alpha = tan(w0 / (2 Q))`` is the same filter with that warping undone: its
  digital -3 dB points lie exactly f/Q Hz apart (derivation in
  ``bandpass_coefficients``), and the two agree at low frequencies.
* ``Biquad`` (and ``DCBlocker``, a first-order one): IIR filters run a block
  at a time as a few small matrix products, with no per-sample Python loop
  (see ``Biquad``).
* ``FeedbackShaper``: the feedback path, output -> band-pass -> gain (ramped
  across the block) -> DC blocker -> soft limiter.  Its peak is bounded by the
  limiter's ceiling whatever the gain, so the loop cannot run away.  Once its
  gain is 0 and the DC blocker's tail has died away it switches itself off.
* ``soft_limit``: identity below a knee, tanh-saturating to a ceiling above
  it (continuous, with a continuous slope).  Bit-exact identity below the knee.
* ``one_pole_coefficient``: the smoothing coefficient for a time constant.

The shaper costs nothing once switched off; what it costs per block while on,
against a per-sample Python loop, is measured by ``benchmarks/bench_dsp.py``
(docs/benchmarks/dsp.md).  numpy only: scipy's ``lfilter`` would do the same
but is not a device dependency.
"""

from __future__ import annotations

import math

import numpy as np


def bandpass_coefficients(freq: float, q: float, sample_rate: float) -> tuple[float, float, float, float, float]:
    """Normalised (b0, b1, b2, a1, a2) of the RBJ constant-0-dB-peak band-pass, -3 dB bandwidth f/Q Hz.

    The cookbook filter is the bilinear transform (pre-warped at w0) of
    ``H(s) = (s/Qa) / (s^2 + s/Qa + 1)``, with ``alpha = sin(w0) / (2 Qa)``.  The
    analog -3 dB edges satisfy ``W2 - W1 = 1/Qa``, ``W1 W2 = 1`` with
    ``W = tan(w/2) / tan(w0/2)``.  Asking for digital edges ``w2 - w1 = w0/Q``
    gives ``tan((w2 - w1)/2) = (u2 - u1) / (1 + u1 u2)`` (``u = tan(w/2)``,
    ``u1 u2 = tan^2(w0/2)``), so ``1/Qa = tan(w0/(2Q)) (1 + t^2) / t`` with
    ``t = tan(w0/2)``, and since ``sin(w0) = 2t / (1 + t^2)``:
    ``alpha = tan(w0 / (2 Q))``.  Bandwidths wider than the band are clamped.
    """
    if not 0 < freq < sample_rate / 2:
        raise ValueError(f"band-pass centre {freq} Hz must lie between 0 and Nyquist ({sample_rate / 2} Hz)")
    if q <= 0:
        raise ValueError(f"band-pass Q must be positive, got {q}")
    w0 = 2 * math.pi * freq / sample_rate
    alpha = math.tan(min(w0 / (2 * q), 1.4))
    a0 = 1 + alpha
    return alpha / a0, 0.0, -alpha / a0, -2 * math.cos(w0) / a0, (1 - alpha) / a0


def biquad_response(coefs, freqs: np.ndarray, sample_rate: float) -> np.ndarray:
    """Complex frequency response of a normalised biquad at ``freqs`` Hz."""
    b0, b1, b2, a1, a2 = coefs
    z1 = np.exp(-2j * np.pi * np.asarray(freqs) / sample_rate)
    return (b0 + b1 * z1 + b2 * z1 * z1) / (1 + a1 * z1 + a2 * z1 * z1)


def one_pole_coefficient(time_constant_s: float, step_s: float) -> float:
    """``a`` in ``s += (1 - a) * (target - s)`` for a time constant, updated every ``step_s``."""
    if time_constant_s <= 0:
        return 0.0
    return math.exp(-step_s / time_constant_s)


def soft_limit(x: np.ndarray, knee: float, ceiling: float, out: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``out = sign(x) * (min(|x|, knee) + w * tanh(max(|x| - knee, 0) / w))``, ``w = ceiling - knee``.

    Identity (bit for bit) where ``|x| <= knee``; never exceeds ``ceiling`` (reaches it
    only where float32 tanh rounds to 1, |x| > knee + 9 w).
    ``out`` may be ``x``; ``work`` is scratch of the same shape.
    """
    w = ceiling - knee
    np.abs(x, out=work)
    if float(work.max(initial=0.0)) <= knee:
        if out is not x:
            np.copyto(out, x)
        return out
    np.subtract(work, knee, out=work)
    np.maximum(work, 0.0, out=work)
    np.multiply(work, 1.0 / w, out=work)
    np.tanh(work, out=work)
    np.multiply(work, w, out=work)
    # |x| clipped to the knee, plus the saturated excess, with x's sign
    np.clip(x, -knee, knee, out=out)
    np.copysign(work, x, out=work)
    np.add(out, work, out=out)
    return out


def chunk_length(block: int, longest: int = 64) -> int:
    """The chunk length ``Biquad`` splits a block into: the largest divisor of ``block`` up to ``longest``."""
    return max(d for d in range(1, min(block, longest) + 1) if block % d == 0)


class Biquad:
    """Transposed direct form II biquad with persistent state, a block of ``block`` samples at a time.

    No per-sample Python loop.  The block is cut into ``M`` chunks of ``L``
    samples (``chunk_length``).  With the state-space form of the filter
    (``y[n] = C s[n] + b0 x[n]``, ``s[n+1] = A s[n] + Bv x[n]``), a chunk's output
    is its zero-state response (an L x L Toeplitz matrix of the impulse
    response) plus its zero-input response (``C A^n s``), and the state it hands
    on is ``A^L s + K x``.  So a block is two matrix products (float64) and a
    loop over its ``M`` chunks (4 for 256 samples) for the state, not over its
    samples.  The matrices are rebuilt only when the coefficients change
    (``log2 L`` small matrix products); every buffer is allocated here.
    """

    def __init__(self, coefs, block: int, chunk: int | None = None):
        self.block = B = int(block)
        self.chunk = L = int(chunk) if chunk else chunk_length(B)
        if B <= 0 or B % L:
            raise ValueError(f"chunk length {L} must divide the block of {B} samples")
        self.chunks = M = B // L
        n, k = np.indices((L, L))
        self._toeplitz_index = np.where(k >= n, k - n, L)  # [k, n] -> h[n - k], or the zero at h[L]
        self._h = np.zeros(L + 1)
        self._powers = np.zeros((L + 1, 2, 2))  # A^0 .. A^L
        self._pb = np.zeros((L, 2))  # A^n Bv
        self._bv = np.zeros(2)
        self._g = np.zeros((L + 2, L))  # rows k < L: input k -> output n; rows L, L+1: state -> output n
        self._k = np.zeros((L, 2))  # input k -> state handed on
        self._xs = np.zeros((M, L + 2))  # each chunk's input, then the state it starts from
        self._u = np.zeros((M, 2))
        self._y = np.zeros((M, L))
        self.coefs: tuple[float, ...] = ()
        self.set_coefs(coefs)
        self.reset()

    def reset(self) -> None:
        self.s1 = 0.0
        self.s2 = 0.0

    def set_coefs(self, coefs) -> None:
        """Normalised (b0, b1, b2, a1, a2); the state is kept."""
        c = tuple(float(v) for v in coefs)
        if c == self.coefs:
            return
        b0, b1, b2, a1, a2 = c
        L, P = self.chunk, self._powers
        P[0] = ((1.0, 0.0), (0.0, 1.0))
        P[1] = ((-a1, 1.0), (-a2, 0.0))
        have = 1  # P[0 .. have] are known: double up
        while have < L:
            m = min(have, L - have)
            np.matmul(P[1 : m + 1], P[have], out=P[have + 1 : have + m + 1])
            have += m
        self._bv[:] = (b1 - a1 * b0, b2 - a2 * b0)
        np.matmul(P[:L], self._bv, out=self._pb)
        h = self._h
        h[0] = b0
        h[1:L] = self._pb[: L - 1, 0]
        h[L] = 0.0
        np.take(h, self._toeplitz_index, out=self._g[:L], mode="clip")
        np.copyto(self._g[L:], P[:L, 0, :].T)
        np.copyto(self._k, self._pb[::-1])
        (self._a00, self._a01), (self._a10, self._a11) = P[L].tolist()
        self.coefs = c

    def process(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Filter one block ``x`` [block] into ``out`` (which may be ``x``)."""
        if x.shape != (self.block,):
            raise ValueError(f"this filter takes blocks of {self.block} samples, got {x.shape}")
        L, xs, u = self.chunk, self._xs, self._u
        np.copyto(xs[:, :L], x.reshape(self.chunks, L))
        np.matmul(xs[:, :L], self._k, out=u)
        a00, a01, a10, a11 = self._a00, self._a01, self._a10, self._a11
        s1, s2 = self.s1, self.s2
        for j in range(self.chunks):
            xs[j, L] = s1
            xs[j, L + 1] = s2
            s1, s2 = a00 * s1 + a01 * s2 + u[j, 0], a10 * s1 + a11 * s2 + u[j, 1]
        self.s1, self.s2 = float(s1), float(s2)
        np.matmul(xs, self._g, out=self._y)
        np.copyto(out, self._y.reshape(self.block), casting="same_kind")
        return out


def dc_blocker_coefficients(sample_rate: float, cutoff_hz: float = 20.0) -> tuple[float, float, float, float, float]:
    """``y[n] = x[n] - x[n-1] + R y[n-1]``, ``R = 1 - 2 pi fc / rate``, as biquad coefficients."""
    r = 1.0 - 2 * math.pi * cutoff_hz / sample_rate
    return 1.0, -1.0, 0.0, -r, 0.0


class DCBlocker(Biquad):
    """y[n] = x[n] - x[n-1] + R y[n-1]: a one-zero one-pole high-pass at ``cutoff_hz``, ``block`` samples at a time."""

    def __init__(self, sample_rate: float, cutoff_hz: float = 20.0, *, block: int):
        super().__init__(dc_blocker_coefficients(sample_rate, cutoff_hz), block)
        self.r = -self.coefs[3]


class FeedbackShaper:
    """output -> band-pass(f, Q) -> gain -> DC blocker -> soft limiter, at one sample rate.

    ``process(y, gain, out)`` fills ``out`` with what is mixed into the next
    input block.  The gain is ramped linearly across the block from the
    previous block's value to the new one.  Once the gain has been 0 for a
    whole block and the DC blocker's tail has decayed below ``SILENCE`` (a few
    blocks), the shaper is inactive (``active`` is False): ``process`` resets
    it and writes zeros, and a caller can stop calling it (the engine does).
    """

    SILENCE = 1e-7  # the fed-back tail below which the shaper switches off (-140 dBFS)

    def __init__(
        self,
        sample_rate: float,
        block: int,
        *,
        dc_cutoff_hz: float = 20.0,
        knee: float = 0.25,
        ceiling: float = 0.5,
    ):
        self.sample_rate = float(sample_rate)
        self.block = int(block)
        self.knee, self.ceiling = knee, ceiling
        self._freq = None
        self._q = None
        self._bp = Biquad((0.0, 0.0, 0.0, 0.0, 0.0), self.block)
        self._dc = DCBlocker(self.sample_rate, dc_cutoff_hz, block=self.block)
        self.dc_r = self._dc.r
        self._ramp = np.arange(1, self.block + 1, dtype=np.float64) / self.block  # gain ramp: g0 + (g1 - g0) * ramp
        self._gains = np.zeros(self.block)
        self._v = np.zeros(self.block)
        self._work = np.zeros(self.block, np.float32)
        self.reset()

    @property
    def coefs(self) -> tuple[float, ...]:
        return self._bp.coefs

    def reset(self) -> None:
        self._bp.reset()
        self._dc.reset()
        self.gain = 0.0

    @property
    def active(self) -> bool:
        """Whether ``process`` can still output anything above ``SILENCE``."""
        return self.gain > 0.0 or abs(self._dc.s1) > self.SILENCE

    def set_filter(self, freq: float, q: float) -> None:
        freq = min(max(float(freq), 1.0), 0.45 * self.sample_rate)
        q = max(float(q), 1e-3)
        if freq != self._freq or q != self._q:
            self._bp.set_coefs(bandpass_coefficients(freq, q, self.sample_rate))
            self._freq, self._q = freq, q

    def process(self, y: np.ndarray, gain: float, out: np.ndarray) -> np.ndarray:
        """Shape the decoded block ``y`` [block] (model rate) into ``out``; ``gain`` is the new target."""
        g0, g1 = self.gain, float(gain)
        if g0 == 0.0 and g1 == 0.0 and not self.active:
            self.reset()
            out.fill(0.0)
            return out
        self.gain = g1
        v = self._v
        self._bp.process(y, v)
        if g0 == g1:
            v *= g1
        else:
            np.multiply(self._ramp, g1 - g0, out=self._gains)
            self._gains += g0
            v *= self._gains
        self._dc.process(v, out)
        return soft_limit(out, self.knee, self.ceiling, out, self._work)
