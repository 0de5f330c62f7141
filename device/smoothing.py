"""Per-latent-frame smoothing of the controls: one-pole glides that land exactly on their targets.

The engine reads a ``ControlSnapshot`` once per model block and hands it to
``ControlSmoother.retarget``; ``step`` then moves every value one latent frame
towards its target, ``s += (1 - a) (t - s)`` with ``a =
one_pole_coefficient(smoothing, frame_s)`` (the ``smoothing`` control is the
time constant; 0 is an immediate step).  The first snapshot after a ``reset``
is taken as it is, with no glide from zero.

Values are kept under the public control names of ``wavae.device.controls``:

- ``bias`` (a vector, ``ControlSmoother.bias``), ``scale``, ``noise``,
  ``loudness``, ``feedback_gain``, ``feedback_q``, ``output_gain``: as set;
- ``feedback_freq``: glides on a log scale (evenly in pitch, not in Hz);
  ``value`` and ``target`` give Hz;
- the switches ``freeze``, ``generative`` and ``loudness_source`` become
  crossfades from 0 to 1 (1: frozen, generative, manual loudness), so switching
  one never clicks.

A value within ``SNAP`` of its target (``SWITCH_SNAP`` for the switches) is set
to it exactly: a control returned to its resting value (feedback gain 0,
output gain 1, a switch off) lets the engine switch that processing off
instead of crawling through denormals forever.

Allocation-free after construction: float64 arrays allocated here, updated
with in-place ufuncs.  Once every value has landed, ``step`` does nothing until
the next ``retarget`` (a settled step would add zeros).
"""

from __future__ import annotations

import math

import numpy as np

from .controls import ControlSnapshot
from .dsp import one_pole_coefficient

SNAP = 1e-7  # a smoothed control this close to its target is set to it exactly
SWITCH_SNAP = 1e-4  # the same for the on/off crossfades
SWITCHES = ("freeze", "loudness_source", "generative")
SCALARS = ("scale", "noise", "loudness", "freeze", "loudness_source", "generative",
           "feedback_gain", "feedback_freq", "feedback_q", "output_gain")


class ControlSmoother:
    """The smoothed values of one engine's controls (see the module docstring)."""

    def __init__(self, latent_dim: int, frame_s: float):
        self.latent_dim = D = int(latent_dim)
        self.frame_s = float(frame_s)
        n = D + len(SCALARS)
        self._value = np.zeros(n, np.float64)
        self._target = np.zeros(n, np.float64)
        self._delta = np.zeros(n, np.float64)
        self._distance = np.zeros(n, np.float64)
        self._landed = np.zeros(n, bool)
        self._tolerance = np.full(n, SNAP)
        self.index = {name: D + i for i, name in enumerate(SCALARS)}
        for name in SWITCHES:
            self._tolerance[self.index[name]] = SWITCH_SNAP
        self.bias = self._value[:D]  # a view: the smoothed bias knobs
        self.a = 0.0
        self.snapshot: ControlSnapshot | None = None
        self.settled = False  # every value on its target: step() is a no-op until retarget()
        self.reset()

    def reset(self) -> None:
        """Forget the snapshot: the next ``retarget`` jumps to its values."""
        self.snapshot = None
        self._fresh = True
        self.settled = False

    def retarget(self, snap: ControlSnapshot) -> bool:
        """Aim at ``snap``'s values; True when this was a jump (the first snapshot after a reset)."""
        T, ix = self._target, self.index
        T[: self.latent_dim] = snap.bias
        T[ix["scale"]] = snap.scale
        T[ix["noise"]] = snap.noise
        T[ix["loudness"]] = snap.loudness
        T[ix["freeze"]] = 1.0 if snap.freeze else 0.0
        T[ix["loudness_source"]] = 1.0 if snap.loudness_source == "manual" else 0.0
        T[ix["generative"]] = 1.0 if snap.generative else 0.0
        T[ix["feedback_gain"]] = snap.feedback_gain
        T[ix["feedback_freq"]] = math.log(snap.feedback_freq)
        T[ix["feedback_q"]] = snap.feedback_q
        T[ix["output_gain"]] = snap.output_gain
        self.a = one_pole_coefficient(snap.smoothing, self.frame_s)
        self.snapshot = snap
        if not self._fresh:
            self.settled = False
            return False
        self._value[:] = T
        self._fresh = False
        self.settled = True
        return True

    def step(self) -> None:
        """One latent frame towards the targets; values within their tolerance land on them exactly."""
        if self.settled:
            return
        S, T, d = self._value, self._target, self._delta
        np.subtract(T, S, out=d)
        np.abs(d, out=self._distance)
        np.less(self._distance, self._tolerance, out=self._landed)
        d *= 1.0 - self.a
        S += d
        np.copyto(S, T, where=self._landed)
        self.settled = bool(self._landed.all())

    def value(self, name: str) -> float:
        """The smoothed value of control ``name`` (Hz for ``feedback_freq``, 0..1 for a switch)."""
        v = self._value[self.index[name]]
        return math.exp(v) if name == "feedback_freq" else float(v)

    def target(self, name: str) -> float:
        """What ``name`` is gliding to, in the units of ``value``."""
        v = self._target[self.index[name]]
        return math.exp(v) if name == "feedback_freq" else float(v)
