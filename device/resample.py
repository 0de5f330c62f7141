"""Streaming sample-rate conversion between the device rate and the model rate.

Two implementations behind one small interface (``process(x) -> y``, ``delay``,
``reset()``):

* ``PolyphaseResampler`` (the default, ``kind="polyphase"``): an exact rational
  (L/M) polyphase FIR, Kaiser-windowed sinc, in numpy.  Passband to 85 % of the
  lower rate's Nyquist, stopband from that Nyquist on, 80 dB down: nothing
  aliases above -80 dB and the passband ripple is about 0.001 dB.  Its delay
  is half the prototype filter (``delay``; docs/device.md lists it per rate
  pair).  It emits every output sample as soon as the input it needs is in, so
  the number of samples out per call is steady.
* ``SoxrResampler`` (``kind="soxr-hq"`` etc.): ``soxr.ResampleStream``.  Its
  filters are excellent but it works in large internal blocks, so fed small
  periods its output comes in bursts, and playing without gaps needs a FIFO of
  several bursts.  Fine for renders, too slow for an instrument; the measured
  burst sizes and FIFO depths are in docs/device.md ("Resampling: why not soxr").

Both are time-aligned: output sample ``m`` stands for input time
``m / out_rate`` (the filter delay is withheld, not added to the signal), so
the engine's FIFO pre-fill absorbs it and ``latency()`` reports it.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from wavae.errors import WavaeError

_PHASE_LOOP_MAX_L = 8  # up to this many phases, loop over phases; beyond, gather
RESAMPLERS = ("polyphase", "soxr-lq", "soxr-mq", "soxr-hq", "soxr-vhq")


class ResampleError(WavaeError, ValueError):
    """A rate pair or resampler kind that cannot be served."""


def kaiser_beta(attenuation_db: float) -> float:
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def design_lowpass(rate: float, cutoff: float, transition: float, attenuation_db: float) -> np.ndarray:
    """Odd-length Kaiser-windowed-sinc low-pass at ``rate`` Hz, unit DC gain."""
    n = int(math.ceil((attenuation_db - 7.95) / (2.285 * 2 * math.pi * transition / rate))) + 1
    n += 1 - n % 2  # odd: integer centre tap
    c = (n - 1) / 2
    t = np.arange(n) - c
    fc = cutoff / rate
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, kaiser_beta(attenuation_db))
    return h / h.sum()


class PolyphaseResampler:
    """Rational streaming resampler, mono float32, allocation-free after construction
    (except the returned view, which is a slice of a preallocated buffer)."""

    kind = "polyphase"

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        max_chunk: int,
        *,
        passband: float = 0.85,
        attenuation_db: float = 80.0,
    ):
        if in_rate <= 0 or out_rate <= 0 or int(in_rate) != in_rate or int(out_rate) != out_rate:
            raise ResampleError(f"resampling needs positive whole-number rates, got {in_rate} -> {out_rate} Hz")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        g = math.gcd(self.in_rate, self.out_rate)
        self.L, self.M = self.out_rate // g, self.in_rate // g
        self.identity = self.L == self.M
        self.max_chunk = int(max_chunk)
        self._k_max = self.max_chunk * self.L // self.M + 2
        self._y = np.zeros(self._k_max if not self.identity else self.max_chunk, np.float32)
        if self.identity:
            self.taps, self.center = 1, 0
            return
        nyq = 0.5 * min(self.in_rate, self.out_rate)
        f_pass = passband * nyq
        proto_rate = self.in_rate * self.L
        h = design_lowpass(proto_rate, 0.5 * (f_pass + nyq), nyq - f_pass, attenuation_db)
        self.center = (h.size - 1) // 2  # in prototype-rate samples
        T = -(-h.size // self.L)  # taps per phase
        hp = np.zeros(self.L * T)
        hp[: h.size] = h * self.L  # interpolation gain
        # phases[p, i] = L*h[p + i*L]; reversed so a window of ascending input times dots it
        phases = hp.reshape(T, self.L).T
        self._coef = np.ascontiguousarray(phases[:, ::-1], dtype=np.float32)
        self.taps = T
        # output m: phase p = (m*M + c) % L, newest input j = (m*M + c - p) / L
        L, M, c = self.L, self.M, self.center
        k = np.arange(L + self._k_max)
        ph = (k * M + c) % L
        j = (k * M + c - ph) // L
        self._ph_tab = ph.astype(np.intp)
        self._j_tab = j.astype(np.int64)
        self._buf = np.zeros(T - 1 + self.max_chunk, np.float32)
        self._hist_tmp = np.zeros(max(T - 1, 1), np.float32)
        if L > _PHASE_LOOP_MAX_L:  # the gather path's tables and scratch
            # output k's window, relative to its newest input: j_tab[k] + 0 .. T-1 (shifted per call)
            self._idx_tab = (self._j_tab[:, None] + np.arange(T)[None, :]).astype(np.intp)
            self._idx = np.zeros((self._k_max, T), np.intp)
            self._win = np.zeros((self._k_max, T), np.float32)
            self._cw = np.zeros((self._k_max, T), np.float32)
        # every length-T window of buf, as a view (no copy)
        self._windows = np.lib.stride_tricks.sliding_window_view(self._buf, T)
        self.reset()

    @property
    def delay(self) -> float:
        """Output withheld by the filter, in output samples."""
        if self.identity:
            return 0.0
        return self.center / self.L * self.out_rate / self.in_rate

    def reset(self) -> None:
        self._n_in = 0  # input samples received so far
        self._m = 0  # next output index
        if not self.identity:
            self._buf[:] = 0

    def _run_phases(self, K: int, q: int, r: int, n0: int) -> None:
        """Few phases (48<->24, 48<->16 kHz): one strided window view and one BLAS
        matrix-vector product per phase, no copies."""
        L, M = self.L, self.M
        for s in range(min(L, K)):
            count = (K - s + L - 1) // L
            start = int(self._j_tab[r + s]) + q * M - n0  # buf index of the oldest input of output s
            view = self._windows[start : start + (count - 1) * M + 1 : M]
            np.matmul(view, self._coef[self._ph_tab[r + s]], out=self._y[s:K:L])

    def _run_gather(self, K: int, q: int, r: int, n0: int) -> None:
        """Many phases (44.1 <-> 24 kHz): gather every output's window and coefficients
        into preallocated matrices and reduce."""
        # the window x[j-T+1 .. j] starts at buf index j - n0 (buf[0] holds x[n0-T+1]); a table plus a
        # scalar, because a broadcast (start[:, None] + arange(T)) makes numpy allocate iterator buffers
        idx = self._idx[:K]
        np.add(self._idx_tab[r : r + K], q * self.M - n0, out=idx)
        # mode="clip": the indices are in range by construction, and with the default mode="raise"
        # numpy fills a temporary copy of ``out`` (K x T samples) and copies it over: an allocation per call
        win = self._win[:K]
        np.take(self._buf, idx, out=win, mode="clip")
        cw = self._cw[:K]
        np.take(self._coef, self._ph_tab[r : r + K], axis=0, out=cw, mode="clip")
        np.multiply(win, cw, out=win)
        np.sum(win, axis=1, out=self._y[:K])

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed ``x`` (1-D float32, at most ``max_chunk``); returns the outputs now ready
        (a view valid until the next call)."""
        n = x.shape[0]
        if n > self.max_chunk:
            raise ResampleError(f"chunk of {n} samples exceeds this resampler's max_chunk {self.max_chunk}")
        if self.identity:
            self._y[:n] = x
            return self._y[:n]
        T = self.taps
        buf = self._buf
        buf[T - 1 : T - 1 + n] = x
        n0 = self._n_in
        self._n_in = n_total = n0 + n
        # last output whose newest input sample is in: (m*M + c) // L <= n_total - 1
        m_last = (n_total * self.L - 1 - self.center) // self.M
        K = max(0, m_last - self._m + 1)
        if K:
            q, r = divmod(self._m, self.L)
            if self.L <= _PHASE_LOOP_MAX_L:
                self._run_phases(K, q, r, n0)
            else:
                self._run_gather(K, q, r, n0)
            self._m += K
        # keep the newest T-1 inputs as history
        if T > 1:
            self._hist_tmp[: T - 1] = buf[n : n + T - 1]
            buf[: T - 1] = self._hist_tmp[: T - 1]
        return self._y[:K]


class SoxrResampler:
    """``soxr.ResampleStream`` behind the same interface (allocates its output per call)."""

    def __init__(self, in_rate: int, out_rate: int, max_chunk: int, quality: str = "HQ"):
        self.in_rate, self.out_rate, self.max_chunk = int(in_rate), int(out_rate), int(max_chunk)
        self.quality = quality
        self.kind = f"soxr-{quality.lower()}"
        self.identity = self.in_rate == self.out_rate
        self._soxr = soxr
        self.reset()

    def reset(self) -> None:
        self._rs = None if self.identity else self._soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality
        )
        self._delay_sum = 0.0
        self._calls = 0

    @property
    def delay(self) -> float:
        """soxr's pending output averaged over the calls so far, in output samples (it
        varies from call to call with soxr's internal blocking)."""
        return self._delay_sum / self._calls if self._calls else 0.0

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.identity:
            return x
        y = self._rs.resample_chunk(np.ascontiguousarray(x, dtype=np.float32))
        self._delay_sum += self._rs.delay()
        self._calls += 1
        return y


def make_resampler(in_rate: int, out_rate: int, max_chunk: int, kind: str = "polyphase"):
    if kind == "polyphase":
        return PolyphaseResampler(in_rate, out_rate, max_chunk)
    if kind.startswith("soxr-") and kind in RESAMPLERS:
        return SoxrResampler(in_rate, out_rate, max_chunk, quality=kind.split("-", 1)[1].upper())
    raise ResampleError(f"unknown resampler {kind!r}; choose one of {', '.join(RESAMPLERS)}")


def resample_offline(x: np.ndarray, in_rate: int, out_rate: int, kind: str = "polyphase") -> np.ndarray:
    """Whole-signal conversion with the same filter as the streaming path, time-aligned
    and flushed (the output has ``round(len(x) * out / in)`` samples)."""
    x = np.asarray(x, np.float32).reshape(-1)
    n_out = int(round(x.size * out_rate / in_rate))
    if in_rate == out_rate:
        return x.copy()
    chunk = 4096
    rs = make_resampler(in_rate, out_rate, chunk, kind)
    outs = []
    got = 0
    pad = np.zeros(chunk, np.float32)
    pos = 0
    while got < n_out:
        piece = x[pos : pos + chunk] if pos < x.size else pad
        pos += chunk
        y = rs.process(piece)
        outs.append(np.array(y, copy=True))
        got += y.size
    return np.concatenate(outs)[:n_out]
