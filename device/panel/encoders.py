"""Edge-driven inputs: rotary encoders (quadrature) and push buttons.

Both are fed ``(level, t_ns)`` per edge of their lines, as the kernel stamps
them (gpiod edge events, CLOCK_MONOTONIC), so timing does not depend on when
the panel thread got round to reading them.

``QuadratureDecoder``: the A/B levels form a 2-bit state; each edge is looked
up in the 16-entry table of valid Gray-code transitions (gpiozero's and
Zynthian's scheme).  A valid step counts +1 or -1; a repeated state (contact
bounce that came back) counts 0; a jump of two steps at once (an edge lost)
is dropped and counted in ``invalid``.  Bounce on one contact alternates +1
and -1 and cancels in the accumulator.  Detents are counted only when the
contacts are back at a rest position (A = B = 1 with pull-ups for the common
4-step encoders): there the accumulated steps are a whole number of detents,
so bounce and a turn abandoned half-way count nothing, and a lost edge (half
a detent left over) still counts the click in the direction turned.  Acceleration: a detent
less than ``accel_ms`` after the previous one in the same direction counts
``accel_ms / dt`` detents (rounded, up to ``max_accel``), like Zynthian's.

``ButtonDecoder``: a software debounce on top of the kernel's (a change
within ``debounce_ms`` of the last accepted one is ignored), and press /
release / long press.  A long press fires once the button has been held
``long_press_ms``: ``poll(now_ns)`` reports it even before the release, and
the release after it is then not a short press.
"""

from __future__ import annotations

# index (previous_state << 2) | state, state = (a << 1) | b: +1 / -1 a valid step, 0 none or invalid
_STEP = (0, -1, 1, 0,
         1, 0, 0, -1,
         -1, 0, 0, 1,
         0, 1, -1, 0)
_INVALID = {0b0011, 0b0110, 0b1001, 0b1100}  # both lines changed at once: an edge was lost
REST = 0b11  # both contacts open at the detent (pull-ups)


class QuadratureDecoder:
    def __init__(self, steps_per_detent: int = 4, accel_ms: float = 40.0, max_accel: int = 5,
                 a: int = 1, b: int = 1):
        self.steps_per_detent, self.max_accel = steps_per_detent, max_accel
        self.accel_ns = int(accel_ms * 1e6)
        self.a, self.b = a, b
        self.state = (a << 1) | b
        self.acc = 0
        self.count = 0  # detents since start, signed (for `wavae panel check`)
        self.invalid = 0
        self._last_t: int | None = None
        self._last_dir = 0
        # the states at which the contacts rest between clicks
        self._rest = {4: (REST,), 2: (REST, 0b00), 1: (0b00, 0b01, 0b10, 0b11)}[steps_per_detent]

    def edge(self, which: str, level: int, t_ns: int) -> int:
        """One edge of line ``which`` ("a" or "b"); returns the detents it completes
        (signed, acceleration applied), usually 0."""
        if which == "a":
            self.a = level
        else:
            self.b = level
        state = (self.a << 1) | self.b
        idx = (self.state << 2) | state
        self.state = state
        if idx in _INVALID:
            self.invalid += 1  # worth two steps, direction unknown: settled at the next rest
            return 0
        self.acc += _STEP[idx]
        if state not in self._rest:
            return 0
        # at a rest position the accumulated steps are a whole number of detents, unless an
        # edge was lost (half a detent left over: counted in the direction turned)
        acc, self.acc = self.acc, 0
        n = (abs(acc) + self.steps_per_detent // 2) // self.steps_per_detent
        if n == 0:
            return 0
        direction = 1 if acc > 0 else -1
        self.count += direction * n
        return direction * n * self._accel(direction, t_ns)

    def _accel(self, direction: int, t_ns: int) -> int:
        mult = 1
        if self._last_t is not None and direction == self._last_dir and self.accel_ns > 0:
            dt = t_ns - self._last_t
            if 0 < dt < self.accel_ns:
                mult = max(1, min(self.max_accel, round(self.accel_ns / dt)))
        self._last_t, self._last_dir = t_ns, direction
        return mult


class ButtonDecoder:
    """Press / short press / long press from the edges of one active-low switch."""

    def __init__(self, debounce_ms: float = 5.0, long_press_ms: float = 600.0, active_low: bool = True,
                 level: int = 1):
        self.debounce_ns = int(debounce_ms * 1e6)
        self.long_ns = int(long_press_ms * 1e6)
        self.active_low = active_low
        self.pressed = (level == 0) if active_low else (level == 1)
        self._changed_at: int | None = None
        self._pressed_at: int | None = None
        self._long_fired = False
        self.presses = 0  # accepted presses since start (for `wavae panel check`)

    def edge(self, level: int, t_ns: int) -> list[str]:
        """One edge; returns the events it makes: "down", and on release "up" plus
        "short" (a press shorter than the long press)."""
        pressed = (level == 0) if self.active_low else (level == 1)
        if pressed == self.pressed:
            return []
        if self._changed_at is not None and t_ns - self._changed_at < self.debounce_ns:
            return []  # bounce
        self._changed_at = t_ns
        self.pressed = pressed
        if pressed:
            self.presses += 1
            self._pressed_at, self._long_fired = t_ns, False
            return ["down"]
        events = ["up"]
        if self._pressed_at is not None and not self._long_fired and t_ns - self._pressed_at < self.long_ns:
            events.append("short")
        elif self._pressed_at is not None and not self._long_fired:
            events.append("long")  # released after the long time, before poll() saw it
        self._pressed_at = None
        return events

    def poll(self, now_ns: int) -> bool:
        """True once when a held button reaches the long-press time."""
        if self.pressed and not self._long_fired and self._pressed_at is not None \
                and now_ns - self._pressed_at >= self.long_ns:
            self._long_fired = True
            return True
        return False
