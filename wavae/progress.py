"""Progress for long work: a bar on a terminal, plain periodic lines elsewhere.

tqdm redraws its bar with a carriage return on every update.  On a terminal
that is what a person wants; in a log file or the systemd journal every frame
becomes a line, and a long run fills the disk with them.  ``Progress`` picks
by where its stream goes: a tqdm bar when the stream is a terminal, otherwise
one plain line every ``every_s`` seconds (and at the end), such as::

    train vae: 1200/1500 step (80%), 14.2 step/s, 21 s left, kl=0.031 rec=0.412

Every long loop in wavae (training, corpus, export, calibration, profiling,
file rendering) reports through this one class.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Mapping, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

PLAIN_EVERY_S = 10.0  # a line every 10 s keeps a day-long run to a few thousand lines


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _number(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


class Progress:
    """Counts work done out of ``total``; shows it as a bar or as plain lines.

    ``enabled=False`` shows nothing (the caller's ``--quiet``).  ``terminal``
    forces the choice, for tests; by default it is ``stream.isatty()``.
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        *,
        initial: float = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
        terminal: bool | None = None,
        every_s: float = PLAIN_EVERY_S,
        clock=time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.every_s = every_s
        self._clock = clock
        self._start = clock()
        self._start_n = initial
        self._last_line = self._start
        self._postfix: dict[str, str] = {}
        self._closed = False
        self._bar = None
        if enabled and (_is_terminal(self.stream) if terminal is None else terminal):
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True, leave=False)

    # -- counting ---------------------------------------------------------
    def update(self, n: float = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            now = self._clock()
            if now - self._last_line >= self.every_s:
                self._last_line = now
                self._write_line(now)

    def set_description(self, desc: str) -> None:
        """What is being done now (the step's name)."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc, refresh=False)

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Extra figures (losses, skipped files) shown after the count."""
        self._postfix = {str(k): (f"{v:.3g}" if isinstance(v, float) else str(v)) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def line(self, now: float | None = None) -> str:
        """The plain line for the state now."""
        now = self._clock() if now is None else now
        parts = [f"{self.desc}: {_number(self.n)}"]
        if self.total:
            parts[0] += f"/{_number(self.total)} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        elapsed = now - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
        text = ", ".join(parts)
        if self._postfix:
            text += ", " + " ".join(f"{k}={v}" for k, v in self._postfix.items())
        return text

    def _write_line(self, now: float) -> None:
        try:
            print(self.line(now), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe never stops the work
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.n != self._start_n:
            self._write_line(self._clock())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, unit: str = "it", *, total: float | None = None,
          **kwargs: Any) -> Iterator[T]:
    """Iterate ``items`` with a ``Progress``; ``total`` defaults to ``len(items)``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, **kwargs) as bar:
        for item in items:
            yield item
            bar.update(1)
