"""`wavae web` in a real browser: headless Chromium (Debian's) driven by Playwright, over loopback.

The instrument on the other end is the real OSC server of the instrument
(``wavae.device.osc.OscServer`` with its ``Actions``, ``Controls`` and
``PresetStore``), run in this process without the audio loop; its status
provider stands in for the live loop's figures (xruns, latency), the one fake,
at the audio boundary.  The live run under JACK dummy is not part of this test.

Screenshots of both pages are written to the test's folder, and to
``$WAVAE_SCREENSHOT_DIR`` when set (how docs/img/ is made).
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

from conftest import synth_audio

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make install does)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make apt installs it)"),
]

STATUS = {"state": "playing", "xruns": 3, "xruns_unrecovered": 0, "latency_ms": 12.25, "load": 0.31}


@pytest.fixture(scope="module")
def trained_bundle(trained_tiny_run, tmp_path_factory) -> Path:
    from wavae.quantize.export import export_bundle
    from wavae.train.checkpoint import load_run

    cfg, model, _ = load_run(trained_tiny_run, require_vocoder=True)
    out = tmp_path_factory.mktemp("web-bundles") / "strings-tiny"
    return export_bundle(model, cfg, out, block=2 * cfg.frame, precision="fp32")


@pytest.fixture
def instrument(trained_bundle, tmp_path):
    """The instrument's real OSC door on a free UDP port (no audio loop)."""
    from wavae.device.actions import Actions
    from wavae.device.bundle import read_manifest
    from wavae.device.controls import Controls
    from wavae.device.osc import OscServer
    from wavae.device.presets import PresetStore

    controls = Controls(read_manifest(trained_bundle)["latent_dim"])
    presets = PresetStore(tmp_path / "presets")
    actions = Actions(controls, presets, bundle=trained_bundle.name, status=lambda: dict(STATUS))
    server = OscServer(actions, "127.0.0.1", 0).start()
    yield actions, server
    server.stop()


@pytest.fixture
def web(trained_bundle, instrument, tmp_path):
    """`wavae web` as its own process, configured by a device TOML; yields its base URL."""
    _, server = instrument
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[bundle]\npath = "{trained_bundle}"\n[osc]\nport = {server.address[1]}\n'
                   f'[presets]\ndir = "{tmp_path / "presets"}"\n[web]\nstate_dir = "{tmp_path / "state"}"\n')
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wavae", "web", "--config", str(cfg), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert "serving http://127.0.0.1:" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
    url = line.split("serving ", 1)[1].split()[0]
    yield url
    proc.terminate()
    assert proc.wait(10) == 0


@pytest.fixture
def page():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("dialog", lambda d: d.accept())
        pg.errors = errors
        yield pg
        browser.close()
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


def test_live_page_knobs_reach_the_instrument_and_status_comes_back(web, instrument, page, tmp_path):
    actions, server = instrument
    controls = actions.controls
    page.goto(web)
    page.wait_for_selector("text=instrument answering", timeout=10000)
    # the status reply shows on the page
    assert page.inner_text("#st-xruns") == "3"
    assert page.inner_text("#st-latency") == "12.3 ms"
    assert page.inner_text("#st-bundle") == actions.bundle
    # a bias knob: the slider runs 0..1000 over -10..10
    page.fill('[data-control="bias.2"]', "650")
    wait_for(lambda: abs(controls.get("bias.2") - 3.0) < 1e-3, what="bias.2 = 3.0 at the instrument")
    # the feedback band-pass frequency on its log scale: 500 of 1000 is sqrt(20 * 20000) Hz
    page.fill('[data-control="feedback_freq"]', "500")
    wait_for(lambda: abs(controls.get("feedback_freq") - 632.4555) < 0.1, what="feedback_freq at the instrument")
    page.click('[data-toggle="freeze"]')
    wait_for(lambda: controls.get("freeze") is True, what="freeze on at the instrument")
    page.click('[data-toggle="loudness_source"]')
    wait_for(lambda: controls.get("loudness_source") == "manual", what="manual loudness at the instrument")
    assert server.applied >= 4 and not actions.rejected
    # and the instrument's values come back to the page (another writer moves bias.0)
    controls.set("bias.0", -5.0)
    wait_for(lambda: page.input_value('[data-control="bias.0"]') == "250", what="bias.0 echoed on the page")
    screenshot(page, tmp_path, "live.png")


def test_live_page_presets_save_rename_load_delete(web, instrument, page, tmp_path):
    actions, _ = instrument
    folder = tmp_path / "presets"
    page.goto(web)
    page.wait_for_selector("text=instrument answering", timeout=10000)
    page.fill('[data-control="bias.1"]', "750")  # 5.0
    wait_for(lambda: abs(actions.controls.get("bias.1") - 5.0) < 1e-3, what="bias.1 = 5")
    page.fill("#preset-name", "drone")
    page.click("#preset-save")
    wait_for(lambda: (folder / "drone.json").is_file(), what="drone.json saved by the instrument")
    page.wait_for_selector('#presets [data-name="drone"]')
    page.click('#presets [data-name="drone"]')
    page.fill("#preset-name", "drone2")
    page.click("#preset-rename")
    wait_for(lambda: (folder / "drone2.json").is_file() and not (folder / "drone.json").exists(), what="rename")
    page.wait_for_selector('#presets [data-name="drone2"]')
    actions.controls.set("bias.1", 0.0)
    page.click('#presets [data-name="drone2"]')
    page.click("#preset-load")
    wait_for(lambda: abs(actions.controls.get("bias.1") - 5.0) < 1e-3, what="preset loaded: bias.1 back to 5")
    assert actions.preset == "drone2"
    page.wait_for_selector("#st-preset:has-text('drone2')")
    page.click("#preset-delete")
    wait_for(lambda: not (folder / "drone2.json").exists(), what="drone2 deleted")


def test_playground_renders_an_a_to_b_interpolation_that_plays(web, trained_bundle, page, tmp_path):
    from wavae.device.bundle import read_manifest

    m = read_manifest(trained_bundle)
    waves = {}
    for name, seconds, rate, seed in (("cello", 1.2, 44100, 5), ("voice", 0.9, 16000, 6)):
        waves[name] = tmp_path / f"{name}.wav"
        sf.write(waves[name], synth_audio(seconds, rate, seed=seed), rate)
    page.goto(web + "playground")
    for name, wav in waves.items():
        page.set_input_files("#upload", str(wav))
        page.click("#upload-go")
        page.wait_for_selector(f"#sound-msg:has-text('{name}:')", timeout=60000)
    page.select_option('[data-slot="0"]', "cello")
    page.select_option('[data-slot="1"]', "voice")
    page.check('input[name=source][value=interpolate]')
    page.click("#render")
    page.wait_for_selector("#render-msg:has-text('peak')", timeout=60000)
    # the WAV the page plays: fetched by the page itself, as the player does
    src = page.get_attribute("#player", "src")
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
