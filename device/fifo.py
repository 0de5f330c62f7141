"""A preallocated mono sample FIFO (ring buffer) for the audio path.

The engine keeps two: model-rate input waiting for a whole model block, and
device-rate output waiting to be handed out a period at a time.  Reads and
writes copy into and out of caller-owned arrays; nothing is allocated after
construction.
"""

from __future__ import annotations

import numpy as np

from wavae.errors import WavaeError


class FifoError(WavaeError, RuntimeError):
    """The FIFO over- or underflowed: the engine's buffering arithmetic is wrong."""


class Fifo:
    def __init__(self, capacity: int, dtype=np.float32):
        if capacity <= 0:
            raise ValueError(f"FIFO capacity must be positive, got {capacity}")
        self._buf = np.zeros(int(capacity), dtype)
        self._read = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._buf.size

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._read = 0
        self._size = 0

    def write(self, x: np.ndarray) -> None:
        n = x.shape[0]
        cap = self._buf.size
        if self._size + n > cap:
            raise FifoError(f"FIFO overflow: {self._size} + {n} samples > capacity {cap}")
        w = (self._read + self._size) % cap
        first = min(n, cap - w)
        self._buf[w : w + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self._size += n

    def write_zeros(self, n: int) -> None:
        cap = self._buf.size
        if self._size + n > cap:
            raise FifoError(f"FIFO overflow: {self._size} + {n} samples > capacity {cap}")
        w = (self._read + self._size) % cap
        first = min(n, cap - w)
        self._buf[w : w + first] = 0
        if first < n:
            self._buf[: n - first] = 0
        self._size += n

    def read_into(self, out: np.ndarray) -> None:
        """Move ``len(out)`` samples into ``out`` (oldest first)."""
        n = out.shape[0]
        if n > self._size:
            raise FifoError(f"FIFO underflow: {n} samples wanted, {self._size} buffered")
        cap = self._buf.size
        r = self._read
        first = min(n, cap - r)
        out[:first] = self._buf[r : r + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        self._read = (r + n) % cap
        self._size -= n
