"""Potentiometers: ADC readings -> a steady position -> a control value, with soft takeover.

``PotFilter``: an exponential moving average (``alpha`` per reading) and a
hysteresis deadband of ``hysteresis`` ADC steps: the position moves only when
the average has left the band around the last position, so ADC noise of a
few steps never reaches the controls, and a slow turn still moves in steps
of the band.  Near either end the position snaps to the end, so a pot turned
fully gives exactly its range's end despite the band.

``Takeover`` decides whether the pot may write its control.  ``soft``
(Organelle's scheme): when the control's value is not the one this pot last
wrote (a preset load, an OSC or MIDI change, a layer switch, start-up), the
pot is *locked* and remembers on which side of the control's position it
sits; it unlocks once it reaches that position or crosses it, and from then
on writes.  So loading a preset never makes the sound jump when a pot is
touched.  ``jump``: the pot always writes.
"""

from __future__ import annotations

from .mapping import ADC_MAX, Curve

CATCH = 0.01  # a locked pot within this fraction of its range of the stored value takes over


class PotFilter:
    """EMA + hysteresis over raw 10-bit readings; ``update`` returns the new position 0..1 or None."""

    def __init__(self, alpha: float, hysteresis: float, full_scale: int = ADC_MAX):
        self.alpha, self.hysteresis, self.full = alpha, hysteresis, float(full_scale)
        self.ema: float | None = None
        self.held: float | None = None  # the debounced raw value

    def update(self, raw: int) -> float | None:
        e = self.ema
        e = float(raw) if e is None else e + self.alpha * (raw - e)
        self.ema = e
        held, h, full = self.held, self.hysteresis, self.full
        if held is not None and abs(e - held) < h and h / 2 < e < full - h / 2:
            return None  # inside the deadband (the common case, kept short)
        target = 0.0 if e <= h / 2 else full if e >= full - h / 2 else e
        if target == held:
            return None
        self.held = target
        return target / full

    @property
    def position(self) -> float | None:
        return None if self.held is None else self.held / self.full


class Takeover:
    """Soft takeover of one control by one pot layer (see the module docstring)."""

    def __init__(self, curve: Curve, soft: bool = True):
        self.curve, self.soft = curve, soft
        self.written: float | None = None  # the value this pot last wrote (None: it does not own the control)
        self.side = 0  # while locked: sign of (pot - stored); 0 = not locked
        self.locked_on: float | None = None  # the stored value the lock refers to

    @property
    def locked(self) -> bool:
        return self.side != 0

    def release(self) -> None:
        """Give up ownership (a layer switch): the next move must catch the stored value first."""
        self.written = None

    def offer(self, pos: float, current: float) -> float | None:
        """The pot moved to ``pos``; ``current`` is the control's value now.  Returns the value
        to write, or None while the pot has not yet caught the stored value."""
        if not self.soft or (self.side == 0 and self.written is not None and _same(current, self.written)):
            return self._write(pos)
        d = pos - self.curve.to_pos(current)
        if abs(d) <= CATCH:
            return self._write(pos)
        side = 1 if d > 0 else -1
        if self.side == 0 or self.locked_on is None or not _same(current, self.locked_on):
            self.side, self.locked_on, self.written = side, current, None  # (re)lock on the value stored now
            return None
        if side != self.side:  # crossed the stored value
            return self._write(pos)
        return None

    def _write(self, pos: float) -> float:
        self.side, self.locked_on = 0, None
        self.written = self.curve.to_value(pos)
        return self.written


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
