"""The soak benchmark's pieces, and a two-minute soak of the real live loop (benchmarks/soak.py).

The fast tests check what the soak relies on: the ``[debug]`` fault injector
repeats its stall every ``stall_every_s`` of audio.
"""

from __future__ import annotations

import numpy as np

from wavae.device.config import DebugConfig
from wavae.device.live import FaultInjector

RATE, PERIOD = 48000, 256


def test_fault_injector_repeats_the_stall_every_stall_every_s_of_audio(monkeypatch):
    slept: list[tuple[int, float]] = []
    frame = [0]
    monkeypatch.setattr("wavae.device.live.time.sleep", lambda s: slept.append((frame[0], s)))
    x = np.zeros((PERIOD, 1), np.float32)
    inj = FaultInjector(lambda v: v, DebugConfig(stall_ms=150.0, stall_at_s=1.0, stall_every_s=2.0), RATE, PERIOD)
    for k in range(int(7.5 * RATE) // PERIOD):
        frame[0] = k * PERIOD
        inj(x)
    assert inj.stalls == 4  # at 1, 3, 5 and 7 s of audio
    assert [s for _, s in slept] == [0.15] * 4
    starts = [f / RATE for f, _ in slept]
    assert np.allclose(starts, [1.0, 3.0, 5.0, 7.0], atol=PERIOD / RATE), starts
    once = FaultInjector(lambda v: v, DebugConfig(stall_ms=1.0, stall_at_s=0.5), RATE, PERIOD)
    for _ in range(int(3 * RATE) // PERIOD):
        once(x)
    assert once.stalls == 1  # without stall_every_s: once, as before
