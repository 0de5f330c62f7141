"""Presets: every control and the bundle saved atomically, loaded in one snapshot, corrupt files set aside."""

from __future__ import annotations

import json
import logging
import os

import pytest

from wavae.device.actions import Actions, Rejected
from wavae.device.controls import Controls
from wavae.device.presets import PresetError, PresetStore, check_name, control_values


def _controls(dim: int = 4) -> Controls:
    c = Controls(dim)
    c.update({"bias": [1.0, -2.0, 0.5, 0.0], "feedback_freq": 800.0, "freeze": True, "loudness_source": "manual"})
    return c


def test_save_then_load_restores_every_control_in_one_snapshot(tmp_path):
    store = PresetStore(tmp_path / "p")
    c = _controls()
    saved = control_values(c)
    path = store.save("drone", c, bundle="strings-int8")
    doc = json.loads(path.read_text())
    assert doc["bundle"] == "strings-int8" and doc["controls"] == saved
    assert set(saved) == {"bias"} | {n for n in c.names() if not n.startswith("bias")}
    assert os.listdir(tmp_path / "p") == ["drone.json"]  # no temporary file left behind
    c.reset()
    version = c.snapshot.version
    c.update(store.load("drone", c).values)
    assert control_values(c) == saved
    assert c.snapshot.version == version + 1  # all controls in one snapshot


def test_corrupt_preset_is_moved_aside_at_scan_and_never_crashes(tmp_path, caplog):
    store = PresetStore(tmp_path)
    c = _controls()
    store.save("good", c, None)
    (tmp_path / "broken.json").write_text('{"format": "wavae-preset", "version": 1, "controls": {"scale": ')
    (tmp_path / "alien.json").write_text(json.dumps({"format": "wavae-preset", "version": 1, "bundle": None,
                                                     "controls": {"scale": 99.0}}))
    (tmp_path / "future.json").write_text(json.dumps({"format": "wavae-preset", "version": 7, "controls": {}}))
    with caplog.at_level(logging.ERROR, logger="wavae.device.presets"):
        assert store.scan(c) == ["good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alien.json.corrupt", "broken.json.corrupt", "future.json.corrupt", "good.json"]
    text = caplog.text
    assert "broken skipped" in text and "outside its range" in text and "version 7 is not supported" in text


def test_preset_from_a_bundle_with_another_latent_size_is_fitted(tmp_path):
    store = PresetStore(tmp_path)
    store.save("wide", _controls(4), None)
    small = Controls(2)
    p = store.load("wide", small)
    assert p.fitted and p.values["bias"] == (1.0, -2.0)
    big = Controls(6)
    assert store.load("wide", big).values["bias"] == (1.0, -2.0, 0.5, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("name", ["", "../etc", ".hidden", "a/b", "x" * 65, "p.json", 3])
def test_bad_preset_names_are_refused(name):
    with pytest.raises(PresetError, match="not allowed"):
        check_name(name)


def test_actions_step_through_presets_and_refuse_clearly(tmp_path):
    c = _controls()
    a = Actions(c, PresetStore(tmp_path), bundle="b")
    with pytest.raises(Rejected, match="no presets saved yet"):
        a.step_preset(1)
    c.set("scale", 0.5)
    assert a.save_preset() == "p01"
    c.set("scale", 1.5)
    assert a.save_preset() == "p01"  # saving again writes over the current one
    a.save_preset("zz")
    c.set("scale", 3.0)
    assert a.step_preset(1) == "p01" and c.get("scale") == 1.5  # zz -> wraps to p01
    assert a.step_preset(-1) == "zz"
    with pytest.raises(Rejected, match="no preset named 'nope'"):
        a.load_preset("nope")
    with pytest.raises(Rejected, match=r"no bundles to switch to \(list them in \[bundle\] paths"):
        a.do("bundle.next")
    assert Actions(c).status()["preset"] is None
    with pytest.raises(Rejected, match=r"add a \[presets\] section"):
        Actions(c).save_preset("x")


def test_unwritable_preset_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PresetError, match="cannot create the preset folder"):
        PresetStore(blocker / "presets").save("x", _controls(), None)
