"""The engine: device periods in, device periods out, the model in between.

    period [P, ch_in] @ device rate
      -> input guard (NaN/Inf -> zeros, counted) -> clip to +-4 -> mono
      -> resampler (device -> model rate) -> input FIFO
      -> per model block: + feedback -> encoder -> latent controls -> decoder
                          -> NaN guard -> fade-in after a reset -> output gain
                          -> feedback shaper (band-pass, gain, DC blocker, limiter) -> next block
                          -> resampler (model -> device rate) -> output FIFO
      -> P frames out of the output FIFO -> soft limiter -> channels [P, ch_out]

The output FIFO starts with ``prefill`` zeros: the smallest amount for which
it never runs dry, found by running the resamplers' and blocks' sample counts
over a full cycle at construction.  A file run therefore returns
``out[t] = model(in)[t - prefill]`` exactly, and the live loop gets the same
samples, a period at a time.

Latency (``latency()``): the engine's part of the round trip is
``period + prefill`` device samples (one period captured before ``process`` is
called, then the FIFO).  That is split into the resamplers' filter delays, the
model's algorithmic latency (one latent frame) and the rest, buffering (a
model block longer than a frame, period/block misalignment).  The live loop's
ALSA buffer comes on top and is reported by it.

Controls are read once per model block from ``Controls.snapshot`` (a reference
load; no lock) and smoothed per latent frame by a ``ControlSmoother``
(``wavae.device.smoothing``): one-pole glides whose time constant is the
``smoothing`` control, crossfades for the switches (freeze, loudness_source,
generative), each landing exactly on its target, so a control returned to its
resting value (feedback_gain 0, output_gain 1) switches its processing off.
Each latent frame of a block, in order: the source latent (the encoder's, or
the one held by ``freeze``, crossfaded), ``scale * z + bias + noise * z_std *
N(0, 1)``, the loudness (the encoder's or the manual one, crossfaded by
``loudness_source``), then the ``generative`` crossfade to ``bias + noise *
N(0, 1)`` with the manual loudness.

Fade-in: the decoder's first output from zero state is a click on its first
samples (tests/test_device_engine.py measures it on a trained tiny model).
After construction, every ``reset()`` and every NaN-guard reset, the decoded
audio is faded in over ``fade_in_s`` (default ``FADE_IN_S`` = 15 ms) with a
raised cosine ``w[n] = (1 - cos(pi n / F)) / 2``, starting with the first
decoder block that is not muted.  It is applied at the
model rate, on the very samples the click is in, so the output resampler never
sees the click to spread it; at the device rate the fade ends ``fade_in_s``
after the model's first sample comes out (``signal_delay_samples`` after a
reset), plus the resampler filter's half-length.

One soft limiter, on the device-rate output (after the resampler, whose
filter can overshoot): the model-rate signal that feeds the feedback shaper is
bounded by the shaper's own limiter.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from wavae.blocks import check_block
from wavae.errors import WavaeError

from .backends import Backend
from .bundle import Bundle
from .capabilities import DEVICE_RATES, MAX_RATE_RATIO, MODEL_RATE_RANGE
from .controls import Controls
from .dsp import FeedbackShaper, soft_limit
from .fifo import Fifo
from .resample import PolyphaseResampler, ResampleError, make_resampler
from .timing import BlockRecorder
from .smoothing import ControlSmoother

log = logging.getLogger("wavae.device.engine")

TIMED_BLOCKS = 4096  # model blocks whose compute time timing() summarises
MAX_PERIOD = 16384
INPUT_CLIP = 4.0  # input samples beyond +-4 full scale are clipped (nothing real gets there)
OUTPUT_KNEE, OUTPUT_CEILING = 0.9, 1.0
FADE_IN_S = 0.015  # raised-cosine fade-in of the decoded audio after every reset (seconds)


class EngineError(WavaeError, ValueError):
    """The engine cannot serve this bundle / device combination, or was fed the wrong shape."""


def check_servable(bundle: Bundle, device_rate: int, period: int, channels_in: int, channels_out: int) -> None:
    """Raise EngineError unless the engine can run ``bundle`` at this device setting."""
    lo, hi = MODEL_RATE_RANGE
    sr = bundle.sample_rate
    if not lo <= sr <= hi:
        raise EngineError(
            f"bundle {bundle.path} runs at {sr} Hz; the engine serves models at {lo}-{hi} Hz: "
            f"export a bundle from a model trained at a standard rate"
        )
    if isinstance(device_rate, bool) or not isinstance(device_rate, int) or device_rate not in DEVICE_RATES:
        raise EngineError(
            f"device rate {device_rate!r} Hz is not supported; use one of {', '.join(map(str, DEVICE_RATES))}"
        )
    ratio = max(device_rate / sr, sr / device_rate)
    g = math.gcd(device_rate, sr)
    if ratio > MAX_RATE_RATIO or max(device_rate // g, sr // g) > 1024:
        raise EngineError(
            f"cannot serve a {sr} Hz bundle at a device rate of {device_rate} Hz (ratio {ratio:.2f}, "
            f"{device_rate // g}:{sr // g}); run the device at a rate closer to the model's, e.g. "
            f"{min(DEVICE_RATES, key=lambda r: abs(r - sr))} Hz"
        )
    check_block(bundle.block, bundle.frame, sr)
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= MAX_PERIOD:
        raise EngineError(f"period must be a whole number of frames between 1 and {MAX_PERIOD}, got {period!r}")
    for what, ch in (("input", channels_in), ("output", channels_out)):
        if ch not in (1, 2):
            raise EngineError(f"{what} channels must be 1 (mono) or 2 (stereo), got {ch!r}")


def simulate_prefill(rs_in, rs_out, period: int, block: int, calls: int) -> tuple[int, int, int]:
    """Run the sample counts of the pipeline over ``calls`` periods through fresh resamplers.

    Returns (prefill, max output FIFO level, max input FIFO level): the fewest
    output-FIFO zeros for which ``process`` never runs short, and the levels the
    FIFOs reach with that prefill.
    """
    zeros_p = np.zeros(period, np.float32)
    zeros_b = np.zeros(block, np.float32)
    in_level = 0
    produced = 0
    need = 0
    deficit = 0
    max_in = 0
    levels = []
    for _ in range(calls):
        in_level += rs_in.process(zeros_p).shape[0]
        max_in = max(max_in, in_level)
        while in_level >= block:
            in_level -= block
            produced += rs_out.process(zeros_b).shape[0]
        need += period
        deficit = max(deficit, need - produced)
        levels.append(produced - need)
    prefill = max(0, deficit)
    max_out = prefill + max(levels) + period  # level just after the blocks of a call, before the read
    return prefill, max_out, max_in


class Engine:
    """See the module docstring.  One instance per stream, called from one thread.

    The engine uses the backend's preallocated input and state buffers: give each
    running engine its own backend (engines made one after the other may share one).
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        *,
        device_rate: int,
        period: int,
        channels_in: int = 1,
        channels_out: int = 1,
        controls: Controls | None = None,
        resampler: str = "polyphase",
        seed: int = 0,
        fade_in_s: float = FADE_IN_S,
    ):
        check_servable(bundle, device_rate, period, channels_in, channels_out)
        if isinstance(fade_in_s, bool) or not isinstance(fade_in_s, (int, float)) or not 0.0 <= fade_in_s <= 1.0:
            raise EngineError(f"fade_in_s must be between 0 and 1 second, got {fade_in_s!r}")
        if controls is None:
            controls = Controls(bundle.latent_dim)
        elif controls.latent_dim != bundle.latent_dim:
            raise EngineError(
                f"the controls have {controls.latent_dim} bias dimensions but the bundle's latent has "
                f"{bundle.latent_dim}"
            )
        self.bundle, self.backend, self.controls = bundle, backend, controls
        self.device_rate, self.period = int(device_rate), int(period)
        self.channels_in, self.channels_out = channels_in, channels_out
        self.model_rate, self.block, self.frame = bundle.sample_rate, bundle.block, bundle.frame
        self.latent_dim = bundle.latent_dim
        self.frames_per_block = bundle.block // bundle.frame
        self.seed = seed
        self.resampler_kind = resampler
        self._plan_buffering(resampler)
        self._allocate_buffers()
        self._make_fade(fade_in_s)
        self.smoother = ControlSmoother(self.latent_dim, self.frame / self.model_rate)
        self._fb = FeedbackShaper(self.model_rate, self.block)
        self._output_gain_prev = 1.0
        self.stats = {
            "periods": 0,
            "blocks": 0,
            "nan_resets": 0,
            "nonfinite_input_periods": 0,
            "fifo_underruns": 0,
            "generative_blocks": 0,
        }
        self._guard_logged = {"input": False, "model": False}  # one warning per cause
        self._underrun_logged = False
        self.recorder = self._new_recorder()  # compute time per model block (the last TIMED_BLOCKS)
        self.reset()

    # ------------------------------------------------------------------ set-up
    def _plan_buffering(self, resampler: str) -> None:
        """The resamplers, and the FIFOs sized by the exact prefill over two joint cycles
        of periods, blocks and resampler phases (``simulate_prefill``)."""
        try:
            self._rs_in = make_resampler(self.device_rate, self.model_rate, self.period, resampler)
            self._rs_out = make_resampler(self.model_rate, self.device_rate, self.block, resampler)
        except ResampleError as e:
            raise EngineError(str(e)) from e
        sim_in = make_resampler(self.device_rate, self.model_rate, self.period, resampler)
        sim_out = make_resampler(self.model_rate, self.device_rate, self.block, resampler)
        delay = sim_in.delay * self.device_rate / self.model_rate + sim_out.delay  # device samples
        self.prefill, max_out, max_in = simulate_prefill(sim_in, sim_out, self.period, self.block,
                                                         self._simulation_calls(delay))
        # the resamplers' delay in device samples (soxr's: its average pending output over the run)
        self._resampler_delay = sim_in.delay * self.device_rate / self.model_rate + sim_out.delay
        self._in_fifo = Fifo(max_in + self.block + 64)
        self._out_fifo = Fifo(max_out + self.period + 64)

    def _simulation_calls(self, resampler_delay: float) -> int:
        """Periods to simulate: the start-up transient (the resamplers' delay and the first
        block, in device samples, whatever the period), then two whole joint cycles."""
        g = math.gcd(self.device_rate, self.model_rate)
        l_in, m_in = self.model_rate // g, self.device_rate // g
        cycle = math.lcm(self.period, m_in * self.block // math.gcd(self.block, l_in))
        transient = 2 * math.ceil(resampler_delay) + math.ceil(self.block * m_in / l_in) + 64
        calls = -(-(2 * cycle + transient) // self.period) + 1
        if not isinstance(self._rs_in, PolyphaseResampler):
            calls = max(calls, 4 * self.device_rate // self.period)  # soxr blocks internally
        return min(calls, 50000)

    def _allocate_buffers(self) -> None:
        """Every array the audio path writes: periods, blocks, latent frames, and the backend's inputs."""
        P, B, D, nf = self.period, self.block, self.latent_dim, self.frames_per_block
        self._mono = np.zeros(P, np.float32)
        self._out_mono = np.zeros(P, np.float32)
        self._work_p = np.zeros(P, np.float32)
        self._enc_in = self.backend.input_buffers("encoder")
        self._enc_audio = self._enc_in["audio"].reshape(B)
        self._dec_in = self.backend.input_buffers("decoder")
        self._dec_z = self._dec_in["z"].reshape(D, nf)
        self._dec_z_flat = self._dec_in["z"].reshape(D * nf)
        self._dec_loud = self._dec_in["loudness"].reshape(nf)
        self._y = np.zeros(B, np.float32)
        self._work_b = np.zeros(B, np.float32)
        self._fb_buf = np.zeros(B, np.float32)
        self._ramp = (np.arange(1, B + 1, dtype=np.float32) / B).astype(np.float32)
        self._eps = np.zeros(D, np.float32)
        self._tmp_d = np.zeros(D, np.float32)
        self._bias = np.zeros(D, np.float32)
        self._zsrc = np.zeros(D, np.float32)
        self._std_src = np.zeros(D, np.float32)
        self._z = np.zeros(D, np.float32)
        self._held_z = np.zeros(D, np.float32)
        self._held_std = np.zeros(D, np.float32)
        self._held_loud = 0.0
        self._enc_z = np.zeros((D, nf), np.float32)
        self._enc_std = np.zeros((D, nf), np.float32)
        self._enc_loud = np.zeros(nf, np.float32)

    def _make_fade(self, fade_in_s: float) -> None:
        """The fade-in envelope: F raised-cosine samples, then ones for a whole block."""
        self.fade_samples = F = int(round(fade_in_s * self.model_rate))
        self._fade = np.ones(F + self.block, np.float32)
        self._fade[:F] = 0.5 * (1.0 - np.cos(np.pi * np.arange(F) / F))

    def reset(self) -> None:
        """Zero the model state, filters, FIFOs and smoothing; re-prime the output FIFO."""
        self._reset_model()
        self._rs_in.reset()
        self._rs_out.reset()
        self._in_fifo.clear()
        self._out_fifo.clear()
        self._out_fifo.write_zeros(self.prefill)
        self.smoother.reset()
        self._rng = np.random.default_rng(self.seed)
        self._device_frames = 0  # device frames taken in since the reset
        self._model_pos = 0  # model-rate samples consumed as blocks
        self._mute_until = 0  # blocks starting before this model position are muted

    def reset_stats(self) -> None:
        """Zero ``stats`` and the block timings (e.g. after a warm-up), keeping the stream's state."""
        for key in self.stats:
            self.stats[key] = 0
        self.recorder = self._new_recorder()

    def _new_recorder(self) -> BlockRecorder:
        return BlockRecorder(TIMED_BLOCKS, deadline_s=self.block / self.model_rate)

    def _reset_model(self) -> None:
        """Model state, feedback and freeze hold back to zero; the next audible block fades in.

        Part of ``reset``, and the NaN guard's reset on its own."""
        self._enc_state = self.backend.init_state("encoder")
        self._dec_state = self.backend.init_state("decoder")
        self._fb.reset()
        self._fb_buf.fill(0.0)
        self._fb_live = False  # the shaper ran last block: _fb_buf is mixed into the next
        self._held_z.fill(0.0)
        self._held_std.fill(0.0)
        self._held_loud = 0.0
        self._fade_pos = 0  # samples of the fade-in applied so far

    def _guard_event(self, cause: str, what: str) -> None:
        """Count a NaN-guard reset; log the first of each ``cause`` ("input" or "model")."""
        self.stats["nan_resets"] += 1
        if not self._guard_logged[cause]:
            self._guard_logged[cause] = True
            log.warning(
                "%s: muted, model state reset (logged once; see stats['nan_resets'] for the count)", what
            )

    # ------------------------------------------------------------------ blocks
    def _run_block(self) -> None:
        """One model block: input FIFO -> encoder -> latent controls -> decoder -> output FIFO."""
        t0 = time.perf_counter()
        snap = self.controls.snapshot
        if snap is not self.smoother.snapshot and self.smoother.retarget(snap):
            self._output_gain_prev = snap.output_gain  # a jump: no gain ramp from the old value
        block_start = self._model_pos
        self._model_pos += self.block
        self._encode()
        for j in range(self.frames_per_block):
            self.smoother.step()
            self._latent_frame(j)
        y = self._decode(block_start)
        self._apply_output_gain(y)
        self._feed_back(y)
        self._out_fifo.write(self._rs_out.process(y))
        self.stats["blocks"] += 1
        self.recorder.record(time.perf_counter() - t0)

    def _encode(self) -> None:
        """A block from the input FIFO, plus last block's feedback, through the encoder
        (skipped, zeros, once the generative crossfade is complete)."""
        D, nf = self.latent_dim, self.frames_per_block
        x = self._enc_audio
        self._in_fifo.read_into(x)
        if self._fb_live:
            x += self._fb_buf
        sm = self.smoother
        if sm.value("generative") == 1.0 and sm.target("generative") == 1.0:
            self.stats["generative_blocks"] += 1
            self._enc_z.fill(0.0)
            self._enc_std.fill(0.0)
            self._enc_loud.fill(0.0)
            return
        outs, self._enc_state = self.backend.process("encoder", self._enc_in, self._enc_state)
        np.copyto(self._enc_z, outs["z_mean"].reshape(D, nf))
        np.copyto(self._enc_std, outs["z_std"].reshape(D, nf))
        np.copyto(self._enc_loud, outs["loudness"].reshape(nf))

    def _latent_frame(self, j: int) -> None:
        """Decoder input for latent frame ``j`` of the block (the order is in the module docstring)."""
        sm = self.smoother
        z, zsrc, tmp, bias = self._z, self._zsrc, self._tmp_d, self._bias
        np.copyto(bias, sm.bias, casting="same_kind")
        loud = self._source_frame(j)
        # z = scale * z + bias + noise * std * eps
        np.multiply(zsrc, sm.value("scale"), out=z)
        z += bias
        noise = sm.value("noise")
        generative = sm.value("generative")
        if noise > 0.0 or generative > 0.0:
            self._rng.standard_normal(self.latent_dim, dtype=np.float32, out=self._eps)
        if noise > 0.0:
            np.multiply(self._std_src, self._eps, out=zsrc)  # zsrc is free now
            zsrc *= noise
            z += zsrc
        manual_source = sm.value("loudness_source")
        manual = sm.value("loudness")
        loud = (1.0 - manual_source) * loud + manual_source * manual
        if generative > 0.0:  # generative: z = bias + noise * N(0, 1), manual loudness
            z *= 1.0 - generative
            np.multiply(self._eps, noise * generative, out=zsrc)
            np.multiply(bias, generative, out=tmp)
            zsrc += tmp
            z += zsrc
            loud = (1.0 - generative) * loud + generative * manual
        self._dec_z[:, j] = z
        self._dec_loud[j] = loud

    def _source_frame(self, j: int) -> float:
        """The encoder's latent, std and loudness for frame ``j``, or the held ones as far as
        ``freeze`` has crossfaded to them: into ``_zsrc`` and ``_std_src``; returns the loudness."""
        zl, sl, ll = self._enc_z[:, j], self._enc_std[:, j], float(self._enc_loud[j])
        frozen = self.smoother.value("freeze")
        if frozen == 0.0 and self.smoother.target("freeze") == 0.0:  # not frozen: the hold tracks the input
            np.copyto(self._held_z, zl)
            np.copyto(self._held_std, sl)
            self._held_loud = ll
        if frozen == 0.0:
            np.copyto(self._zsrc, zl)
            np.copyto(self._std_src, sl)
            return ll
        np.multiply(zl, 1.0 - frozen, out=self._zsrc)
        np.multiply(self._held_z, frozen, out=self._tmp_d)
        self._zsrc += self._tmp_d
        np.multiply(sl, 1.0 - frozen, out=self._std_src)
        np.multiply(self._held_std, frozen, out=self._tmp_d)
        self._std_src += self._tmp_d
        return (1.0 - frozen) * ll + frozen * self._held_loud

    def _decode(self, block_start: int) -> np.ndarray:
        """The decoder on the block's latents; muted, guarded against non-finite output and faded in."""
        outs, self._dec_state = self.backend.process("decoder", self._dec_in, self._dec_state)
        y = self._y
        np.copyto(y, outs["audio"].reshape(self.block))
        if block_start < self._mute_until:
            y.fill(0.0)
        # dot products, each cheaper than a reduction (so a latent beyond ~1e19 counts as non-finite)
        elif not math.isfinite(float(np.dot(y, y))) or not math.isfinite(float(np.dot(self._dec_z_flat, self._dec_z_flat))):
            y.fill(0.0)
            self._reset_model()
            self._guard_event("model", "non-finite audio from the model")
        elif self._fade_pos < self.fade_samples:  # the first audible block(s) after a reset
            y *= self._fade[self._fade_pos : self._fade_pos + self.block]
            self._fade_pos += self.block
        return y

    def _apply_output_gain(self, y: np.ndarray) -> None:
        """``output_gain``, ramped across the block (the soft limiter is on the device-rate output)."""
        g0, g1 = self._output_gain_prev, self.smoother.value("output_gain")
        if g0 != 1.0 or g1 != 1.0:
            np.multiply(self._ramp, g1 - g0, out=self._work_b)
            self._work_b += g0
            y *= self._work_b
        self._output_gain_prev = g1

    def _feed_back(self, y: np.ndarray) -> None:
        """Shape ``y`` into the next block's feedback; off once ``feedback_gain`` is 0 and its tail has died."""
        sm = self.smoother
        feedback_gain = sm.value("feedback_gain")
        if feedback_gain > 0.0 or self._fb.active:
            self._fb.set_filter(sm.value("feedback_freq"), sm.value("feedback_q"))
            self._fb.process(y, feedback_gain, self._fb_buf)
            self._fb_live = True
        elif self._fb_live:
            self._fb.reset()
            self._fb_buf.fill(0.0)
            self._fb_live = False

    # ----------------------------------------------------------------- periods
    def process(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One device period: ``x`` float32 [period, channels_in] -> [period, channels_out].

        Writes into ``out`` when given (no allocation), else returns a new array.
        """
        P = self.period
        if x.ndim == 1 and self.channels_in == 1:
            x = x.reshape(P, 1) if x.shape[0] == P else x
        if x.shape != (P, self.channels_in):
            raise EngineError(f"process() takes [{P}, {self.channels_in}] frames, got {list(x.shape)}")
        if out is None:
            out = np.empty((P, self.channels_out), np.float32)
        elif out.shape != (P, self.channels_out):
            raise EngineError(f"out must be [{P}, {self.channels_out}], got {list(out.shape)}")
        self._take_input(x)
        while len(self._in_fifo) >= self.block:
            self._run_block()
        o = self._give_output()
        for c in range(self.channels_out):
            out[:, c] = o
        self.stats["periods"] += 1
        return out

    def _take_input(self, x: np.ndarray) -> None:
        """A period to mono, guarded (NaN/Inf: zeros, the model reset, the blocks it reaches muted)
        and clipped, resampled into the input FIFO."""
        P, mono = self.period, self._mono
        if self.channels_in == 1:
            np.copyto(mono, x[:, 0], casting="same_kind")
        else:
            np.add(x[:, 0], x[:, 1], out=mono, casting="same_kind")
            mono *= 0.5
        energy = float(np.dot(mono, mono))
        if not math.isfinite(energy):
            mono.fill(0.0)
            self.stats["nonfinite_input_periods"] += 1
            self._reset_model()
            # mute every block this period's samples reach, including the resampler's spread of them
            spread = 0 if self.device_rate == self.model_rate else math.ceil(self._rs_in.delay) + 1
            end = math.ceil((self._device_frames + P) * self.model_rate / self.device_rate) + spread
            self._mute_until = max(self._mute_until, end)
            self._guard_event("input", "NaN/Inf in the input")
        if energy > INPUT_CLIP * INPUT_CLIP:  # else no sample reaches the clip, and np.clip costs several dots
            np.clip(mono, -INPUT_CLIP, INPUT_CLIP, out=mono)
        self._in_fifo.write(self._rs_in.process(mono))
        self._device_frames += P

    def _give_output(self) -> np.ndarray:
        """A period out of the output FIFO, through the soft limiter (a reused buffer)."""
        P, o = self.period, self._out_mono
        have = len(self._out_fifo)
        if have >= P:
            self._out_fifo.read_into(o)
        else:  # cannot happen with the simulated prefill; never crash the audio path over it
            o.fill(0.0)
            self._out_fifo.read_into(o[:have])
            self.stats["fifo_underruns"] += 1
            if not self._underrun_logged:
                self._underrun_logged = True
                log.warning("engine output FIFO ran short by %d samples (counted in stats['fifo_underruns'])", P - have)
        return soft_limit(o, OUTPUT_KNEE, OUTPUT_CEILING, o, self._work_p)

    # ----------------------------------------------------------------- reports
    def decoder_input(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the last block's decoder input: latent [latent_dim, frames] and loudness [frames]."""
        return self._dec_z, self._dec_loud

    @property
    def signal_delay(self) -> int | float:
        """Device samples from an input sample to its output through ``process``: the
        FIFO pre-fill plus the model's own filter delay (``Bundle.model_delay``); a
        whole number whenever the filter delay is one at the device rate."""
        filt = self.bundle.model_delay * self.device_rate / self.model_rate
        return self.prefill + (int(filt) if float(filt).is_integer() else filt)

    def latency(self) -> dict:
        """The engine's share of the round trip, in device samples and ms."""
        r = self.device_rate / self.model_rate
        res = self._resampler_delay
        alg = self.bundle.latency_samples * r
        total = self.period + self.signal_delay
        parts = {
            "resampler": res,
            "algorithmic": alg,
            "buffering": total - res - alg,
            "total": float(total),
        }
        outd: dict = {"device_rate": self.device_rate, "period": self.period, "prefill_samples": self.prefill,
                      "signal_delay_samples": self.signal_delay}
        for k, v in parts.items():
            outd[f"{k}_samples"] = round(v, 3)
            outd[f"{k}_ms"] = round(1000.0 * v / self.device_rate, 3)
        return outd

    def timing(self) -> dict:
        """Per-block compute time over the last (up to ``TIMED_BLOCKS``) model blocks, in ms."""
        t = self.recorder.series() * 1e3
        n = t.size
        if n == 0:
            return {"blocks": 0}
        budget = 1e3 * self.block / self.model_rate
        p50 = float(np.percentile(t, 50))
        return {
            "blocks": n,
            "p50_ms": p50,
            "p99_ms": float(np.percentile(t, 99)),
            "max_ms": float(t.max()),
            "block_ms": budget,
            "rtf_p50": p50 / budget,
        }
