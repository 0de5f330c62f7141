"""MIDI in through JACK MIDI under a private ``jackd -d dummy`` (no ALSA sequencer on this machine).

A test client opens a virtual output port and sends real MIDI; ``MidiInput``
finds that port by name on the JACK API, as it finds a controller's port on
the ALSA sequencer on the device.
"""

from __future__ import annotations

import logging
import shutil
import time

import pytest

from alsa_helpers import JackServer

mido = pytest.importorskip("mido", reason="mido is not installed (pip install 'wavae-edge[panel]')")
rtmidi = pytest.importorskip("rtmidi", reason="python-rtmidi is not installed (pip install 'wavae-edge[panel]')")

from wavae.device.actions import Actions  # noqa: E402
from wavae.device.controls import Controls  # noqa: E402
from wavae.device.midi import MidiInput  # noqa: E402
from wavae.device.panel.mapping import parse_mapping  # noqa: E402
from wavae.device.presets import PresetStore  # noqa: E402


def _why_not() -> str | None:
    if shutil.which("jackd") is None:
        return "jackd is not installed (apt-get install -y --no-install-recommends jackd2)"
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        return "this python-rtmidi build has no JACK support"
    return None


pytestmark = [pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")]

MAPPING = {
    "midi_cc": [
        {"cc": 1, "target": "bias.0", "range": [-3.0, 3.0]},
        {"cc": 74, "target": "feedback_freq", "range": [40.0, 8000.0], "curve": "log"},
        {"cc": 7, "channel": 2, "target": "output_gain", "range": [0.0, 2.0]},
        {"cc": 64, "target": "freeze"},
        {"cc": 20, "target": "preset.next"},
    ],
    "midi_program": {"selects": "preset"},
}


@pytest.fixture
def jack(tmp_path, monkeypatch):
    server = JackServer(tmp_path)
    try:
        server.start()
        for k, v in server.env({}).items():
            monkeypatch.setenv(k, v)
        yield server
    finally:
        server.stop()


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_cc_and_program_change_through_jack_midi(jack, tmp_path):
    m = parse_mapping(MAPPING, latent_dim=4, source="panel.toml")
    controls = Controls(4)
    store = PresetStore(tmp_path / "presets")
    actions = Actions(controls, store)
    for name, gain in (("b-loud", 1.5), ("a-soft", 0.5)):  # a-soft is the current preset
        controls.set("output_gain", gain)
        actions.save_preset(name)
    controls.set("output_gain", 1.0)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    out = backend.open_output("wavae-test-controller", virtual=True)
    midi = MidiInput(actions, m.midi_cc, m.program_selects, port="wavae-test-controller", api="jack")
    try:
        midi.open()
        assert "wavae-test-controller" in midi.port_name
        time.sleep(0.2)  # let JACK connect the ports
        out.send(mido.Message("control_change", channel=0, control=1, value=127))
        out.send(mido.Message("control_change", channel=0, control=74, value=0))
        out.send(mido.Message("control_change", channel=0, control=64, value=100))
        out.send(mido.Message("control_change", channel=0, control=7, value=127))  # channel 1: not mapped
        assert _wait(lambda: midi.received >= 4)
        assert controls.get("bias.0") == pytest.approx(3.0)
        assert controls.get("feedback_freq") == pytest.approx(40.0)
        assert controls.get("freeze") is True
        assert controls.get("output_gain") == 1.0 and midi.unmapped == 1
        out.send(mido.Message("control_change", channel=1, control=7, value=127))  # channel 2: mapped
        out.send(mido.Message("program_change", channel=0, program=1))
        assert _wait(lambda: actions.preset == "b-loud")
        assert controls.get("output_gain") == 1.5  # the preset's value, after the CC's 2.0
        out.send(mido.Message("program_change", channel=0, program=9))  # no preset 9: refused
        assert _wait(lambda: actions.rejected["midi.refused"] == 1)
        out.send(mido.Message("control_change", channel=0, control=20, value=127))  # preset.next, once
        out.send(mido.Message("control_change", channel=0, control=20, value=90))
        assert _wait(lambda: midi.received >= 9)
        assert actions.preset == "a-soft"  # b-loud -> wraps to a-soft, once
    finally:
        midi.stop()
        out.close()


def test_missing_port_is_logged_once_and_found_when_it_appears(jack, caplog):
    actions = Actions(Controls(2))
    midi = MidiInput(actions, port="late-controller", api="jack", retry_s=0.1)
    with caplog.at_level(logging.INFO, logger="wavae.device.midi"):
        midi.start()
        try:
            time.sleep(0.6)
            backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
            out = backend.open_output("late-controller", virtual=True)
            assert _wait(lambda: midi.port is not None)
            out.close()
        finally:
            midi.stop()
    warnings = [r for r in caplog.records if "no MIDI input port matching 'late-controller'" in r.getMessage()]
    assert len(warnings) == 1
    assert any("MIDI: back" in r.getMessage() for r in caplog.records)
