"""OSC in, over real UDP on loopback: the address space, status replies, and refusals that never crash."""

from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from wavae.device.actions import Actions  # noqa: E402
from wavae.device.controls import Controls  # noqa: E402
from wavae.device.osc import OscError, OscServer  # noqa: E402
from wavae.device.presets import PresetStore  # noqa: E402


def _msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.fixture
def osc(tmp_path):
    controls = Controls(4)
    actions = Actions(controls, PresetStore(tmp_path / "presets"), bundle="strings",
                      status=lambda: {"xruns": 2, "xruns_unrecovered": 0, "latency_ms": 21.3, "load": 0.4})
    server = OscServer(actions, "127.0.0.1", 0).start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5.0)
    try:
        yield server, actions, controls, client
    finally:
        client.close()
        server.stop()


def _send(server, client, *packets) -> None:
    before = server.received + sum(server.actions.rejected.values())
    for p in packets:
        client.sendto(p, server.address)
    deadline = time.monotonic() + 5
    while server.received + sum(server.actions.rejected.values()) < before + len(packets):
        if time.monotonic() > deadline:
            raise AssertionError("the server did not take the packets in time")
        time.sleep(0.002)


def test_control_messages_set_controls(osc):
    server, actions, controls, client = osc
    _send(server, client, _msg("/wavae/control/bias.0", 1.5), _msg("/wavae/control/feedback_freq", 800),
          _msg("/wavae/control/freeze", True), _msg("/wavae/control/loudness_source", "manual"),
          _msg("/wavae/control/bias", 0.0, 0.5, 1.0, -1.0))
    time.sleep(0.05)
    assert controls.get("feedback_freq") == 800.0 and controls.get("freeze") is True
    assert controls.get("loudness_source") == "manual"
    assert controls.get("bias") == (0.0, 0.5, 1.0, -1.0)
    assert server.applied == 5 and not actions.rejected


def test_status_replies_to_the_sender_with_json(osc):
    server, actions, controls, client = osc
    controls.set("scale", 2.0)
    client.sendto(_msg("/wavae/status"), server.address)
    data, _ = client.recvfrom(65536)
    from pythonosc.osc_message import OscMessage

    reply = OscMessage(data)
    assert reply.address == "/wavae/status"
    st = json.loads(reply.params[0])
    assert st["controls"]["scale"] == 2.0 and st["bundle"] == "strings" and st["preset"] is None
    assert st["xruns"] == 2 and st["xruns_unrecovered"] == 0 and st["latency_ms"] == 21.3 and st["load"] == 0.4
    assert st["uptime_s"] >= 0


def test_presets_over_osc(osc):
    server, actions, controls, client = osc
    controls.set("noise", 0.7)
    _send(server, client, _msg("/wavae/preset/save", "warm"))
    controls.set("noise", 0.0)
    _send(server, client, _msg("/wavae/preset/load", "warm"))
    time.sleep(0.05)
    assert controls.get("noise") == 0.7 and actions.preset == "warm"


def test_bad_messages_are_counted_never_applied_and_never_crash(osc):
    server, actions, controls, client = osc
    before = controls.snapshot
    _send(
        server, client,
        b"\x00garbage that is not OSC",
        _msg("/wavae/control/feedbak_gain", 0.3),
        _msg("/wavae/control/scale", 99.0),
        _msg("/wavae/control/scale", "loud"),
        _msg("/wavae/control/scale", 1.0, 2.0),
        _msg("/wavae/control/bias.9", 1.0),
        _msg("/wavae/preset/load", "missing"),
        _msg("/wavae/preset/save", "../../etc/passwd"),
        _msg("/wavae/bundle", "screams"),
        _msg("/wavae/explode"),
    )
    time.sleep(0.05)
    assert controls.snapshot is before  # nothing applied
    r = actions.rejected
    assert r["osc.malformed"] == 1
    assert r["osc.unknown_control"] == 2
    assert r["osc.bad_value"] == 3
    assert r["osc.refused"] == 3  # no such preset, bad name, no live bundle switching
    assert r["osc.unknown_address"] == 1
    _send(server, client, _msg("/wavae/control/scale", 1.5))  # still serving
    time.sleep(0.05)
    assert controls.get("scale") == 1.5


def test_port_in_use_is_a_clear_error(osc):
    server, actions, *_ = osc
    with pytest.raises(OscError, match="cannot listen for OSC on 127.0.0.1:.*another program"):
        OscServer(actions, "127.0.0.1", server.address[1]).start()
