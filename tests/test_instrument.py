"""The instrument builder: the one assembly that file mode, the live loop and what comes next share.

File mode against the live loop, sample for sample, is tests/test_alsa_file.py;
here: the order in which values land, what fails before the model loads, and
that closing (or failing half-way) gives back what was taken.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from wavae.device.config import DeviceConfigError, parse_config
from wavae.device.controls import ControlError
from wavae.device.engine import EngineError
from wavae.device.instrument import Instrument, InstrumentSpec, timing_line


def _script(tmp_path, events) -> os.PathLike:
    p = tmp_path / "script.json"
    p.write_text(json.dumps({"events": events}))
    return p


def test_config_controls_then_settings_then_the_script(tiny_bundle, tmp_path):
    cfg = parse_config(
        {"bundle": {"path": str(tiny_bundle)},
         "controls": {"bias": [1.0, -2.0], "feedback_gain": 0.3, "scale": 2.0}},
        source="dev.toml",
    )
    script = _script(tmp_path, [{"t": 0.1, "control": "bias.0", "value": 3.0}])
    spec = InstrumentSpec.from_config(cfg, settings={"feedback_gain": 0.5}, script=script)
    assert spec.warm_up and spec.device_rate == cfg.audio.rate and spec.period == cfg.audio.period_size
    with Instrument.open(spec) as inst:
        snap = inst.controls.snapshot
        dims = inst.bundle.latent_dim
        assert snap.bias == (1.0, -2.0) + (0.0,) * (dims - 2)  # the short list, padded
        assert snap.feedback_gain == 0.5  # --set wins over [controls]
        assert snap.scale == 2.0  # [controls] where --set says nothing
        assert [(e.t, e.control, e.value) for e in inst.script.events] == [(0.1, "bias.0", 3.0)]
        assert inst.realtime is False
        # the warm-up ran and left a fresh engine: nothing of it in the stats or timings
        assert inst.engine.stats["blocks"] == 0 and inst.engine.timing() == {"blocks": 0}


def test_a_config_without_a_bundle_plays_the_shipped_model_and_without_one_is_refused(monkeypatch, tmp_path):
    import wavae.device.shipped as shipped

    assert InstrumentSpec.from_config(parse_config({}, source="dev.toml")).bundle == shipped.default_bundle()
    monkeypatch.setattr(shipped, "models_dir", lambda: tmp_path / "no-models")  # a clone without models/
    with pytest.raises(DeviceConfigError, match=r"dev.toml: no bundle: set bundle.path in the config or pass "
                                                r"--bundle DIR \(the shipped default model, .* is not installed\)"):
        InstrumentSpec.from_config(parse_config({}, source="dev.toml"))


def test_bad_controls_fail_before_the_backend_is_made(tiny_bundle, tmp_path):
    # tensorrt cannot run this bundle here (no GPU, or no plan built): reaching it would raise BackendError
    spec = InstrumentSpec(bundle=tiny_bundle, backend="tensorrt")
    with pytest.raises(ControlError, match="control 'feedback_gain' = 9 is outside its range"):
        Instrument.open(dataclasses.replace(spec, settings={"feedback_gain": 9}))
    script = _script(tmp_path, [{"t": 0.0, "control": "distortion", "value": 1}])
    with pytest.raises(ControlError, match="event 0: unknown control 'distortion'"):
        Instrument.open(dataclasses.replace(spec, script=script))
    cfg = parse_config({"bundle": {"path": str(tiny_bundle)}, "controls": {"bias": [0.0] * 40}}, source="dev.toml")
    with pytest.raises(DeviceConfigError, match="dev.toml: controls.bias: this bundle's latent has"):
        Instrument.open(InstrumentSpec.from_config(cfg, backend="tensorrt"))


def test_closing_closes_the_backend(tiny_bundle):
    with Instrument.open(InstrumentSpec(bundle=tiny_bundle)) as inst:
        backend = inst.backend
        assert backend.input_buffers("encoder")
    with pytest.raises(KeyError):  # a closed onnxruntime backend holds no session
        backend.input_buffers("encoder")
    inst.close()  # a second close does nothing


def test_realtime_priority_is_given_back_on_close_and_on_a_failed_open(tiny_bundle):
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    spec = InstrumentSpec(bundle=tiny_bundle, realtime_priority=5)
    try:
        with Instrument.open(spec) as inst:
            if not inst.realtime:
                pytest.skip("this process may not use SCHED_FIFO")
            assert os.sched_getscheduler(0) == os.SCHED_FIFO
        assert os.sched_getscheduler(0) == before[0]
        # the engine refuses the rate after the priority was raised and the backend made: both undone
        with pytest.raises(EngineError, match="device rate 12345 Hz is not supported"):
            Instrument.open(dataclasses.replace(spec, device_rate=12345))
        assert os.sched_getscheduler(0) == before[0]
    finally:
        os.sched_setscheduler(0, *before)


def test_timing_line_is_none_before_a_block_then_one_line(tiny_bundle):
    with Instrument.open(InstrumentSpec(bundle=tiny_bundle)) as inst:
        engine = inst.engine
        assert timing_line(engine) is None
        x = np.zeros((engine.period, 1), np.float32)
        while engine.stats["blocks"] < 3:
            engine.process(x)
        line = timing_line(engine)
    assert line.startswith(f"per block ({engine.block} samples, ") and line.endswith("over 3 blocks")
    assert "\n" not in line
