"""Controls: the snapshot API, the engine's smoothing, and control scripts."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest

from wavae.device.controls import ControlError, Controls, ControlScript, parse_set
from wavae.device.smoothing import SCALARS, ControlSmoother


def test_snapshot_is_immutable_and_replaced_on_set():
    c = Controls(4)
    s0 = c.snapshot
    c.set("scale", 2.0)
    c.set_bias(2, -1.5)
    s1 = c.snapshot
    assert s1 is not s0 and s1.version > s0.version
    assert (s0.scale, s0.bias) == (1.0, (0.0,) * 4)  # the old snapshot did not change
    assert (s1.scale, s1.bias) == (2.0, (0.0, 0.0, -1.5, 0.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.scale = 3.0
    assert c.get("bias.2") == -1.5 and c.get("scale") == 2.0


def test_values_are_normalised_and_validated():
    c = Controls(2)
    c.update({"freeze": "on", "loudness_source": 1, "generative": 0})
    s = c.snapshot
    assert s.freeze is True and s.loudness_source == "manual" and s.generative is False
    for name, value, match in [
        ("scale", 9.0, "range"),
        ("feedback_gain", -0.1, "range"),
        ("noise", "loud", "number"),
        ("loudness", float("nan"), "range"),
        ("freeze", 2, "on/off"),
        ("loudness_source", "mic", "input"),
        ("bias.2", 1.0, "0 .. 1"),
        ("bias", [1.0], "list of 2"),
        ("wobble", 1.0, "unknown control 'wobble'"),
    ]:
        with pytest.raises(ControlError, match=match):
            c.set(name, value)
    assert c.snapshot is s  # a refused set changes nothing


def test_parse_set_reads_json_values_and_keeps_bare_words():
    values = parse_set(["feedback_gain=0.4", " bias.1 =-2", "freeze=true", "loudness_source=manual", "bias=[1, 2]"])
    assert values == {"feedback_gain": 0.4, "bias.1": -2, "freeze": True, "loudness_source": "manual",
                      "bias": [1, 2]}
    c = Controls(2)
    c.update(values)  # what --set hands to the controls, checked there
    assert c.snapshot.bias == (1.0, 2.0) and c.snapshot.loudness_source == "manual"
    with pytest.raises(ControlError, match="--set takes NAME=VALUE, got 'feedback_gain'"):
        parse_set(["feedback_gain"])


def test_update_is_atomic_for_a_lock_free_reader():
    """A reader that never locks sees each multi-control update whole or not at all."""
    c = Controls(2)
    stop = threading.Event()
    torn = []

    def reader():
        while not stop.is_set():
            s = c.snapshot  # what the audio path does: one reference load
            if s.bias[0] != s.bias[1]:
                torn.append(s.bias)

    def writer(seed):
        rng = np.random.default_rng(seed)
        for _ in range(2000):
            v = float(rng.uniform(-5, 5))
            c.update({"bias.0": v, "bias.1": v})

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    r.join()
    assert not torn
    assert c.snapshot.version == 6000  # no writer's update was lost


def test_engine_smooths_controls_per_latent_frame(tiny_bundle):
    """A scale step reaches the decoder as a one-pole ramp, one step per latent frame."""
    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine

    bundle = load_bundle(tiny_bundle)
    backend = make_backend(bundle, "onnxruntime")
    P, nf = bundle.block, bundle.frames_per_block  # one period = one block at the model rate
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal(P * 30)).astype(np.float32)

    def latents(smoothing, events):
        eng = Engine(bundle, backend, device_rate=bundle.sample_rate, period=P)
        eng.controls.set("smoothing", smoothing)
        zs = []
        for k in range(30):
            for name, v in events.get(k, {}).items():
                eng.controls.set(name, v)
            eng.process(x[k * P : (k + 1) * P, None])
            zs.append(eng.decoder_input()[0].copy())
        return np.concatenate(zs, axis=1)

    base = latents(0.1, {})
    moved = latents(0.1, {10: {"bias": [1.0] * bundle.latent_dim}})
    a = np.exp(-(bundle.frame / bundle.sample_rate) / 0.1)
    ramp = (moved - base)[:, 10 * nf :]
    expect = 1 - a ** np.arange(1, ramp.shape[1] + 1)
    np.testing.assert_allclose(ramp, np.broadcast_to(expect, ramp.shape), atol=1e-5)
    np.testing.assert_allclose((moved - base)[:, : 10 * nf], 0.0, atol=1e-6)  # nothing before the change
    # smoothing 0 is an immediate step
    step = latents(0.0, {10: {"bias": [1.0] * bundle.latent_dim}}) - base
    np.testing.assert_allclose(step[:, 10 * nf :], 1.0, atol=1e-5)


def test_engine_smoothing_lands_exactly_on_the_target(tiny_bundle):
    """A control moved away and back ends exactly on its value, not a denormal or an ulp away from it."""
    from wavae.device.backends import make_backend
    from wavae.device.bundle import load_bundle
    from wavae.device.engine import Engine

    bundle = load_bundle(tiny_bundle)
    eng = Engine(bundle, make_backend(bundle, "onnxruntime"), device_rate=bundle.sample_rate, period=bundle.block)
    P, D = bundle.block, bundle.latent_dim
    x = np.zeros((P, 1), np.float32)
    away = {"output_gain": 2.0, "feedback_gain": 0.3, "scale": 0.5, "noise": 0.1, "bias": [1.0] * D}
    back = {"output_gain": 1.0, "feedback_gain": 0.0, "scale": 1.0, "noise": 0.0, "bias": [0.0] * D}
    eng.controls.update(away)
    for _ in range(20):
        eng.process(x)
    eng.controls.update(back)
    seconds = 2.0  # 40 time constants of the default smoothing (50 ms): 1e-7 is reached in 16
    for _ in range(int(seconds * bundle.sample_rate / P)):
        eng.process(x)
    sm = eng.smoother
    for name in ("output_gain", "feedback_gain", "scale", "noise"):
        assert sm.value(name) == sm.target(name), name
    assert sm.value("output_gain") == 1.0 and sm.value("feedback_gain") == 0.0
    assert not np.any(sm.bias)  # the bias knobs are back at exactly 0


def test_a_settled_smoother_stays_put_until_a_new_target():
    c = Controls(4)
    sm = ControlSmoother(4, 0.004)
    assert sm.retarget(c.snapshot) and sm.settled  # the first snapshot is taken as it is
    c.update({"scale": 0.5, "bias": [1.0, 0.0, 0.0, 0.0], "smoothing": 0.05})
    assert not sm.retarget(c.snapshot) and not sm.settled
    sm.step()
    assert 0.5 < sm.value("scale") < 1.0 and 0.0 < sm.bias[0] < 1.0  # gliding
    for _ in range(2000):
        sm.step()
        if sm.settled:
            break
    assert sm.settled and sm.value("scale") == 0.5 and sm.bias[0] == 1.0  # landed exactly
    before = sm.bias.copy(), [sm.value(n) for n in SCALARS]
    sm.step()
    assert np.array_equal(sm.bias, before[0]) and [sm.value(n) for n in SCALARS] == before[1]
    c.update({"scale": 1.0})
    sm.retarget(c.snapshot)
    sm.step()
    assert not sm.settled and 0.5 < sm.value("scale") < 1.0  # a new target glides again
    sm.reset()
    assert not sm.settled


def test_control_script_parses_sorts_and_applies_by_frames(tmp_path):
    c = Controls(3)
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"events": [
        {"t": 1.0, "control": "freeze", "value": True},
        {"t": 0.0, "control": "bias.1", "value": 0.5},
        {"t": 0.5, "control": "feedback_gain", "value": 0.3},
        {"t": 0.5, "control": "feedback_gain", "value": 0.4},
    ]}))
    script = ControlScript.load(p, c)
    assert [e.t for e in script.events] == [0.0, 0.5, 0.5, 1.0]
    rate, period = 1000, 100
    applied = []
    for frame in range(0, 1200, period):
        applied.append(script.apply(c, frame, period, rate))
    # t=0 in the first period, both t=0.5 events in the period starting at 500, t=1.0 at 1000
    assert applied == [1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0]
    assert c.snapshot.bias[1] == 0.5 and c.snapshot.feedback_gain == 0.4 and c.snapshot.freeze
    assert script.done
    script.rewind()
    assert not script.done


def test_control_script_unknown_control_is_refused_at_load(tmp_path):
    c = Controls(8)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"events": [
        {"t": 0.0, "control": "scale", "value": 1.0},
        {"t": 2.0, "control": "reverb", "value": 0.5},
    ]}))
    with pytest.raises(ControlError, match=r"event 1: unknown control 'reverb'; known controls: bias.0 .. bias.7"):
        ControlScript.load(p, c)
    p.write_text(json.dumps({"events": [{"t": 0.0, "control": "bias.8", "value": 1.0}]}))
    with pytest.raises(ControlError, match=r"dimensions 0 .. 7"):
        ControlScript.load(p, c)


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"),
    ('[1, 2]', '"events" list'),
    ('{"events": [{"t": -1, "control": "scale", "value": 1}]}', "seconds >= 0"),
    ('{"events": [{"time": 0, "control": "scale", "value": 1}]}', "each event is"),
    ('{"events": [], "extra": 1}', "unknown top-level"),
    ('{"events": [{"t": 0, "control": "scale", "value": 99}]}', "outside its range"),
])
def test_control_script_malformed(tmp_path, text, match):
    p = tmp_path / "m.json"
    p.write_text(text)
    with pytest.raises(ControlError, match=match):
        ControlScript.load(p, Controls(2))
