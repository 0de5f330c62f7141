"""Atomic writes leave no stale temporaries; paths get one check each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wavae.fileio import atomic_write_bytes, clean_stale_temps, replace_dir, temp_dir_beside
from wavae.paths import PathError, input_dir, input_file, output_file, same_file


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_write_replaces_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_killed_writers_temporaries_are_removed_on_the_next_write(tmp_path):
    out = tmp_path / "bundle"
    dead = _dead_pid()
    stale_dir = tmp_path / f".bundle.{dead}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "graph.onnx").write_bytes(b"x" * 10)
    stale_file = tmp_path / f".bundle.{dead}.zz.old"
    stale_file.write_bytes(b"old")
    live = tmp_path / f".bundle.{os.getppid()}.keep.tmp"  # a writer that still runs
    live.mkdir()
    other = tmp_path / f".other.{dead}.x.tmp"  # another target's: not ours to touch
    other.mkdir()

    tmp = temp_dir_beside(out)
    (tmp / "manifest.json").write_text("{}")
    replace_dir(tmp, out)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["bundle", live.name, other.name])
    assert clean_stale_temps(out) == []


def test_input_checks_name_the_real_problem(tmp_path):
    with pytest.raises(PathError, match="does not exist"):
        input_file(tmp_path / "nope.wav")
    with pytest.raises(PathError, match="is a folder"):
        input_file(tmp_path)
    f = tmp_path / "a.wav"
    f.write_bytes(b"")
    with pytest.raises(PathError, match="is a file; give a folder"):
        input_dir(f)
    assert input_file(f) == f


def test_an_output_that_is_the_input_is_refused_even_through_a_link(tmp_path):
    src = tmp_path / "x.wav"
    src.write_bytes(b"audio")
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "x.wav"):
        with pytest.raises(PathError, match="is the input"):
            output_file(out, inputs=(src,))
    assert src.read_bytes() == b"audio"
    assert same_file(src, link)


def test_an_output_folder_or_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(PathError, match="is a folder"):
        output_file(tmp_path)
    with pytest.raises(PathError, match="does not exist; create it"):
        output_file(tmp_path / "new" / "o.wav")
    assert not (tmp_path / "new").exists()
    assert output_file(tmp_path / "o.wav") == tmp_path / "o.wav"
