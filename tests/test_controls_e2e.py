"""End to end in file mode: a pot on the panel and OSC messages, timed against the audio, change the render.

The real inputs drive a file render (``render_stream``, as ``wavae run
--input`` plays): the OSC server on loopback UDP and the panel's thread
reading a pot through ``FakeMcp3008`` (the SPI bus, the outermost boundary),
both writing the instrument's controls through one ``Actions``.  An event is
applied when the render reaches its audio frame: the input callback sends the
OSC message or moves the pot and waits until the control has the new value,
so the render is deterministic.  Against a render with no events:

- before the first event the two are identical, sample for sample;
- ``feedback_freq`` / ``feedback_q`` set over OSC change nothing while the
  gain is 0; then the pot raising ``feedback_gain`` raises the output's energy
  in the band around ``feedback_freq`` above the baseline's, and more than
  outside the band;
- OSC setting ``feedback_gain`` back to 0 brings that band back down.
"""

from __future__ import annotations

import socket
import tomllib
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from conftest import synth_audio  # noqa: E402
from wavae.device.actions import Actions  # noqa: E402
from wavae.device.cli_run import CHUNK_PERIODS, render_stream  # noqa: E402
from wavae.device.instrument import Instrument, InstrumentSpec  # noqa: E402
from wavae.device.osc import OscServer  # noqa: E402
from wavae.device.panel.fakes import FakeMcp3008  # noqa: E402
from wavae.device.panel.mapping import parse_mapping  # noqa: E402
from wavae.device.panel.panel import Panel  # noqa: E402

RATE, PERIOD = 48000, 256
CHUNK = CHUNK_PERIODS * PERIOD  # render_stream reads (and so applies events) a chunk at a time
FREQ, Q, GAIN = 1000.0, 2.0, 2.0
# both renders: a quiet input and output_gain 4, so the (quiet, briefly trained) model's output fed back
# is not drowned by the input (at 0.3 full scale and output_gain 1 the band moved by 0.1 %)
AMPLITUDE, SETTINGS = 0.05, {"output_gain": 4.0}
MAPPING = """
[[pot]]
channel = 0
target = "feedback_gain"
range = [0.0, 2.0]
[adc]
takeover = "jump"
"""


@pytest.fixture(scope="module")
def trained_bundle(trained_tiny_run, tmp_path_factory) -> Path:
    """The trained tiny run's fp32 bundle: an untrained decoder barely answers the feedback (1.00003x)."""
    from wavae.quantize.export import export_bundle
    from wavae.train.checkpoint import load_run

    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    out = tmp_path_factory.mktemp("e2e-trained") / "tiny"
    return export_bundle(model, cfg, out, block=2 * cfg.frame, precision="fp32")


def _msg(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def _band_energy(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    f = np.fft.rfftfreq(y.size, 1.0 / RATE)
    return float(spec[(f >= lo) & (f <= hi)].sum())


def _render(bundle: Path, x: np.ndarray, events: dict[int, callable] | None = None, setup=None) -> np.ndarray:
    """Render ``x``; ``events[frame]()`` runs when the render has read up to input ``frame``."""
    spec = InstrumentSpec(bundle=bundle, device_rate=RATE, period=PERIOD, warm_up=True, settings=SETTINGS)
    out = np.zeros_like(x)
    pos = {"r": 0, "w": 0}
    with Instrument.open(spec) as inst:
        hooks = setup(inst) if setup is not None else None
        try:
            def read(k: int) -> np.ndarray:
                for frame, event in (events or {}).items():
                    if pos["r"] == frame:
                        event(hooks)
                block = x[pos["r"] : pos["r"] + k]
                pos["r"] += block.shape[0]
                return block

            def write(block: np.ndarray) -> None:
                out[pos["w"] : pos["w"] + block.shape[0]] = block
                pos["w"] += block.shape[0]

            render_stream(inst, read, x.shape[0], write)
        finally:
            if hooks is not None:
                hooks["stop"]()
    return out


def _wait(cond, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.mark.slow
def test_osc_and_a_pot_during_a_file_render_change_the_band_they_should(trained_bundle):
    x = (AMPLITUDE * synth_audio(8.0, RATE, seed=7)).astype(np.float32)[:, None]
    t_osc, t_pot, t_off = 2 * CHUNK, 12 * CHUNK, 18 * CHUNK  # 0.7 s, 4.1 s, 6.1 s
    assert t_off + 4 * CHUNK <= x.shape[0]
    mapping = parse_mapping(tomllib.loads(MAPPING), latent_dim=8, source="panel.toml")

    def setup(inst):
        actions = Actions(inst.controls)
        osc = OscServer(actions, "127.0.0.1", 0).start()
        adc = FakeMcp3008(values=(0,) * 8)
        panel = Panel(mapping, actions, open_gpio=None, open_adc=lambda: adc, adc_hz=500.0).start()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def stop():
            client.close()
            panel.stop()
            osc.stop()

        return {"actions": actions, "osc": osc, "adc": adc, "client": client, "stop": stop}

    def send(h, address, *args):
        h["client"].sendto(_msg(address, *args), h["osc"].address)

    def osc_band(h):
        send(h, "/wavae/control/feedback_freq", FREQ)
        send(h, "/wavae/control/feedback_q", Q)
        c = h["actions"]
        _wait(lambda: c.get("feedback_freq") == FREQ and c.get("feedback_q") == Q, "the OSC messages")

    def pot_up(h):
        h["adc"].values[0] = 1023  # the pot turned fully up: feedback_gain 2.0 through the real filter
        _wait(lambda: h["actions"].get("feedback_gain") == GAIN, "the pot")

    def osc_off(h):
        send(h, "/wavae/control/feedback_gain", 0.0)
        _wait(lambda: h["actions"].get("feedback_gain") == 0.0, "the OSC message")

    base = _render(trained_bundle, x)
    live = _render(trained_bundle, x, {t_osc: osc_band, t_pot: pot_up, t_off: osc_off}, setup)
    # nothing changes before the first event (a model block of slack for the block it lands in)
    margin = 2048
    np.testing.assert_array_equal(live[: t_osc - margin], base[: t_osc - margin])
    # freq and Q alone, with the gain at 0, change nothing either: the feedback loop is off
    np.testing.assert_array_equal(live[: t_pot - margin], base[: t_pot - margin])
    assert not np.array_equal(live[t_pot : t_pot + CHUNK], base[t_pot : t_pot + CHUNK])
    lo, hi = FREQ / 1.25, FREQ * 1.25

    def ratio(a, b, lo=lo, hi=hi):
        return _band_energy(live[a:b, 0], lo, hi) / _band_energy(base[a:b, 0], lo, hi)

    on = ratio(t_pot + CHUNK // 2, t_off)  # after the glide (smoothing 50 ms)
    outside = ratio(t_pot + CHUNK // 2, t_off, 3 * FREQ, 6 * FREQ)
    off = ratio(t_off + 2 * CHUNK, t_off + 4 * CHUNK)  # after the loop's tail has died
    print(f"live / baseline energy: {lo:.0f}-{hi:.0f} Hz with feedback {on:.2f}x (outside the band "
          f"{outside:.2f}x), after the gain went back to 0 {off:.2f}x")
    assert np.isfinite(live).all()
    assert on > 1.3  # measured 1.67x when written
    assert on > outside + 0.2
    assert abs(off - 1.0) < 0.1
