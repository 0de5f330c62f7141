"""`wavae panel check`: live readings of the real decoding code, over the fakes or the (missing) hardware."""

from __future__ import annotations

import glob
import io
import subprocess
import sys
import threading
import time

import pytest

from wavae.device.cli_panel import run_check
from wavae.device.panel.fakes import FakeGpioLines, FakeMcp3008, press, turn
from wavae.device.panel.mapping import example_mappings, load_mapping

WAVAE = [sys.executable, "-m", "wavae.cli"]


def test_check_prints_raw_and_mapped_pots_encoder_counts_and_buttons():
    mapping = load_mapping(next(p for p in example_mappings() if p.name == "pi5.toml"), 8)
    lines = FakeGpioLines(mapping.input_lines(), [mapping.led.line])
    adc = FakeMcp3008([0, 1023, 512, 100, 1023, 0, 0, 1023])

    def hands():  # while the check runs: three clicks on FREQ, hold SHIFT
        time.sleep(0.15)
        now = time.monotonic_ns()
        lines.push(turn("GPIO17", "GPIO27", 3, now, detent_ns=60_000_000))
        lines.push([("GPIO5", 0, now + 10_000_000)])

    t = threading.Thread(target=hands)
    t.start()
    out = io.StringIO()
    rc = run_check(mapping, out, seconds=0.6, interval=0.1, open_gpio=lambda: lines, open_adc=lambda: adc)
    t.join()
    last = out.getvalue().split("-- panel at")[-1]
    assert rc == 0
    assert "K1         ch0  raw    0  -> bias.4 = -3" in last  # shift held: the second layer
    assert "VOLUME     ch7  raw 1023  -> output_gain = 2" in last
    assert "FREQ       count    +3  invalid 0" in last
    assert "SHIFT      DOWN  presses 1" in last and ", layer 1 " in last
    assert "MISSING" not in last


@pytest.mark.skipif(bool(glob.glob("/dev/gpiochip*")), reason="this machine has GPIO chips")
def test_check_on_a_machine_without_the_hardware_says_what_is_missing():
    mapping = next(p for p in example_mappings() if p.name == "pi4.toml")
    r = subprocess.run(WAVAE + ["panel", "check", "--mapping", str(mapping), "--once"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout.count("-- panel at") == 1
    assert "MISSING gpio: no GPIO chip found: wanted a chip labelled pinctrl-bcm2711" in r.stdout
    assert "MISSING adc: " in r.stdout and "Traceback" not in r.stderr


def test_check_without_a_mapping_is_a_one_line_error(tmp_path):
    r = subprocess.run(WAVAE + ["panel", "check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "give --mapping PANEL.toml" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[pot]]\nchannel = 0\ntarget = "bias.0"\ncurve = "exp"\n')
    r = subprocess.run(WAVAE + ["panel", "check", "--mapping", str(bad), "--once"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "bad.toml: pot[0].curve: expected one of linear, log" in r.stderr
