"""The live loop puts capture and playback back in step when they drift apart without an xrun.

Through JACK each PCM is a client of its own; under load one of them can miss a
cycle, and the two streams move a period apart with no xrun for alsa-lib to
report (``wavae.device.audio_io``, "Drift").  Here the alsaaudio stand-in runs
paced (``FakeAlsa(paced=True)``: one clock for both streams) and the test moves
the playback stream a period away from the capture one, as the server does.
The processing step sleeps a period per call, so the loop runs at about device
pace and the drift's confirmation (wall time) takes a few periods, as it would.
"""

from __future__ import annotations

import time

import numpy as np

from alsa_helpers import FakeAlsa
from wavae.device import audio_io
from wavae.device.audio_io import ALIGN_CONFIRM_PERIODS
from wavae.device.config import AudioConfig, ServiceConfig

RATE, PERIOD, PREFILL = 48000, 256, 2
PERIODS = 40
SHIFT_AT = 10


def _run(monkeypatch, shifts: dict[int, int]):
    """Run 40 periods; ``shifts[k]`` is set as the playback's shift during call k.

    Returns (stats, the capture period each call got, the playback stream in
    periods (each one value), the frames queued before each write).
    """
    fake = FakeAlsa(lambda pcm: (PERIOD, np.full(PERIOD, pcm.reads, "<i2").tobytes()), paced=True)
    monkeypatch.setattr(audio_io, "alsaaudio", fake)
    audio = AudioConfig(capture="fakecap", playback="fakeplay", rate=RATE, period_size=PERIOD, periods=3,
                        prefill_periods=PREFILL, format="S16_LE")
    d = audio_io.AlsaDuplex(audio, ServiceConfig(), source="test.toml")
    got, queued = [], []

    def process(x):
        k = len(got)
        got.append(int(x[0, 0] * 32768))
        queued.append(d.playback_queued())
        if k in shifts:
            fake.shift = shifts[k]
        time.sleep(PERIOD / RATE)
        return np.full((PERIOD, 1), (k + 1) / 32768, np.float32)  # call k writes the value k + 1

    st = d.run(process, max_frames=PERIODS * PERIOD)
    d.close()
    out = np.frombuffer(bytes(fake.pcm("playback0").written), "<i2").reshape(-1, PERIOD)
    assert (out == out[:, :1]).all()
    return st, got, out[:, 0].tolist(), queued


def _confirm_window():
    # the drift is first measured at the read after SHIFT_AT, confirmed a few periods later
    return range(SHIFT_AT + 2, SHIFT_AT + ALIGN_CONFIRM_PERIODS + 4)


def test_playback_a_period_short_gets_a_period_of_silence_once(monkeypatch):
    """Capture lost a cycle: the slack before playback runs dry is gone; one period of silence restores it."""
    st, got, out, queued = _run(monkeypatch, {SHIFT_AT: PERIOD})
    assert st.realigns == 1 and st.xruns == 0
    assert got == list(range(1, len(got) + 1))  # every captured period processed, none dropped
    assert out[:PREFILL] == [0] * PREFILL
    played = out[PREFILL:]
    (gap,) = [i for i, v in enumerate(played) if v == 0]  # one period of silence inserted ...
    assert gap in _confirm_window()
    assert played[:gap] + played[gap + 1:] == list(range(1, len(got) + 1))  # ... and no output lost
    target = (PREFILL - 1) * PERIOD
    assert queued[SHIFT_AT + 1] == target - PERIOD  # the drift, as the loop saw it
    assert queued[gap:] == [target] * (len(queued) - gap)  # back in step, and it stays there


def test_playback_a_period_long_drops_one_captured_period(monkeypatch):
    """Playback lost a cycle: the round trip grew by a period; dropping one captured period restores it."""
    st, got, out, queued = _run(monkeypatch, {SHIFT_AT: -PERIOD})
    assert st.realigns == 1 and st.xruns == 0
    (skipped,) = [k for k in range(1, got[-1] + 1) if k not in got]  # one captured period never processed
    assert skipped - 1 in _confirm_window()
    assert out == [0] * PREFILL + list(range(1, len(got) + 1))  # no silence inserted, nothing else lost
    target = (PREFILL - 1) * PERIOD
    assert queued[SHIFT_AT + 1] == target + PERIOD
    assert queued[skipped:] == [target] * (len(queued) - skipped)


def test_a_misalignment_seen_for_one_period_only_is_left_alone(monkeypatch):
    """A measurement taken between the two streams' halves of one cycle lasts less than a period: not a drift."""
    st, got, out, queued = _run(monkeypatch, {SHIFT_AT: PERIOD, SHIFT_AT + 1: 0})
    target = (PREFILL - 1) * PERIOD
    assert queued[SHIFT_AT + 1] == target - PERIOD  # it was seen
    assert st.realigns == 0 and st.xruns == 0
    assert out == [0] * PREFILL + list(range(1, len(got) + 1))
