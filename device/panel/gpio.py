"""GPIO lines through gpiod 2.x: the panel's thin boundary to switches, encoders and the LED.

The boundary is ``GpioLines``: ``read(timeout_s)`` returns the edges seen as
``(line, level, t_ns)`` (``line`` as the mapping names it, ``level`` 0 or 1,
``t_ns`` the kernel's CLOCK_MONOTONIC stamp), ``levels()`` the current levels,
``set(line, level)`` drives an output, ``close()``.  ``GpiodLines`` is the real
one; ``wavae.device.panel.fakes.FakeGpioLines`` scripts edges for tests.

gpiod 2.x (pip ``gpiod``) is the one API that is the same on a Pi 4
(``pinctrl-bcm2711``), a Pi 5 (``pinctrl-rp1``) and a Jetson Orin
(``tegra234-gpio``); it is imported only when a panel with GPIO lines starts.
The chip is found by its label, or as the chip that has every line name the
mapping uses, never by its number: Pi 5's header chip moved from gpiochip4 to
gpiochip0 between kernels.  All lines go in one request: inputs with both
edges, buttons with the kernel's debounce (never the encoders' A/B: it would
delay and merge their edges), the LED as an output.  A gap in the events'
``global_seqno`` means the kernel's event buffer overflowed: the levels are
then read back and reported as edges at the current time, so no decoder keeps
a stale level.
"""

from __future__ import annotations

import glob
import time
from datetime import timedelta
from typing import Iterable, Protocol

from wavae.errors import WavaeError

Line = str | int
Edge = tuple[Line, int, int]  # (line, level, t_ns)


class PanelHardwareError(WavaeError, OSError):
    """A GPIO chip, line or SPI bus the panel needs is missing or cannot be opened."""


class GpioLines(Protocol):
    def read(self, timeout_s: float) -> list[Edge]: ...

    def levels(self) -> dict[Line, int]: ...

    def set(self, line: Line, level: int) -> None: ...

    def close(self) -> None: ...


def import_gpiod():
    try:
        import gpiod
    except ImportError as e:
        raise PanelHardwareError(
            f"the gpiod module is not installed ({e}): pip install 'wavae-edge[panel]' (gpiod >= 2.1)"
        ) from None
    if not hasattr(gpiod, "request_lines"):
        raise PanelHardwareError(
            "the gpiod module is the old 1.x API (Debian's python3-libgpiod): install gpiod >= 2.1 "
            "from pip in the instrument's virtual environment"
        )
    return gpiod


def find_chip(labels: Iterable[str], line_names: Iterable[str], chips: Iterable[str] | None = None) -> str:
    """The path of the GPIO chip: the first whose label is in ``labels`` (in that order), or,
    with no labels, the first that has every name in ``line_names``."""
    gpiod = import_gpiod()
    labels, names = list(labels), [n for n in line_names if isinstance(n, str)]
    paths = sorted(chips if chips is not None else glob.glob("/dev/gpiochip*"))
    seen: list[str] = []
    found: dict[str, str] = {}
    for path in paths:
        try:
            if not gpiod.is_gpiochip_device(path):
                continue
            with gpiod.Chip(path) as chip:
                label = chip.get_info().label
                seen.append(f"{path} ({label})")
                if labels:
                    found.setdefault(label, path)
                    continue
                missing = False
                for n in names:
                    try:
                        chip.line_offset_from_id(n)
                    except (OSError, ValueError):
                        missing = True
                        break
                if not missing:
                    return path
        except OSError as e:
            seen.append(f"{path} (cannot open: {e.strerror})")
    for label in labels:
        if label in found:
            return found[label]
    want = f"a chip labelled {' or '.join(labels)}" if labels else f"a chip with the lines {', '.join(names)}"
    have = "; ".join(seen) if seen else "no /dev/gpiochip* device at all"
    raise PanelHardwareError(
        f"no GPIO chip found: wanted {want}; this machine has {have}. Check gpio.chip in the panel mapping "
        f"(`gpiodetect` lists the labels), and that the service user is in the gpio group"
    )


class GpiodLines:
    """Inputs (both edges) and outputs on one chip, in one gpiod request."""

    def __init__(self, labels: Iterable[str], inputs: list[Line], outputs: list[Line] = (),
                 debounced: Iterable[Line] = (), debounce_ms: float = 5.0, bias: str = "pull_up",
                 consumer: str = "wavae-panel"):
        gpiod = import_gpiod()
        from gpiod.line import Bias, Direction, Edge as GEdge, Value

        self._gpiod, self._Value = gpiod, Value
        self.path = find_chip(labels, list(inputs) + list(outputs))
        bias_value = {"pull_up": Bias.PULL_UP, "pull_down": Bias.PULL_DOWN, "disabled": Bias.DISABLED,
                      "as_is": Bias.AS_IS}[bias]
        debounced = set(debounced)
        config = {}
        for line in inputs:
            config[line] = gpiod.LineSettings(
                direction=Direction.INPUT, edge_detection=GEdge.BOTH, bias=bias_value,
                debounce_period=timedelta(milliseconds=debounce_ms if line in debounced else 0),
            )
        for line in outputs:
            config[line] = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE)
        try:
            self.request = gpiod.request_lines(self.path, consumer=consumer, config=config, event_buffer_size=1024)
        except (OSError, ValueError) as e:
            raise PanelHardwareError(
                f"cannot request GPIO lines {', '.join(map(str, config))} on {self.path}: {e}. "
                f"Is another program using them (`gpioinfo`)? On a Jetson, is each pin set to GPIO in the pinmux?"
            ) from None
        with gpiod.Chip(self.path) as chip:
            self._ids = {chip.line_offset_from_id(line): line for line in config}
        self.inputs = list(inputs)
        self._seq: int | None = None
        self.overflows = 0

    def read(self, timeout_s: float) -> list[Edge]:
        try:
            if not self.request.wait_edge_events(timedelta(seconds=max(0.0, timeout_s))):
                return []
            events = self.request.read_edge_events()
        except OSError as e:
            raise PanelHardwareError(f"reading GPIO edges on {self.path} failed: {e}") from None
        rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
        out: list[Edge] = []
        gap = False
        for ev in events:
            if self._seq is not None and ev.global_seqno != self._seq + 1:
                gap = True
            self._seq = ev.global_seqno
            out.append((self._ids[ev.line_offset], 1 if ev.event_type == rising else 0, ev.timestamp_ns))
        if gap:  # the kernel buffer overflowed: resynchronise from the levels
            self.overflows += 1
            now = time.monotonic_ns()
            out += [(line, level, now) for line, level in self.levels().items()]
        return out

    def levels(self) -> dict[Line, int]:
        values = self.request.get_values(self.inputs)
        return {line: 1 if v == self._Value.ACTIVE else 0 for line, v in zip(self.inputs, values)}

    def set(self, line: Line, level: int) -> None:
        self.request.set_value(line, self._Value.ACTIVE if level else self._Value.INACTIVE)

    def close(self) -> None:
        self.request.release()
