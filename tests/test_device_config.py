"""The device config: examples parse, mistakes are named, a missing PCM is a clear exit 2.

So are the other things a technician hands the device: a bundle or an output
path that cannot be read or written is exit 2 with a message, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wavae.device.config import (
    DeviceConfigError,
    example_configs,
    load_config,
    parse_config,
    with_overrides,
)

from wavae.device.shipped import default_bundle, shipped_bundle  # noqa: E402

WAVAE = [sys.executable, "-m", "wavae.cli"]


def test_example_configs_parse():
    paths = example_configs()
    names = {p.name for p in paths}
    assert {"pi4-usb.toml", "pi4-i2s.toml", "jetson-orin-nano.toml"} <= names
    for path in paths:
        cfg = load_config(path)
        if cfg.bundle.path is None:  # left out: the shipped model plays
            assert cfg.bundle.start() == default_bundle()
        else:
            assert cfg.bundle.path.is_absolute()
        assert cfg.audio.rate == 48000
        assert 2 <= cfg.audio.prefill_periods <= cfg.audio.periods
    assert load_config(Path(paths[0]).with_name("jetson-orin-nano.toml")).bundle.backend == "tensorrt"
    assert load_config(Path(paths[0]).with_name("pi4-usb.toml")).bundle.path is None


def test_a_config_without_a_bundle_starts_the_shipped_model(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text("[audio]\nrate = 48000\n")
    cfg = load_config(path)
    assert default_bundle() == shipped_bundle(), "the repository ships its default model (models/)"
    assert cfg.bundle.start() == shipped_bundle()
    assert cfg.bundle.names() == {shipped_bundle().name: shipped_bundle()}


def test_example_configs_serve_the_web_page_on_loopback_and_their_lan_lines_need_a_token(tmp_path):
    import argparse
    import tomllib

    from wavae.device.cli_web import settings_from

    for path in example_configs():
        text = path.read_text()
        assert "web" in tomllib.loads(text), f"{path.name} has no [web] section"
        cfg = load_config(path)
        assert (cfg.web.host, cfg.web.port, cfg.web.lan, cfg.web.token) == ("127.0.0.1", 8080, False, "")
        # what `wavae web --config` takes from the same file: the instrument's [osc] door and [presets] folder
        args = argparse.Namespace(config=str(path), host=None, port=None, bundle=None, state_dir=None, osc_port=None)
        web = settings_from(args)
        assert (web.host, web.port, web.osc_port, web.presets_dir) == ("127.0.0.1", 8080, cfg.osc.port, cfg.presets.dir)
        assert web.max_upload == 20 * 2**20
        # the commented LAN lines, uncommented as shipped, refuse the network until a token is pasted in
        lan = (text.replace('host = "127.0.0.1"              # this machine only', 'host = "0.0.0.0"  #', 1)
               .replace("# lan = true", "lan = true").replace('# token = ""', 'token = ""'))
        assert 'host = "0.0.0.0"' in lan and "\nlan = true" in lan and '\ntoken = ""' in lan
        with pytest.raises(DeviceConfigError, match="needs `lan = true` and a `token`"):
            parse_config(tomllib.loads(lan), source=path.name)
        served = parse_config(tomllib.loads(lan.replace('token = ""', 'token = "' + "ab" * 16 + '"')), source=path.name)
        assert (served.web.host, served.web.lan, served.web.token) == ("0.0.0.0", True, "ab" * 16)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"audio": {"period_size": "abc"}}, 'audio.period_size: expected an integer between 16 and 8192, got "abc"'),
        ({"audio": {"period_size": 4}}, "audio.period_size: expected an integer between 16 and 8192, got 4"),
        ({"audio": {"rate": 48000.0}}, "audio.rate: expected an integer"),
        ({"audio": {"format": "S24_LE"}}, 'audio.format: expected one of "S16_LE", "S32_LE", "FLOAT_LE", got "S24_LE"'),
        ({"audio": {"threading": "async"}}, 'audio.threading: expected one of "inline", "worker"'),
        ({"audio": {"periods": 2, "prefill_periods": 3}}, "audio.prefill_periods: expected at most audio.periods (2)"),
        ({"audio": {"prefill_periods": 1}}, "audio.prefill_periods: expected at least 2, got 1: with one period"),
        ({"bundle": {"backend": "tflite"}}, 'bundle.backend: expected one of "onnxruntime", "tensorrt", got "tflite"'),
        ({"bundle": {"threads": True}}, "bundle.threads: expected an integer between 1 and 64, got true"),
        ({"service": {"reopen_interval_s": -1}}, "service.reopen_interval_s: expected a number between"),
        ({"controls": {"scale": 9.0}}, "controls.scale:"),
        ({"controls": {"bias": [0.0, "x"]}}, "controls.bias: expected a list of at most 512 numbers"),
        ({"controls": {"freeze": "maybe"}}, "controls.freeze:"),
        ({"debug": {"slow_ms": 5.0}}, "debug.slow_every: slow_ms and slow_every go together"),
        ({"debug": {"stall_every_s": 60.0}}, "debug.stall_every_s: repeats the stall of stall_ms, which is 0"),
        ({"audio": "loud"}, 'audio: expected a [audio] table, got "loud"'),
    ],
)
def test_bad_values_name_the_key(doc, message):
    with pytest.raises(DeviceConfigError) as e:
        parse_config(doc, source="device.toml")
    assert str(e.value).startswith("device.toml: ")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "doc, key, allowed",
    [
        ({"audio": {"perod_size": 256}}, "audio.perod_size", "period_size"),
        ({"bundle": {"file": "b"}}, "bundle.file", "path"),
        ({"controls": {"feedback_f": 800}}, "controls.feedback_f", "feedback_freq"),
        ({"servce": {}}, "[servce]", "service"),
    ],
)
def test_unknown_keys_are_errors_that_list_the_allowed_ones(doc, key, allowed):
    with pytest.raises(DeviceConfigError) as e:
        parse_config(doc, source="device.toml")
    msg = str(e.value)
    assert key in msg and "unknown" in msg and allowed in msg


def test_not_toml_and_missing_file_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio\nrate = 48000\n")
    with pytest.raises(DeviceConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(DeviceConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_relative_bundle_path_and_overrides(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text('[bundle]\npath = "bundles/b"\n[audio]\ncapture = "hw:0"\nplayback = "hw:0"\n')
    cfg = load_config(path)
    assert cfg.bundle.path == tmp_path.resolve() / "bundles" / "b"
    cfg2 = with_overrides(cfg, bundle="/x/y", capture="plughw:1", threads=3)
    assert cfg2.bundle.path == Path("/x/y") and cfg2.bundle.threads == 3
    assert cfg2.audio.capture == "plughw:1" and cfg2.audio.playback == "hw:0"
    with pytest.raises(DeviceConfigError, match="--threads: expected an integer"):
        with_overrides(cfg, threads=0)


def test_device_modules_do_not_import_torch():
    code = (
        "import sys; import wavae.device.config, wavae.device.audio_io, wavae.device.live; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'wavae.train', 'wavae.quantize'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    env.pop("ALSA_CONFIG_PATH", None)  # the stock ALSA config: no sound card here
    return subprocess.run(WAVAE + args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def test_missing_pcm_is_a_clear_message_and_exit_2(tmp_path, tiny_bundle):
    alsaaudio = pytest.importorskip("alsaaudio", reason="pyalsaaudio is not installed")
    try:
        alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device="default").close()
        pytest.skip("this machine has a sound card: PCM 'default' opens")
    except alsaaudio.ALSAAudioError:
        pass
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[bundle]\npath = "{tiny_bundle}"\n[audio]\ncapture = "default"\nplayback = "default"\n')

    r = _cli(["run", "--config", str(cfg), "--seconds", "1"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert 'capture PCM "default" (audio.capture in' in r.stderr
    assert "arecord -L" in r.stderr and "--capture NAME" in r.stderr

    # the command-line override wins over the file, and is the PCM named
    r = _cli(["run", "--config", str(cfg), "--capture", "no_such_pcm", "--seconds", "1"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert 'capture PCM "no_such_pcm"' in r.stderr
    # ...and blamed on the command line, not on the file; alsa-lib's own lines do not come first
    assert 'capture PCM "no_such_pcm" (--capture on the command line)' in r.stderr
    r = _cli(["run", "--config", str(cfg), "--capture", "hw:9", "--seconds", "1"], tmp_path)
    assert r.returncode == 2 and "(--capture on the command line)" in r.stderr
    assert "ALSA lib" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_config_from_the_cli_is_exit_2_naming_the_key(tmp_path):
    cfg = tmp_path / "device.toml"
    cfg.write_text('[audio]\nperiod_size = "abc"\n')
    r = _cli(["run", "--config", str(cfg)], tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert 'audio.period_size: expected an integer between 16 and 8192, got "abc"' in r.stderr


def _unreadable_file(path: Path) -> None:
    """Make ``path`` a file whose read fails with EIO, even for root (chmod would not stop root)."""
    path.unlink(missing_ok=True)
    path.symlink_to("/proc/self/mem")  # reading address 0 of the reader's own memory: EIO


def test_unreadable_bundle_and_unwritable_output_are_exit_2_without_traceback(tmp_path, tiny_bundle):
    import shutil

    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "in.wav", np.zeros(4800, np.float32), 48000)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    _unreadable_file(bundle / "manifest.json")
    r = _cli(["run", "--bundle", str(bundle), "--input", "in.wav", "--output", "out.wav"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot read bundle {bundle}: {bundle / 'manifest.json'}: Input/output error" in r.stderr

    # a graph file that fails while its checksum is computed
    shutil.rmtree(bundle)
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    graph = manifest["graphs"]["encoder"]["file"]
    manifest["files"][graph].pop("bytes", None)  # so that the size check does not catch it first
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _unreadable_file(bundle / graph)
    r = _cli(["run", "--bundle", str(bundle), "--input", "in.wav", "--output", "out.wav"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{bundle / graph}: Input/output error" in r.stderr

    # an output path under a regular file
    (tmp_path / "notadir").write_text("")
    r = _cli(["run", "--bundle", str(tiny_bundle), "--input", "in.wav", "--output", "notadir/out.wav"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write output notadir/out.wav" in r.stderr


def test_a_rate_the_engine_cannot_serve_is_refused_in_the_config(tmp_path):
    from wavae.device.config import DeviceConfigError, load_config

    p = tmp_path / "d.toml"
    p.write_text('[audio]\nrate = 192000\n[bundle]\npath = "b"\n')
    with pytest.raises(DeviceConfigError, match="audio.rate.*one of 8000, 11025"):
        load_config(p)


def test_optional_input_sections_are_off_when_absent_and_anchor_their_paths(tmp_path):
    cfg = parse_config({}, source="device.toml")
    assert cfg.panel is None and cfg.osc is None and cfg.midi is None and cfg.presets is None
    cfg = parse_config(
        {"panel": {"mapping": "panels/pi5.toml"}, "osc": {}, "midi": {"api": "jack"}, "presets": {"dir": "state"}},
        source="device.toml", base_dir=tmp_path,
    )
    assert cfg.panel.mapping == tmp_path / "panels/pi5.toml" and cfg.panel.adc_hz == 200.0
    assert (cfg.osc.host, cfg.osc.port) == ("127.0.0.1", 9000)
    assert cfg.midi.api == "jack" and cfg.presets.dir == tmp_path / "state"
    for path in example_configs():
        c = load_config(path)
        assert c.panel is not None and c.panel.mapping.is_file(), path


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"osc": {"port": 70000}}, "osc.port: expected an integer between 1 and 65535, got 70000"),
        ({"osc": {"host": "localhost:9000"}}, 'osc.host: expected an IP address such as "127.0.0.1"'),
        ({"midi": {"api": "coreaudio"}}, 'midi.api: expected one of "alsa", "jack"'),
        ({"midi": {"virtual": "yes"}}, "midi.virtual: expected true or false"),
        ({"panel": {"adc_hz": 5000}}, "panel.adc_hz: expected a number between 10 and 1000"),
        ({"panel": {}}, "panel.mapping: missing"),
        ({"presets": {}}, "presets.dir: missing"),
        ({"presets": {"dir": "p", "folder": "q"}}, "presets.folder: unknown key; allowed keys in [presets]: dir, load"),
    ],
)
def test_optional_input_sections_name_bad_keys(doc, message):
    with pytest.raises(DeviceConfigError) as e:
        parse_config(doc, source="device.toml")
    assert message in str(e.value)


def test_bundle_paths_list_the_bundles_to_switch_between(tmp_path):
    from wavae.device.config import with_overrides

    cfg = parse_config({"bundle": {"paths": ["b/strings", "/x/voice"], "crossfade_ms": 50}},
                       source="dev.toml", base_dir=tmp_path)
    # relative to the config; without path, the first of paths plays at start
    assert cfg.bundle.start() == tmp_path / "b" / "strings"
    assert list(cfg.bundle.names()) == ["strings", "voice"] and cfg.bundle.crossfade_ms == 50.0
    # a path not in the list is played at start and stepped from first
    cfg2 = parse_config({"bundle": {"path": "/y/screams", "paths": ["/x/voice"]}}, source="dev.toml")
    assert list(cfg2.bundle.names()) == ["screams", "voice"]
    # path alone: one bundle, nothing to switch
    assert list(parse_config({"bundle": {"path": "/y/one"}}).bundle.names()) == ["one"]
    # a bundle is selected by its folder's name: two of the same name are refused, from the file or --bundle
    with pytest.raises(DeviceConfigError, match=r"dev.toml: bundle.paths: /a/voice and /b/voice are both named 'voice'"):
        parse_config({"bundle": {"paths": ["/a/voice", "/b/voice"]}}, source="dev.toml")
    with pytest.raises(DeviceConfigError, match=r"--bundle: .*both named 'voice'"):
        with_overrides(cfg, bundle="/elsewhere/voice")
    with pytest.raises(DeviceConfigError, match=r"bundle.paths: expected a non-empty list of bundle folders"):
        parse_config({"bundle": {"paths": []}}, source="dev.toml")
