"""Live bundle switching with two real tiny bundles: the chain's crossfade, sample by sample, and the switcher.

Bundle A is conftest's ``tiny_bundle`` (latent 8, block 2 frames); bundle B is
another tiny model with other weights, a latent of 4 and a block of 4 frames,
so its latency differs from A's too.  References are fresh instruments of the
same bundles rendering the same input, so "equals bundle A's / B's output" is
exact: the new engine starts from reset state at the period it is taken.
"""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import synth_audio
from wavae.device.actions import Actions, Rejected
from wavae.device.instrument import Instrument, InstrumentSpec
from wavae.device.live import EngineStep
from wavae.device.switch import BundleSwitcher, Incoming, prime_periods
from wavae.fileio import file_sha256

RATE, PERIOD = 48000, 256


@pytest.fixture
def other_bundle(tiny_bundle_b) -> Path:
    return tiny_bundle_b


def _spec(bundle: Path, period: int = PERIOD, channels: int = 1) -> InstrumentSpec:
    return InstrumentSpec(bundle=bundle, device_rate=RATE, period=period, channels_in=channels,
                          channels_out=channels, warm_up=True)


def _render(engine, x: np.ndarray, period: int = PERIOD) -> np.ndarray:
    out = np.zeros_like(x)
    for k in range(x.shape[0] // period):
        engine.process(x[k * period : (k + 1) * period], out=out[k * period : (k + 1) * period])
    return out


def _input(seconds: float, channels: int = 1) -> np.ndarray:
    x = synth_audio(seconds, RATE, seed=3).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def test_crossfade_goes_from_a_to_b_exactly_at_a_period_boundary(tiny_bundle, other_bundle):
    fade, h = 5, 40  # 5 periods of crossfade; the hand-over at period 40
    x = _input(2.0)
    n = x.shape[0] // PERIOD
    with Instrument.open(_spec(tiny_bundle)) as a, Instrument.open(_spec(other_bundle)) as b, \
            Instrument.open(_spec(tiny_bundle)) as a_ref, Instrument.open(_spec(other_bundle)) as b_ref:
        ya = _render(a_ref.engine, x)
        yb = np.zeros_like(x)
        yb[h * PERIOD :] = _render(b_ref.engine, x[h * PERIOD :])  # B, fresh, from the hand-over on
        prime = prime_periods(b.engine)
        step = EngineStep(a.engine, a.controls, None, RATE, PERIOD, fade_periods=fade)
        out = np.zeros_like(x)
        for k in range(n):
            if k == h:
                step.incoming = Incoming(b.engine, prime, None)
            out[k * PERIOD : (k + 1) * PERIOD] = step(x[k * PERIOD : (k + 1) * PERIOD])
        assert step.switches == 1 and step.engine is b.engine and step.retired is a.engine
    f0, f1 = (h + prime) * PERIOD, (h + prime + fade) * PERIOD  # the crossfade's samples
    assert prime >= 1 and n > h + prime + fade + 10
    # before the fade: bundle A's output, exactly (B listens while it primes, unheard)
    np.testing.assert_array_equal(out[:f0], ya[:f0])
    # after the fade: bundle B's, exactly, aligned with the input from the hand-over on
    np.testing.assert_array_equal(out[f1:], yb[f1:])
    assert np.abs(yb[f1:]).max() > 1e-4  # and B is really heard there (not both silent)
    # the fade: the equal-power mix of the two, finite and bounded by sqrt(2) x the louder one
    t = np.arange(1, f1 - f0 + 1) / (f1 - f0)
    want = np.cos(np.pi * t / 2)[:, None] * ya[f0:f1] + np.sin(np.pi * t / 2)[:, None] * yb[f0:f1]
    seg = out[f0:f1]
    assert np.isfinite(seg).all()
    np.testing.assert_allclose(seg, want, atol=1e-6)
    assert np.abs(seg).max() <= np.sqrt(2) * max(np.abs(ya[f0:f1]).max(), np.abs(yb[f0:f1]).max()) + 1e-6


@pytest.mark.slow
def test_fade_steady_state_allocates_nothing(tiny_bundle, other_bundle):
    """Inside a long crossfade (both engines running, the gains applied): nothing kept over 600
    periods, and no period-sized temporary within one (2048 stereo frames = 16 kB; bound 4 kB)."""
    period, channels, fade = 2048, 2, 2000
    x = _input(1.0, channels)
    periods = [x[k * period : (k + 1) * period] for k in range(x.shape[0] // period)]
    with Instrument.open(_spec(tiny_bundle, period, channels)) as a, \
            Instrument.open(_spec(other_bundle, period, channels)) as b:
        step = EngineStep(a.engine, a.controls, None, RATE, period, fade_periods=fade)
        step.incoming = Incoming(b.engine, 1, None)
        for k in range(60):  # into the fade, caches warm
            step(periods[k % len(periods)])
        assert step.switching
        calls, peak_rise = 600, 0
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for k in range(calls):
                start = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                step(periods[k % len(periods)])
                peak_rise = max(peak_rise, tracemalloc.get_traced_memory()[1] - start)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert step.switching  # all of it inside the fade
    print(f"fade steady state: {grown} bytes kept over {calls} periods, peak rise {peak_rise} bytes in one")
    assert grown < 8 * calls, f"{calls} crossfaded periods kept {grown} bytes"
    assert peak_rise < 4096, f"a crossfaded period made a temporary of {peak_rise} bytes"


# ----------------------------------------------------------------------------
# the switcher: checks, background load, controls carried over, failures
# ----------------------------------------------------------------------------
def _copy_bundle(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        m = json.loads((dst / "manifest.json").read_text())
        edit(m, dst)
        (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _unloadable_graph(m: dict, dst: Path) -> None:
    """Garbage in the encoder graph, its size and checksum updated: every check at request time
    passes (manifest, checksums, contract), and only onnxruntime, in the background, refuses it."""
    rel = m["graphs"]["encoder"]["file"]
    p = dst / rel
    p.write_bytes(b"not an onnx graph" * 64)
    m["files"][rel] = {**m["files"][rel], "sha256": file_sha256(p), "bytes": p.stat().st_size}


class Rig:
    """A chain step pumped by the test (the audio thread), a real switcher and real Actions."""

    def __init__(self, a_path: Path, paths: dict[str, Path], fade: int = 4):
        self.spec = _spec(a_path)
        self.inst = Instrument.open(self.spec)
        self.step = EngineStep(self.inst.engine, self.inst.controls, None, RATE, PERIOD, fade_periods=fade)
        self.switcher = BundleSwitcher(self.spec, paths, self.inst)
        self.actions = Actions(self.inst.controls, bundle=a_path.name, bundles=tuple(paths),
                               switch_bundle=self.switcher.request)
        self.switcher.start(self.step, self.actions)
        self.x = _input(1.0)
        self.k = 0
        self.outputs: list[np.ndarray] = []  # every period played, in order

    def period(self, k: int) -> np.ndarray:
        """The input of period ``k``: the second of audio over and over."""
        i = (k % (self.x.shape[0] // PERIOD)) * PERIOD
        return self.x[i : i + PERIOD]

    def pump(self, periods: int) -> np.ndarray:
        out = np.zeros((periods * PERIOD, 1), np.float32)
        for j in range(periods):
            out[j * PERIOD : (j + 1) * PERIOD] = self.step(self.period(self.k))
            self.k += 1
        self.outputs.append(out)
        return out

    def pump_until(self, done, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out; switcher: {self.switcher.status()}"
            self.pump(1)
            time.sleep(0.001)

    def close(self) -> None:
        self.switcher.close()
        self.inst.close()


def test_switch_through_actions_carries_controls_over_and_closes_the_old_bundle(tiny_bundle, other_bundle):
    paths = {tiny_bundle.name: tiny_bundle, other_bundle.name: other_bundle}
    rig = Rig(tiny_bundle, paths)
    try:
        rig.actions.update({"bias": [1.0, -2.0, 0.5, 0.0, 3.0, 0.0, 0.0, 0.0], "feedback_freq": 800.0,
                            "freeze": True})
        old_controls, old_engine = rig.actions.controls, rig.step.engine
        assert rig.actions.do("bundle.next") == "tiny-b"  # checked at once; loads in the background
        rig.pump_until(lambda: rig.switcher.switched == 1)
        assert rig.step.engine is not old_engine and rig.step.engine.bundle.path == other_bundle
        assert rig.step.retired is None  # the switcher took the old engine back ...
        assert rig.switcher.current.bundle.path == other_bundle
        with pytest.raises(KeyError):  # ... and closed its instrument: its backend's sessions are gone
            rig.inst.backend.init_state("encoder")
        c = rig.actions.controls
        assert c is not old_controls and c.latent_dim == 4 and rig.step.engine.controls is c
        # every control carried over; bias cut to the new latent (dimension 4's 3.0 dropped)
        assert c.get("bias") == (1.0, -2.0, 0.5, 0.0)
        assert c.get("feedback_freq") == 800.0 and c.get("freeze") is True
        st = rig.switcher.status()
        assert st["bundle_playing"] == "tiny-b" and st["bundle_switch"]["state"] == "idle"
        # back again: the 4 biases come back padded with zeros, and the sound goes on
        rig.actions.set("bias.0", -1.0)
        assert rig.actions.select_bundle(tiny_bundle.name) == tiny_bundle.name
        rig.pump_until(lambda: rig.switcher.switched == 2)
        assert rig.actions.controls.get("bias") == (-1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0)
        y = rig.pump(50)
        assert np.isfinite(y).all() and np.abs(y).max() > 1e-4
    finally:
        rig.close()


def test_a_bundle_that_cannot_load_leaves_the_playing_one_and_says_why(tiny_bundle, other_bundle, tmp_path):
    def damage(m, dst):
        (dst / m["graphs"]["decoder"]["file"]).write_bytes(b"x" * (dst / m["graphs"]["decoder"]["file"]).stat().st_size)

    paths = {
        tiny_bundle.name: tiny_bundle,
        "gone": tmp_path / "gone",
        "corrupt": _copy_bundle(other_bundle, tmp_path / "corrupt", damage),
        "rate": _copy_bundle(other_bundle, tmp_path / "rate", lambda m, d: m.update(sample_rate=100000)),
        "latent": _copy_bundle(other_bundle, tmp_path / "latent", lambda m, d: m.update(latent_dim=5)),
        "graph": _copy_bundle(other_bundle, tmp_path / "graph", _unloadable_graph),
    }
    rig = Rig(tiny_bundle, paths)
    try:
        rig.pump(40)
        # refused at once, with the reason: missing, damaged, a rate the engine cannot serve, a wrong latent
        for name, why in [("gone", "does not exist"), ("corrupt", "fails its checksum"),
                          ("rate", "serves models at 8000-96000 Hz"), ("latent", "damaged"),
                          ("nope", "unknown bundle 'nope'")]:
            with pytest.raises(Rejected, match=why) as e:
                rig.actions.select_bundle(name)
            if name != "nope":
                assert f"{tiny_bundle.name} keeps playing" in str(e.value)
            rig.pump(5)
        assert rig.actions.bundle == tiny_bundle.name
        # accepted, then refused by onnxruntime in the background: counted, logged, status says why
        rig.actions.select_bundle("graph")
        assert rig.actions.bundle == "graph"
        rig.pump_until(lambda: rig.switcher.failed == 1)
        rig.pump(40)
        assert rig.actions.rejected["bundle.failed"] == 1
        assert rig.actions.bundle == tiny_bundle.name  # put back to the one playing
        st = rig.switcher.status()["bundle_switch"]
        assert st["state"] == "idle" and st["last_error"].startswith("graph: ")
        assert rig.switcher.playing == tiny_bundle.name and rig.step.switches == 0
        # and bundle A played on, untouched: its output sample for sample
        with Instrument.open(_spec(tiny_bundle)) as ref:
            want = np.concatenate([ref.engine.process(rig.period(k)).copy() for k in range(rig.k)])
        np.testing.assert_array_equal(np.concatenate(rig.outputs), want)
    finally:
        rig.close()


def test_a_reload_switches_to_a_new_start_bundle_and_keeps_the_old_one_when_it_cannot_load(
        tiny_bundle, other_bundle, tmp_path):
    """``[bundle]`` on SIGHUP (``wavae.device.reload``): a new list is applied and the bundle playing plays
    on; a new start bundle is switched to through the switcher and waited for; one that onnxruntime refuses
    in the background leaves the old one playing and ``[bundle]`` as it was, and the answer says why."""
    from wavae.device.config import load_config
    from wavae.device.reload import ConfigReloader

    graph = _copy_bundle(other_bundle, tmp_path / "graph", _unloadable_graph)
    cfg_path = tmp_path / "d.toml"
    cfg_path.write_text(f'[bundle]\npath = "{tiny_bundle}"\n')
    rig = Rig(tiny_bundle, {tiny_bundle.name: tiny_bundle})
    reloader = ConfigReloader(lambda: load_config(cfg_path), load_config(cfg_path), rig.actions, lambda s: None,
                              switcher=rig.switcher, pause=lambda s: rig.pump(2))  # the audio goes on meanwhile
    a, b = tiny_bundle.name, other_bundle.name
    try:
        rig.pump(20)
        cfg_path.write_text(f'[bundle]\npath = "{tiny_bundle}"\npaths = ["{tiny_bundle}", "{other_bundle}"]\n')
        assert reloader() == f"[bundle] applied: {a}, {b}; {a} plays on"
        assert tuple(rig.switcher.paths) == (a, b) and rig.actions.bundles == (a, b)
        assert rig.switcher.playing == a and rig.step.switches == 0
        # accepted at the check, refused by onnxruntime on the loader thread
        cfg_path.write_text(f'[bundle]\npath = "{graph}"\n')
        what = reloader()
        assert what.startswith("bundle graph: ") and f"{a} keeps playing; [bundle] kept as it was" in what, what
        assert rig.switcher.playing == a and rig.step.switches == 0 and rig.actions.bundle == a
        assert rig.actions.bundles == (a, b) and reloader.current.bundle.path == tiny_bundle
        # a good one: switched, crossfaded, and the config is the file's from now on
        cfg_path.write_text(f'[bundle]\npath = "{other_bundle}"\n')
        assert reloader() == f"bundle {b} playing"
        assert rig.switcher.playing == b and rig.step.switches == 1 and rig.actions.bundle == b
        assert rig.actions.controls.latent_dim == 4 and reloader.current.bundle.path == other_bundle
        assert reloader() == "no change"
        y = rig.pump(20)
        assert np.isfinite(y).all() and np.abs(y).max() > 1e-4
    finally:
        rig.close()
