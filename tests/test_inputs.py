"""The inputs assembled from a device config: presets checked, panel, OSC and MIDI started and stopped."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from wavae.device.config import parse_config
from wavae.device.controls import Controls
from wavae.device.inputs import start_inputs
from wavae.device.panel.fakes import FakeGpioLines, FakeMcp3008, press
from wavae.device.panel.mapping import PanelMappingError, load_mapping
from wavae.device.presets import PresetStore
from wavae.device.realtime import GIL_SHARER_PRIORITY

MAPPING = """
[[pot]]
channel = 0
target = "feedback_gain"
range = [0.0, 1.0]
[adc]
takeover = "jump"
[[button]]
line = "GPIO5"
on_press = "freeze"
[[midi_cc]]
cc = 1
target = "bias.0"
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(tmp_path, mapping: str = MAPPING, load: str | None = "start"):
    (tmp_path / "panel.toml").write_text(mapping)
    doc = {"panel": {"mapping": "panel.toml", "adc_hz": 200.0},
           "osc": {"port": _free_port()},
           "presets": {"dir": "presets", **({"load": load} if load else {})}}
    return parse_config(doc, source="device.toml", base_dir=tmp_path)


def test_inputs_start_from_the_config_and_stop(tmp_path):
    cfg = _cfg(tmp_path)
    controls = Controls(4)
    store = PresetStore(cfg.presets.dir)
    controls.set("scale", 2.5)
    store.save("start", controls, "b")
    controls.set("scale", 1.0)
    (cfg.presets.dir / "junk.json").write_text("{")
    mapping = load_mapping(cfg.panel.mapping, 4)
    lines = FakeGpioLines(mapping.input_lines())
    adc = FakeMcp3008([1023] * 8)
    before = threading.active_count()
    inputs = start_inputs(cfg, controls, "b", status=lambda: {"xruns": 0},
                          open_gpio=lambda: lines, open_adc=lambda: adc)
    try:
        assert controls.get("scale") == 2.5 and inputs.actions.preset == "start"  # presets.load
        assert (cfg.presets.dir / "junk.json.corrupt").exists()
        lines.push(press("GPIO5", time.monotonic_ns(), 1))
        deadline = time.monotonic() + 5
        while (controls.get("feedback_gain") != 1.0 or not controls.get("freeze")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert controls.get("feedback_gain") == 1.0 and controls.get("freeze") is True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            from pythonosc.osc_message import OscMessage
            from pythonosc.osc_message_builder import OscMessageBuilder

            c.settimeout(5)
            c.sendto(OscMessageBuilder("/wavae/status").build().dgram, inputs.osc.address)
            st = json.loads(OscMessage(c.recvfrom(65536)[0]).params[0])
        assert st["preset"] == "start" and st["controls"]["freeze"] is True
    finally:
        inputs.stop()
    assert threading.active_count() == before
    assert lines.closed and adc.closed


def test_bad_mapping_is_a_start_up_error_and_nothing_keeps_running(tmp_path):
    cfg = _cfg(tmp_path, MAPPING.replace('target = "bias.0"', 'target = "bias.4"'), load=None)
    before = threading.active_count()
    with pytest.raises(PanelMappingError, match=r"panel.toml: midi_cc\[0\].target: .*dimensions 0 .. 3"):
        start_inputs(cfg, Controls(4), "b")
    assert threading.active_count() == before


def test_input_threads_run_below_a_realtime_caller_panel_ordinary_osc_lowest_realtime(tmp_path):
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        pytest.skip(f"SCHED_FIFO is not permitted here ({e})")
    cfg = _cfg(tmp_path, load=None)
    mapping = load_mapping(cfg.panel.mapping, 4)
    result = {}

    def realtime_caller():  # what the live loop does: SCHED_FIFO first, inputs later
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        inputs = start_inputs(cfg, Controls(4), "b", open_gpio=lambda: FakeGpioLines(mapping.input_lines()),
                              open_adc=lambda: FakeMcp3008())
        try:
            time.sleep(0.2)
            result["caller"] = os.sched_getscheduler(0)
            result["panel"] = os.sched_getscheduler(inputs.panel.thread_id)
            result["osc"] = (os.sched_getscheduler(inputs.osc.thread_id),
                             os.sched_getparam(inputs.osc.thread_id).sched_priority)
        finally:
            inputs.stop()

    t = threading.Thread(target=realtime_caller)
    t.start()
    t.join(10)
    # OSC holds the GIL the audio thread needs while it answers: no ordinary process may preempt it there
    assert result == {"caller": os.SCHED_FIFO, "panel": os.SCHED_OTHER, "osc": (os.SCHED_FIFO, GIL_SHARER_PRIORITY)}
    assert GIL_SHARER_PRIORITY < 10  # below the caller's (the audio thread's) priority



def test_apply_restarts_only_what_changed_and_a_port_in_use_leaves_the_old_server(tmp_path):
    import dataclasses

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    from wavae.device.config import OscConfig, PresetsConfig
    from wavae.device.inputs import plan_inputs
    from wavae.device.osc import OscError

    def status(address) -> dict:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(OscMessageBuilder("/wavae/status").build().dgram, address)
            return json.loads(OscMessage(c.recvfrom(65536)[0]).params[0])

    cfg = _cfg(tmp_path, load=None)
    mapping = load_mapping(cfg.panel.mapping, 4)
    inputs = start_inputs(cfg, Controls(4), "b", open_gpio=lambda: FakeGpioLines(mapping.input_lines()),
                          open_adc=lambda: FakeMcp3008())
    try:
        panel, osc = inputs.panel, inputs.osc
        assert inputs.apply(plan_inputs(cfg, 4)) == ()  # the same files read again: nothing restarts
        assert inputs.panel is panel and inputs.osc is osc
        # a port another program holds: refused, and the old server listens on as before
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            taken = dataclasses.replace(cfg, osc=OscConfig(port=other.getsockname()[1]))
            with pytest.raises(OscError, match="cannot listen for OSC"):
                inputs.apply(plan_inputs(taken, 4))
        assert inputs.osc is osc and inputs.plan.osc == cfg.osc
        assert status(osc.address)["bundle"] == "b"
        # a MIDI CC retargeted in the mapping, and another preset folder: the panel and OSC are untouched
        (tmp_path / "panel.toml").write_text(MAPPING.replace('target = "bias.0"', 'target = "bias.1"'))
        moved = dataclasses.replace(cfg, presets=PresetsConfig(dir=tmp_path / "other"))
        assert inputs.apply(plan_inputs(moved, 4)) == ("presets",)
        assert inputs.panel is panel and inputs.osc is osc
        assert inputs.actions.presets.dir == tmp_path / "other" and (tmp_path / "other").is_dir()
    finally:
        inputs.stop()


def test_osc_thread_stays_ordinary_when_the_loop_is_not_realtime(tmp_path):
    cfg = _cfg(tmp_path, load=None)
    mapping = load_mapping(cfg.panel.mapping, 4)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    inputs = start_inputs(cfg, Controls(4), "b", open_gpio=lambda: FakeGpioLines(mapping.input_lines()),
                          open_adc=lambda: FakeMcp3008())
    try:
        time.sleep(0.2)
        assert os.sched_getscheduler(inputs.osc.thread_id) == os.SCHED_OTHER
    finally:
        inputs.stop()
