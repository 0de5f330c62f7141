"""The soak benchmark's pieces, and a two-minute soak of the real live loop (benchmarks/soak.py).

The fast test checks what the soak relies on: the ``[debug]`` fault injector
repeats its stall every ``stall_every_s`` of audio.  The slow one runs the
soak itself for two minutes (``make test``; the 60-minute figures are a
benchmark, in docs/benchmarks/soak.md) and asserts its two hard properties:
no unrecovered xrun, and no RSS growth beyond a few MB, on a busy machine.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from alsa_helpers import jackd_available
from wavae.device.config import DebugConfig
from wavae.device.live import FaultInjector

RATE, PERIOD = 48000, 256
_why = jackd_available()


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


# ----------------------------------------------------------------------------
# two minutes of the real live loop under JACK dummy, with traffic and faults
# ----------------------------------------------------------------------------
def _soak_module():
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module("soak")


@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_two_minute_soak_has_no_unrecovered_xrun_and_no_rss_growth(tmp_path, tiny_bundle):
    """benchmarks/soak.py for two minutes (the 60-minute figures are in docs/benchmarks/soak.md): OSC at
    50/s, the panel's fakes, presets every 30 s, a bundle switch every 20 s (RSS growth counted from the
    first switch cycle's end), a 150 ms stall every 40 s
    and two phases of one busy process per core.  At realtime priority where allowed, as the service runs."""
    pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")
    pytest.importorskip("pythonosc", reason="python-osc is not installed")
    soak = _soak_module()
    other = tmp_path / "tiny-b"  # a second bundle name for the switch requests
    shutil.copytree(tiny_bundle, other)
    plan = soak.Plan(minutes=2.0, preset_every_s=30.0, switch_every_s=20.0, stall_first_s=30.0,
                     stall_every_s=40.0, load_first_s=40.0, load_every_s=50.0, load_for_s=15.0, warmup_s=30.0)
    r = soak.run_soak(plan, [tiny_bundle, other], tmp_path / "work", log=lambda m: None)
    paths = soak.write_reports(r, tmp_path / "report")
    t = r.totals
    print(json.dumps({k: v for k, v in t.items() if k != "final_osc_status"}))
    assert r.exit_code == 0, r.log_tail
    assert "Traceback" not in r.log_tail
    assert t["xruns_unrecovered"] == 0, r.log_tail
    assert t["rss_growth_mb"] is not None and t["rss_growth_mb"] < 4.0, t  # a leak of a period a second is 60 MB
    # the traffic and the faults reached the instrument
    assert t["stalls_injected"] == 3  # at 30, 70 and 110 s of audio
    assert t["preset_loads"] == 3 and t["final_osc_status"]["preset"] in ("soak-0", "soak-1", "soak-2")
    assert t["bundle_switches"] >= 4 and t["bundle_refused"] == 0, t  # every 20 s, each shown within 10 s
    assert t["rss_from_s"] >= 40.0  # measured after the first cycle, over the later switches
    assert not t["final_osc_status"]["rejected"], t["final_osc_status"]["rejected"]
    assert r.panel["detents"] > 100 and t["final_osc_status"]["controls"]["feedback_freq"] != 1000.0
    assert t["osc_sent"] >= 50 * 110
    assert t["latency_start_ms"] is not None
    assert all(p.stat().st_size > 0 for p in paths.values())
