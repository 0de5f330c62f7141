"""Stand-ins at the panel's outermost boundary, for tests, benchmarks and a bench without hardware.

Like gpiozero's ``MockFactory``, these replace only what touches the kernel:
``FakeGpioLines`` for a gpiod line request (``GpioLines``) and ``FakeMcp3008``
for an SPI bus with an MCP3008 on it (``SpiBus``, spidev's ``xfer2``).
Everything above them (decoders, filters, takeover, mapping, presets) is the
real code.  ``turn`` and ``press`` script what a hand does: a detented turn
with contact bounce, a fast spin, a press that bounces, a long press.
"""

from __future__ import annotations

import os
import random
import select
import threading
from typing import Iterable

from .gpio import Edge, Line, PanelHardwareError


class FakeGpioLines:
    """Edges pushed by a test come out of ``read``; outputs set are recorded in ``outputs``.

    ``read`` waits in ``select`` on a pipe that ``push`` writes to, as the real
    request waits in ``poll`` on its event fd: the same wake-up, the same cost."""

    def __init__(self, inputs: Iterable[Line] = (), outputs: Iterable[Line] = (), level: int = 1):
        self._levels = {line: level for line in inputs}
        self.outputs: dict[Line, list[int]] = {line: [] for line in outputs}
        self._queue: list[Edge] = []
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.closed = False
        self.broken: str | None = None  # set to a message: read() raises as a failing chip would

    def push(self, edges: Iterable[Edge]) -> None:
        with self._lock:
            for line, level, t in edges:
                if line not in self._levels:
                    raise KeyError(f"line {line!r} was not requested")
                self._queue.append((line, level, t))
        os.write(self._w, b"x")

    def read(self, timeout_s: float) -> list[Edge]:
        if self.broken:
            raise PanelHardwareError(self.broken)
        ready, _, _ = select.select([self._r], [], [], 0.0 if self._queue else timeout_s)
        if ready:
            os.read(self._r, 4096)
        with self._lock:
            out, self._queue = self._queue, []
        for line, level, _ in out:
            self._levels[line] = level
        return out

    def levels(self) -> dict[Line, int]:
        return dict(self._levels)

    def set(self, line: Line, level: int) -> None:
        self.outputs[line].append(int(level))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


class FakeMcp3008:
    """An MCP3008 answering ``xfer2``: ``values[ch]`` (0..1023) plus optional uniform noise of
    ``noise`` steps; ``dead = True`` answers as an unwired bus (MISO high), ``fail`` raises OSError."""

    def __init__(self, values: Iterable[int] = (512,) * 8, noise: int = 0, seed: int = 0):
        self.values = list(values)
        self.noise = noise
        self.rng = random.Random(seed)
        self.dead = False
        self.fail: str | None = None
        self.transfers = 0
        self.closed = False

    def xfer2(self, data: list[int]) -> list[int]:
        if self.fail:
            raise OSError(5, self.fail)
        self.transfers += 1
        if self.dead:
            return [0xFF, 0xFF, 0xFF]
        if len(data) != 3 or data[0] != 0x01 or not data[1] & 0x80:
            return [0, 0, 0]
        ch = (data[1] >> 4) & 7
        v = self.values[ch]
        if self.noise:
            v += self.rng.randint(-self.noise, self.noise)
        v = min(1023, max(0, v))
        return [0x00, (v >> 8) & 3, v & 0xFF]

    def close(self) -> None:
        self.closed = True


# Gray-code sequence of (a, b) from the rest position, clockwise
_CW = [(0, 1), (0, 0), (1, 0), (1, 1)]


def turn(a: Line, b: Line, detents: int, t0_ns: int, detent_ns: int = 50_000_000,
         bounce: int = 0, bounce_ns: int = 200_000) -> list[Edge]:
    """Edges of ``detents`` clicks (negative: the other way) from rest, one click every
    ``detent_ns``, each contact change preceded by ``bounce`` chatters ``bounce_ns`` apart."""
    seq = _CW if detents > 0 else [(s[1], s[0]) for s in _CW]
    edges: list[Edge] = []
    state = (1, 1)
    t = t0_ns
    step_ns = detent_ns // 4
    for _ in range(abs(detents)):
        for nxt in seq:
            line, level = (a, nxt[0]) if nxt[0] != state[0] else (b, nxt[1])
            for _k in range(bounce):
                edges.append((line, level, t))
                edges.append((line, 1 - level, t + bounce_ns // 2))
                t += bounce_ns
            edges.append((line, level, t))
            state = nxt
            t += step_ns
    return edges


def press(line: Line, t0_ns: int, hold_ns: int, bounce: int = 0, bounce_ns: int = 300_000) -> list[Edge]:
    """A press (active low) held ``hold_ns``, with ``bounce`` chatters on each edge."""
    edges: list[Edge] = []
    for level, t in ((0, t0_ns), (1, t0_ns + hold_ns)):
        for k in range(bounce):
            edges.append((line, level, t + k * bounce_ns))
            edges.append((line, 1 - level, t + k * bounce_ns + bounce_ns // 2))
        edges.append((line, level, t + bounce * bounce_ns))
    return edges
