"""`wavae web` in a real browser against the real instrument, live under JACK dummy.

Three processes, as on the device, all from one device config: ``wavae run``
(the instrument, its audio loop paced by a private ``jackd -d dummy`` server
through ALSA's jack plugin, at realtime priority where allowed, with its
``[osc]`` door and ``[presets]`` folder), ``wavae web`` (the page, its own
process, renders in niced worker processes) and headless Chromium (Debian's)
driven by Playwright over loopback.  Nothing is faked: the fake boundary is
the JACK dummy driver standing in for a sound card.

What reaches the engine is read back from the instrument itself over OSC
(``/wavae/status``, as another client would).  The xrun test reads the live
loop's counters before and after a page load and a playground render and
asserts that none were added: the issue's "0 xruns while the page is used".

Screenshots of both pages are written to the test's folder, and to
``$WAVAE_SCREENSHOT_DIR`` when set (how docs/img/ is made:
``WAVAE_SCREENSHOT_DIR=docs/img pytest tests/test_web_browser.py``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from alsa_helpers import (
    JackServer,
    LiveInstrument,
    foreign_realtime_processes,
    free_udp_port,
    jack_live_config,
    jackd_available,
    realtime_allowed,
)
from conftest import synth_audio

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make install does)")
pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed (pip install pyalsaaudio)")
pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'wavae-edge[panel]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_no_jack = jackd_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make apt installs it)"),
    pytest.mark.skipif(_no_jack is not None, reason=_no_jack or ""),
]

REALTIME = realtime_allowed()
COUNTERS = ("xruns", "late_periods", "device_lost")  # the live loop's trouble, all of it, as counts since the start


@pytest.fixture(scope="module")
def trained_bundle(trained_tiny_run, tmp_path_factory) -> Path:
    from wavae.quantize.export import export_bundle
    from wavae.train.checkpoint import load_run

    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    out = tmp_path_factory.mktemp("web-bundles") / "strings-tiny"
    return export_bundle(model, cfg, out, block=2 * cfg.frame, precision="fp32")


@pytest.fixture(scope="module")
def device(trained_bundle, tmp_path_factory):
    """One device config: the instrument's [bundle], [audio] on JACK, [osc], [presets] and the page's [web]."""
    d = tmp_path_factory.mktemp("device")
    port = free_udp_port()
    extra = f'[presets]\ndir = "{d / "presets"}"\n[web]\nstate_dir = "{d / "state"}"\n'
    cfg = jack_live_config(d / "device.toml", trained_bundle, port, REALTIME, extra)
    return d, cfg, port


@pytest.fixture(scope="module")
def instrument(device):
    """``wavae run`` live under a private JACK dummy server for the whole module; its summary checked at the end."""
    d, cfg, port = device
    with JackServer(d, realtime=REALTIME) as jack:
        inst = LiveInstrument(cfg, jack, port, d / "asound.conf", sys.executable).start()
        try:
            yield inst
        finally:
            summary = inst.stop()
            print("live run:", {k: summary.get(k) for k in ("wall_s", "frames", "realtime", *COUNTERS, "xrun_frames")})
    assert summary["xruns_unrecovered"] == 0 and summary["device_lost"] == 0


@pytest.fixture(scope="module")
def web(device, instrument):
    """`wavae web` as its own process, configured by the same device TOML; yields its base URL."""
    _, cfg, _ = device
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wavae", "web", "--config", str(cfg), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert "serving http://127.0.0.1:" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
    url = line.split("serving ", 1)[1].split()[0]
    yield url
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: d.accept())
    yield pg
    context.close()
    assert not errors, errors  # no script error on either page


def screenshot(page, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("WAVAE_SCREENSHOT_DIR")
    if target:
        shutil.copy(out, Path(target) / name)
    return out


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def controls(instrument) -> dict:
    """The controls the engine plays with now, as the instrument reports them."""
    return instrument.status()["controls"]


def upload(page, wav: Path) -> None:
    page.set_input_files("#upload", str(wav))
    page.click("#upload-go")
    page.wait_for_selector(f"#sound-msg:has-text('{wav.stem}:')", timeout=60000)


def render_a_to_b(page, a: str, b: str, timeout_ms: int = 60000) -> str:
    """Fill slots A and B, choose A->B, render; returns the player's new source."""
    before = page.get_attribute("#player", "src") or ""
    page.select_option('[data-slot="0"]', a)
    page.select_option('[data-slot="1"]', b)
    page.check('input[name=source][value=interpolate]')
    page.click("#render")
    page.wait_for_function("b => document.querySelector('#render-msg').textContent.includes('peak') && "
                           "(document.querySelector('#player').getAttribute('src') || '') !== b", arg=before,
                           timeout=timeout_ms)
    return page.get_attribute("#player", "src")


def test_live_page_knobs_reach_the_engine_and_status_shows_them(web, instrument, trained_bundle, page, tmp_path):
    page.goto(web)
    page.wait_for_selector("text=instrument answering", timeout=10000)
    # the instrument's own status reply shows on the page
    st = instrument.status()
    assert page.inner_text("#st-bundle") == trained_bundle.name == st["bundle"]
    assert page.inner_text("#st-latency") == f"{st['latency_ms']:.1f} ms"
    assert int(page.inner_text("#st-xruns")) <= instrument.status()["xruns"]
    # a bias knob: the slider runs 0..1000 over -10..10
    page.fill('[data-control="bias.2"]', "650")
    wait_for(lambda: abs(controls(instrument)["bias"][2] - 3.0) < 1e-3, what="bias.2 = 3.0 in the engine")
    # the feedback band-pass frequency on its log scale: 500 of 1000 is sqrt(20 * 20000) Hz
    page.fill('[data-control="feedback_freq"]', "500")
    wait_for(lambda: abs(controls(instrument)["feedback_freq"] - 632.4555) < 0.1, what="feedback_freq in the engine")
    page.click('[data-toggle="freeze"]')
    wait_for(lambda: controls(instrument)["freeze"] is True, what="freeze on in the engine")
    page.click('[data-toggle="loudness_source"]')
    wait_for(lambda: controls(instrument)["loudness_source"] == "manual", what="manual loudness in the engine")
    assert instrument.status()["rejected"] == {}
    # another OSC client moves bias.0: the instrument's value comes back to the page
    instrument.send("/wavae/control/bias.0", -5.0)
    wait_for(lambda: page.input_value('[data-control="bias.0"]') == "250", what="bias.0 echoed on the page")
    screenshot(page, tmp_path, "live.png")
    for name in ("freeze", "loudness_source"):  # back as they were, for the next test
        page.click(f'[data-toggle="{name}"]')
    wait_for(lambda: controls(instrument)["freeze"] is False, what="freeze off again")


def test_live_page_presets_save_rename_load_delete(web, instrument, device, page):
    folder = device[0] / "presets"
    page.goto(web)
    page.wait_for_selector("text=instrument answering", timeout=10000)
    page.fill('[data-control="bias.1"]', "750")  # 5.0
    wait_for(lambda: abs(controls(instrument)["bias"][1] - 5.0) < 1e-3, what="bias.1 = 5 in the engine")
    page.fill("#preset-name", "drone")
    page.click("#preset-save")
    wait_for(lambda: (folder / "drone.json").is_file(), what="drone.json saved by the instrument")
    page.wait_for_selector('#presets [data-name="drone"]')
    page.click('#presets [data-name="drone"]')
    page.fill("#preset-name", "drone2")
    page.click("#preset-rename")
    wait_for(lambda: (folder / "drone2.json").is_file() and not (folder / "drone.json").exists(), what="rename")
    page.wait_for_selector('#presets [data-name="drone2"]')
    instrument.send("/wavae/control/bias.1", 0.0)
    wait_for(lambda: controls(instrument)["bias"][1] == 0.0, what="bias.1 = 0 in the engine")
    page.click('#presets [data-name="drone2"]')
    page.click("#preset-load")
    wait_for(lambda: abs(controls(instrument)["bias"][1] - 5.0) < 1e-3, what="preset loaded: bias.1 back to 5")
    assert instrument.status()["preset"] == "drone2"
    page.wait_for_selector("#st-preset:has-text('drone2')")
    page.click("#preset-delete")
    wait_for(lambda: not (folder / "drone2.json").exists(), what="drone2 deleted")


def test_playground_renders_an_a_to_b_interpolation_that_plays(web, instrument, trained_bundle, page, tmp_path):
    from wavae.device.bundle import read_manifest

    m = read_manifest(trained_bundle)
    waves = {}
    for name, seconds, rate, seed in (("cello", 1.2, 44100, 5), ("voice", 0.9, 16000, 6)):
        waves[name] = tmp_path / f"{name}.wav"
        sf.write(waves[name], synth_audio(seconds, rate, seed=seed), rate)
    page.goto(web + "playground")
    for wav in waves.values():
        upload(page, wav)
    src = render_a_to_b(page, "cello", "voice")
    # the WAV the page plays: fetched by the page itself, as the player does
    data = bytes(page.evaluate("async s => Array.from(new Uint8Array(await (await fetch(s)).arrayBuffer()))", src))
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    frames = lambda s, r: -(-round(s * r * m["sample_rate"] / r) // m["frame"])  # noqa: E731
    n = min(frames(1.2, 44100), frames(0.9, 16000))
    assert sr == m["sample_rate"] and y.shape == (n * m["frame"],)
    assert np.isfinite(y).all() and np.sqrt(np.mean(y ** 2)) > 1e-3  # not silent
    # it plays: the browser decodes it, knows its length, and its clock runs
    page.evaluate("() => document.querySelector('#player').play()")
    wait_for(lambda: page.evaluate("() => document.querySelector('#player').currentTime") > 0.05, what="playback")
    assert abs(page.evaluate("() => document.querySelector('#player').duration") - n * m["frame"] / sr) < 1e-3
    assert page.get_attribute("#download", "href").endswith("?download=1")
    # a gesture on the plane pad and an operator render too
    page.select_option('[data-slot="2"]', "voice")
    page.select_option('[data-slot="3"]', "cello")
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.down()
    for k in range(1, 21):
        page.mouse.move(box["x"] + 10 + k * (box["width"] - 20) / 20, box["y"] + box["height"] / 2, steps=2)
        page.wait_for_timeout(10)
    page.mouse.up()
    assert page.is_checked('input[name=source][value=plane]')
    page.click('[data-add="reverse"]')
    page.locator("#curve").scroll_into_view_if_needed()
    curve = page.locator("#curve").bounding_box()
    page.mouse.click(curve["x"] + curve["width"] * 0.5, curve["y"] + curve["height"] * 0.25)
    page.click("#render")
    page.wait_for_function("() => document.querySelector('#render-msg').textContent.includes('peak') && "
                           f"document.querySelector('#player').src !== '{src}'", timeout=60000)
    screenshot(page, tmp_path, "playground.png")


def test_the_page_and_a_playground_render_during_a_live_run_cause_no_xrun(web, instrument, page, tmp_path):
    before, foreign = instrument.status(), set(foreign_realtime_processes())
    assert before["state"] == "playing"
    for name, seconds, rate, seed in (("bell", 2.0, 48000, 7), ("hum", 2.0, 22050, 8)):
        sf.write(tmp_path / f"{name}.wav", synth_audio(seconds, rate, seed=seed), rate)
    page.goto(web)  # the live page: a WebSocket, and /wavae/status asked once a second
    page.wait_for_selector("text=instrument answering", timeout=10000)
    page.goto(web + "playground")
    upload(page, tmp_path / "bell.wav")  # each upload is encoded by a worker process
    upload(page, tmp_path / "hum.wav")
    render_a_to_b(page, "bell", "hum")
    page.goto(web)
    page.wait_for_selector("text=instrument answering", timeout=10000)
    time.sleep(1.0)  # a period in trouble at the very end is counted by now
    after = instrument.status()
    foreign |= set(foreign_realtime_processes())
    added = {k: after[k] - before[k] for k in COUNTERS}
    print(f"during the page and a render: {added} (over {after['uptime_s'] - before['uptime_s']:.1f} s; "
          f"since the start: {dict((k, after[k]) for k in COUNTERS)}; realtime {REALTIME})")
    assert added == dict.fromkeys(COUNTERS, 0), (
        f"{added}; realtime processes of other sessions on these cores at the start or the end: "
        f"{sorted(foreign) or 'none'}")
