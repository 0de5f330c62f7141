"""The panel: real decoders, filters, takeover, mapping and presets over fakes of gpiod and spidev only.

The fakes (``wavae.device.panel.fakes``) stand in for the kernel: a line
request whose edges a test scripts, and an MCP3008 answering ``xfer2``.  Contact
bounce, fast spins, long presses, ADC noise, a missing chip and a dead bus go
through the same code the instrument runs.
"""

from __future__ import annotations

import logging

import pytest

from wavae.device.actions import Actions
from wavae.device.controls import Controls
from wavae.device.panel.encoders import ButtonDecoder, QuadratureDecoder
from wavae.device.panel.fakes import FakeGpioLines, FakeMcp3008, press, turn
from wavae.device.panel.gpio import PanelHardwareError
from wavae.device.panel.mapping import Curve, PanelMappingError, example_mappings, load_mapping, parse_mapping
from wavae.device.panel.panel import Panel
from wavae.device.panel.pots import PotFilter, Takeover
from wavae.device.presets import PresetStore

MS = 1_000_000
LATENT = 8


# --------------------------------------------------------------------------- encoders
def _feed(dec: QuadratureDecoder, edges, lines=("A", "B")) -> int:
    total = 0
    for line, level, t in edges:
        total += dec.edge("a" if line == lines[0] else "b", level, t)
    return total


def test_encoder_counts_clean_detents_both_ways():
    dec = QuadratureDecoder(accel_ms=0)
    assert _feed(dec, turn("A", "B", 5, 0)) == 5
    assert _feed(dec, turn("A", "B", -3, 10**9)) == -3
    assert dec.count == 2 and dec.invalid == 0


def test_encoder_contact_bounce_is_dropped():
    dec = QuadratureDecoder(accel_ms=0)
    assert _feed(dec, turn("A", "B", 7, 0, bounce=3)) == 7
    assert dec.count == 7


def test_encoder_half_turn_and_back_counts_nothing():
    dec = QuadratureDecoder(accel_ms=0)
    edges = [("A", 0, 0), ("B", 0, 1), ("B", 1, 2), ("A", 1, 3)]  # two steps forward, two back
    assert _feed(dec, edges) == 0


def test_encoder_jump_of_two_states_is_dropped_but_the_click_counts():
    dec = QuadratureDecoder(accel_ms=0)
    assert dec.edge("a", 0, 0) == 0  # 11 -> 01: +1
    # a resync after a kernel buffer overflow reads both lines at once: 01 -> 10, two steps
    dec.a = 1
    assert dec.edge("b", 0, 1) == 0
    assert dec.invalid == 1
    assert dec.edge("b", 1, 2) == 1  # 10 -> 11: at rest with half a detent counted: one click
    assert dec.count == 1


def test_encoder_fast_spin_accelerates():
    slow = QuadratureDecoder(accel_ms=40, max_accel=5)
    assert _feed(slow, turn("A", "B", 10, 0, detent_ns=100 * MS)) == 10
    fast = QuadratureDecoder(accel_ms=40, max_accel=5)
    n = _feed(fast, turn("A", "B", 10, 0, detent_ns=8 * MS))
    assert fast.count == 10
    assert n == 1 + 9 * 5  # the first click has nothing to compare with; then 40 / 8 = x5


# --------------------------------------------------------------------------- buttons
def test_button_bounce_gives_one_press():
    b = ButtonDecoder(debounce_ms=5, long_press_ms=600)
    events = [ev for line, level, t in press("B", 0, 100 * MS, bounce=4) for ev in b.edge(level, t)]
    assert events == ["down", "up", "short"]
    assert b.presses == 1


def test_button_long_press_fires_while_held_and_not_again_on_release():
    b = ButtonDecoder(debounce_ms=5, long_press_ms=600)
    assert b.edge(0, 0) == ["down"]
    assert not b.poll(500 * MS)
    assert b.poll(650 * MS)
    assert not b.poll(700 * MS)
    assert b.edge(1, 900 * MS) == ["up"]


# --------------------------------------------------------------------------- pots
def test_pot_filter_ignores_adc_noise_and_reaches_the_ends():
    adc = FakeMcp3008([500] * 8, noise=3, seed=1)
    f = PotFilter(alpha=0.25, hysteresis=6)
    from wavae.device.panel.adc import Mcp3008

    m = Mcp3008(adc)
    first = f.update(m.read(0))
    moves = sum(f.update(m.read(0)) is not None for _ in range(2000))
    assert first is not None and moves == 0
    adc.values[0] = 1023
    for _ in range(100):
        f.update(m.read(0))
    assert f.position == 1.0
    adc.values[0] = 0
    for _ in range(100):
        f.update(m.read(0))
    assert f.position == 0.0


def test_soft_takeover_waits_until_the_pot_crosses_the_stored_value():
    c = Curve("feedback_gain", 0.0, 2.0)
    tk = Takeover(c, soft=True)
    # the control holds 1.0 (position 0.5); the pot sits at 0.1
    assert tk.offer(0.1, 1.0) is None and tk.locked
    assert tk.offer(0.3, 1.0) is None
    v = tk.offer(0.6, 1.0)  # crossed 0.5
    assert v == pytest.approx(1.2) and not tk.locked
    assert tk.offer(0.7, v) == pytest.approx(1.4)
    # a remote change to 0.2 (position 0.1): locked again until the pot comes down through it
    assert tk.offer(0.72, 0.2) is None and tk.locked
    assert tk.offer(0.09, 0.2) == pytest.approx(0.18)


def test_jump_takeover_writes_at_once():
    tk = Takeover(Curve("feedback_gain", 0.0, 2.0), soft=False)
    assert tk.offer(0.1, 1.0) == pytest.approx(0.2)


def test_log_curve_round_trips_and_inverts():
    c = Curve("feedback_freq", 40.0, 8000.0, "log")
    assert c.to_value(0.0) == pytest.approx(40.0) and c.to_value(1.0) == pytest.approx(8000.0)
    assert c.to_value(0.5) == pytest.approx((40.0 * 8000.0) ** 0.5)
    assert c.to_pos(c.to_value(0.3)) == pytest.approx(0.3)
    inv = Curve("feedback_q", 0.5, 20.0, "log", invert=True)
    assert inv.to_value(0.0) == pytest.approx(20.0) and inv.to_pos(20.0) == pytest.approx(0.0)


# --------------------------------------------------------------------------- mapping
BASE = {
    "adc": {"takeover": "soft"},
    "pot": [
        {"channel": 0, "target": "bias.0", "range": [-3.0, 3.0], "shift": {"target": "bias.4"}},
        {"channel": 1, "target": "feedback_gain", "range": [0.0, 1.0]},
    ],
    "encoder": [
        {"a": "A", "b": "B", "target": "feedback_freq", "range": [40.0, 8000.0], "curve": "log", "step": 0.05,
         "accel_ms": 0, "push": "P", "on_press": "freeze", "on_long_press": "preset.save"},
    ],
    "button": [
        {"line": "S", "on_press": "shift"},
        {"line": "N", "on_press": "preset.next"},
        {"line": "G", "on_press": "generative"},
    ],
    "led": {"line": "L"},
}


def test_example_mappings_parse_for_three_boards():
    paths = {p.name: p for p in example_mappings()}
    assert {"pi4.toml", "pi5.toml", "jetson-orin-nano.toml"} <= set(paths)
    labels = {}
    for name, path in paths.items():
        m = load_mapping(path, latent_dim=8)
        assert m.pots and m.encoders and m.buttons and m.led is not None
        labels[name] = m.gpio.chip
    assert labels["pi5.toml"] == ("pinctrl-rp1",)
    assert labels["pi4.toml"] == ("pinctrl-bcm2711",)
    assert labels["jetson-orin-nano.toml"] == ("tegra234-gpio",)


@pytest.mark.parametrize(
    "patch, key, words",
    [
        ({"pot": [{"channel": 0, "target": "bias.9"}]}, "pot[0].target", "dimensions 0 .. 7"),
        ({"pot": [{"channel": 0, "target": "feedbak_gain"}]}, "pot[0].target", "unknown control"),
        ({"pot": [{"channel": 0, "target": "freeze"}]}, "pot[0].target", "toggle"),
        ({"pot": [{"channel": 0, "target": "scale", "range": [0.0, 9.0]}]}, "pot[0].range", "between 0 and 4"),
        ({"pot": [{"channel": 0, "target": "feedback_q", "range": [0.1, 0.1]}]}, "pot[0].range", "equal"),
        ({"pot": [{"channel": 0, "target": "bias.0", "curve": "log"}]}, "pot[0].curve", "above zero"),
        ({"pot": [{"channel": 9, "target": "bias.0"}]}, "pot[0].channel", "between 0 and 7"),
        ({"pot": [{"channel": 0, "target": "bias.0", "knob": 1}]}, "pot[0].knob", "unknown key"),
        ({"button": [{"line": "X", "on_press": "explode"}]}, "button[0].on_press", "unknown action"),
        ({"button": [{"line": "X", "on_press": "freeze"}, {"line": "X", "on_press": "generative"}]},
         "button[1].line", "already used by button[0].line"),
        ({"pot": [{"channel": 0, "target": "bias.0", "shift": {"target": "bias.1"}}]}, "pot.shift", "no button"),
        ({"encoder": [{"a": "A", "b": "B", "target": "scale", "steps_per_detent": 3}]},
         "encoder[0].steps_per_detent", "1, 2 or 4"),
        ({"midi_cc": [{"cc": 200, "target": "scale"}]}, "midi_cc[0].cc", "between 0 and 127"),
        ({"midi_cc": [{"cc": 64, "target": "freeze", "range": [0, 1]}]}, "midi_cc[0].range", "no range"),
    ],
)
def test_mapping_errors_name_the_file_and_key(patch, key, words):
    with pytest.raises(PanelMappingError) as e:
        parse_mapping(patch, latent_dim=LATENT, source="panel.toml")
    msg = str(e.value)
    assert msg.startswith(f"panel.toml: {key}: "), msg
    assert words in msg


def test_missing_mapping_file_names_the_examples(tmp_path):
    with pytest.raises(PanelMappingError, match="does not exist; start from an example"):
        load_mapping(tmp_path / "nope.toml", latent_dim=8)


# --------------------------------------------------------------------------- the panel over fakes
class Clock:
    def __init__(self):
        self.t = 10**12

    def __call__(self) -> int:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += int(ms * MS)


class Rig:
    """A panel over fake lines and a fake ADC, ticked by hand with a fake clock."""

    def __init__(self, tmp_path, doc=BASE, status=None, values=(512,) * 8):
        self.mapping = parse_mapping(doc, LATENT, "panel.toml")
        self.controls = Controls(LATENT)
        self.store = PresetStore(tmp_path / "presets")
        self.actions = Actions(self.controls, self.store, bundle="strings", status=status)
        self.lines = FakeGpioLines(self.mapping.input_lines(), [self.mapping.led.line] if self.mapping.led else [])
        self.adc = FakeMcp3008(values)
        self.clock = Clock()
        self.gpio_fail: str | None = None
        self.adc_fail: str | None = None
        self.panel = Panel(self.mapping, self.actions, self.open_gpio, self.open_adc, adc_hz=200, retry_s=2.0,
                           clock=self.clock)

    def open_gpio(self):
        if self.gpio_fail:
            raise PanelHardwareError(self.gpio_fail)
        return self.lines

    def open_adc(self):
        if self.adc_fail:
            raise PanelHardwareError(self.adc_fail)
        return self.adc

    def run(self, ms: float, step_ms: float = 5.0) -> None:
        for _ in range(int(ms / step_ms)):
            self.panel.tick(max_wait_s=0)
            self.clock.advance(step_ms)

    def edges(self, edges) -> None:
        self.lines.push(edges)
        self.panel.tick(max_wait_s=0)


def test_pot_writes_its_control_after_catching_it(tmp_path):
    rig = Rig(tmp_path, values=[0, 1023] + [512] * 6)
    rig.run(100)
    # pot 0 (bias.0, -3..3) at 0 = -3, control at 0: locked until it crosses 0
    assert rig.controls.get("bias.0") == 0.0
    # pot 1 (feedback_gain 0..1) at 1023 = 1.0, control at 0: locked too
    assert rig.controls.get("feedback_gain") == 0.0
    rig.adc.values[0] = 700  # crosses the middle (512 = 0.0)
    rig.run(200)
    assert rig.controls.get("bias.0") == pytest.approx(-3 + 6 * rig.panel.pots[0].filter.position, abs=1e-9)
    assert rig.controls.get("bias.0") > 0.5
    rig.adc.values[1] = 0  # comes down through 0: takes over at the bottom
    rig.run(200)
    assert rig.controls.get("feedback_gain") == 0.0 and not rig.panel.pots[1].takeovers[0].locked


def test_shift_moves_pots_to_the_second_layer(tmp_path):
    rig = Rig(tmp_path, values=[512] * 8)
    rig.run(50)
    rig.adc.values[0] = 800
    rig.run(200)
    b0 = rig.controls.get("bias.0")
    assert b0 > 1.0 and rig.controls.get("bias.4") == 0.0
    rig.edges([("S", 0, rig.clock())])  # hold shift
    assert rig.panel.layer == 1
    rig.adc.values[0] = 300  # crosses bias.4's stored 0 (position 0.5)
    rig.run(200)
    assert rig.controls.get("bias.4") < -1.0
    assert rig.controls.get("bias.0") == b0  # layer 0 untouched
    rig.edges([("S", 1, rig.clock())])  # release
    assert rig.panel.layer == 0
    rig.adc.values[0] = 320
    rig.run(100)
    assert rig.controls.get("bias.0") == b0  # pot (at ~-1.2) has not caught bias.0 (~+1.7) again


def test_encoder_turns_a_log_control_and_push_toggles(tmp_path):
    rig = Rig(tmp_path)
    rig.controls.set("feedback_freq", 1000.0)
    c = rig.mapping.encoders[0].curve
    p0 = c.to_pos(1000.0)
    rig.edges(turn("A", "B", 4, rig.clock(), bounce=2))
    assert c.to_pos(rig.controls.get("feedback_freq")) == pytest.approx(p0 + 4 * 0.05)
    rig.edges(turn("A", "B", -100, rig.clock() + 10**9))
    assert rig.controls.get("feedback_freq") == pytest.approx(40.0)  # clamped at the range's end
    t = rig.clock()
    rig.edges(press("P", t, 100 * MS, bounce=3))  # short press: on_press toggles freeze
    assert rig.controls.get("freeze") is True


def test_long_press_saves_a_preset_and_a_button_steps_presets(tmp_path):
    rig = Rig(tmp_path)
    rig.controls.update({"scale": 2.0, "bias.1": 1.5})
    rig.edges([("P", 0, rig.clock())])
    rig.clock.advance(700)
    rig.panel.tick(max_wait_s=0)  # held past the long-press time: preset.save fires
    assert rig.store.names() == ["p01"]
    rig.edges([("P", 1, rig.clock())])
    assert rig.controls.get("freeze") is False  # the release after a long press is no short press
    rig.controls.update({"scale": 0.5, "bias.1": 0.0})
    rig.actions.save_preset("p02")
    rig.actions.load_preset("p01")
    assert rig.controls.get("scale") == 2.0
    rig.edges(press("N", rig.clock(), 50 * MS))  # preset.next: p01 -> p02
    assert rig.actions.preset == "p02" and rig.controls.get("scale") == 0.5


def test_led_steady_while_playing_and_blinks_after_an_xrun(tmp_path):
    status = {"state": "playing", "xruns": 0}
    rig = Rig(tmp_path, status=lambda: dict(status))
    rig.run(100)
    assert rig.lines.outputs["L"] == [1]  # on, and not rewritten while nothing changes
    status["xruns"] = 1
    rig.run(500)
    assert rig.lines.outputs["L"].count(0) >= 3  # blinking
    rig.run(3000)
    assert rig.lines.outputs["L"][-1] == 1
    n = len(rig.lines.outputs["L"])
    rig.run(500)
    assert len(rig.lines.outputs["L"]) == n  # steady again


def test_missing_gpio_chip_is_logged_once_and_retried(tmp_path, caplog):
    rig = Rig(tmp_path, values=[512] * 8)
    rig.gpio_fail = "no GPIO chip found: wanted a chip labelled pinctrl-rp1"
    with caplog.at_level(logging.WARNING, logger="wavae.device.panel"):
        rig.run(10_000)  # 10 s: five retries
    msgs = [r.getMessage() for r in caplog.records if "no GPIO chip" in r.getMessage()]
    assert len(msgs) == 1 and "keeps playing" in msgs[0]
    assert rig.panel.gpio is None and "gpio" in rig.panel.failures
    rig.adc.values[0] = 900  # the pots still work meanwhile
    rig.run(300)
    assert rig.controls.get("bias.0") > 1.0
    rig.gpio_fail = None
    with caplog.at_level(logging.INFO, logger="wavae.device.panel"):
        rig.run(2500)
    assert rig.panel.gpio is rig.lines and rig.panel.failures == {}
    assert any("GPIO back" in r.getMessage() for r in caplog.records)


def test_dead_spi_bus_is_logged_once_and_pots_come_back(tmp_path, caplog):
    rig = Rig(tmp_path, values=[512] * 8)
    rig.run(50)
    rig.adc.dead = True
    with caplog.at_level(logging.WARNING, logger="wavae.device.panel"):
        rig.run(5000)
    msgs = [r.getMessage() for r in caplog.records if "no answer on the SPI bus" in r.getMessage()]
    assert len(msgs) == 1
    rig.edges(press("G", rig.clock(), 20 * MS))  # buttons still work with the ADC gone
    assert rig.controls.get("generative") is True
    rig.adc.dead = False
    rig.adc.values[0] = 900
    rig.run(2500)
    assert "adc" not in rig.panel.failures and rig.controls.get("bias.0") > 1.0


def test_panel_thread_writes_controls_and_stops(tmp_path):
    rig = Rig(tmp_path, values=[512] * 8)
    panel = Panel(rig.mapping, rig.actions, rig.open_gpio, rig.open_adc, adc_hz=200)  # the real clock
    panel.start()
    try:
        rig.lines.push(press("G", 0, 1))
        rig.adc.values[0] = 1023
        import time

        deadline = time.monotonic() + 5
        while (rig.controls.get("bias.0") < 3.0 or not rig.controls.get("generative")) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        panel.stop()
    assert rig.controls.get("generative") is True
    assert rig.controls.get("bias.0") == pytest.approx(3.0)
    assert panel.thread_id is None and rig.lines.closed and rig.adc.closed


def test_failing_status_provider_blinks_the_led_and_never_stops_the_panel(tmp_path):
    def broken():
        raise RuntimeError("status gone")

    rig = Rig(tmp_path, status=broken)
    rig.run(1000)
    assert rig.panel.errors == 0
    assert rig.actions.status()["error"].startswith("status provider failed")
    assert rig.lines.outputs["L"].count(1) >= 2 and rig.lines.outputs["L"].count(0) >= 2  # 2 Hz blink
