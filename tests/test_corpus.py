"""The offline corpus recipe (`wavae data`): fluidsynth strings and espeak-ng speech."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavae.cli import main as wavae_main
from wavae.train.corpus import DEFAULT_SOUNDFONT, Tools, build_corpus, find_tools, phrase_midi, render_speech
from wavae.train.data import ChunkCache, DataError

SR = 16000  # not the default, to see that the rate is honoured

needs_tools = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or shutil.which("espeak-ng") is None or not DEFAULT_SOUNDFONT.is_file(),
    reason="needs fluidsynth, espeak-ng and the FluidR3 soundfont: "
    "sudo apt-get install -y fluidsynth fluid-soundfont-gm espeak-ng",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(out, minutes=0.2, sample_rate=SR, seed=0, progress=False)


@needs_tools
def test_both_domains_are_rendered_mono_at_the_rate_and_not_silent(corpus):
    out, summary = corpus
    for domain in ("strings", "speech"):
        files = sorted((out / domain).glob("*.wav"))
        assert files and len(files) == summary[domain]["files"] == summary[domain]["rendered"]
        total = 0.0
        for f in files:
            info = sf.info(str(f))
            assert info.samplerate == SR and info.channels == 1
            x, _ = sf.read(f, dtype="float32")
            assert np.abs(x).max() == pytest.approx(0.9, abs=0.01)  # peak-normalised
            assert np.sqrt(np.mean(x**2)) > 0.02
            total += len(x) / SR
        assert summary[domain]["seconds"] == pytest.approx(total, abs=1e-2)
        assert total >= 0.2 * 60 / 2  # about half the minutes per domain
    assert not list(out.rglob(".*.tmp"))  # no leftovers of the atomic writes


@needs_tools
def test_second_run_skips_existing_files(corpus):
    out, first = corpus
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = build_corpus(out, minutes=0.2, sample_rate=SR, seed=0, progress=False)
    for domain in ("strings", "speech"):
        assert again[domain]["rendered"] == 0
        assert again[domain]["existing"] == first[domain]["files"]
        assert again[domain]["seconds"] == pytest.approx(first[domain]["seconds"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps


@needs_tools
def test_corpus_feeds_the_chunk_cache(corpus, tmp_path):
    out, summary = corpus
    cache = ChunkCache.build(out, SR, 4096, cache_dir=tmp_path)
    assert cache.n_files == summary["strings"]["files"] + summary["speech"]["files"]
    assert cache.n_skipped == 0 and len(cache) > 0


@needs_tools
def test_cli_prints_a_summary_and_rejects_bad_arguments(corpus, capsys):
    out, _ = corpus
    assert wavae_main(["data", "--out", str(out), "--minutes", "0.2", "--sample-rate", str(SR)]) == 0
    printed = capsys.readouterr().out
    assert "strings" in printed and "speech" in printed and "already there" in printed
    assert wavae_main(["data", "--out", str(out), "--minutes", "-1"]) == 2
    assert "--minutes must be a positive number" in capsys.readouterr().err


def test_missing_programs_name_the_apt_get_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth, espeak-ng or flite on this PATH
    with pytest.raises(DataError, match="apt-get install -y fluidsynth espeak-ng"):
        find_tools()


def test_missing_soundfont_is_named(tmp_path):
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed")
    with pytest.raises(DataError, match="nope.sf2"):
        find_tools(tmp_path / "nope.sf2")


def test_phrases_are_seeded():
    def messages(seed: int, i: int) -> list[str]:
        midi, _ = phrase_midi(np.random.default_rng([seed, 0, i]))
        return [str(m) for m in midi.tracks[0]]

    assert messages(0, 3) == messages(0, 3)
    assert messages(0, 3) != messages(0, 4) and messages(0, 3) != messages(1, 3)


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (the fallback when espeak-ng is absent)")
def test_flite_fallback_speaks(tmp_path):
    tools = Tools(fluidsynth="", soundfont=DEFAULT_SOUNDFONT, speech=("flite", shutil.which("flite")))
    x = render_speech(np.random.default_rng(0), SR, tools, tmp_path)
    assert len(x) > SR and np.abs(x).max() == pytest.approx(0.9, abs=0.01)


def test_flite_is_chosen_when_espeak_ng_is_absent(tmp_path, monkeypatch):
    if shutil.which("flite") is None or shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.is_file():
        pytest.skip("needs fluidsynth, flite and the FluidR3 soundfont")
    for program in ("fluidsynth", "flite"):
        (tmp_path / program).symlink_to(shutil.which(program))
    monkeypatch.setenv("PATH", str(tmp_path))  # espeak-ng is not on this PATH
    assert find_tools().speech == ("flite", str(tmp_path / "flite"))


def test_varied_recipe_plays_instruments_the_default_does_not():
    from wavae.train.corpus import EXTRA_INSTRUMENTS, INSTRUMENTS, RECIPES

    default = {i.program for i in INSTRUMENTS}
    extra = {i.program for i in EXTRA_INSTRUMENTS}
    assert not default & extra
    played = set()
    for i in range(40):
        midi, _ = phrase_midi(np.random.default_rng([0, 0, i]), RECIPES["varied"].instruments)
        played |= {m.program for m in midi.tracks[0] if m.type == "program_change"}
    assert played & extra and played <= default | extra
    assert RECIPES["varied"].minutes >= 20  # the floor for a model meant to play


@needs_tools
def test_varied_recipe_files_are_named_apart_and_rendered(tmp_path):
    summary = build_corpus(tmp_path, minutes=0.1, sample_rate=SR, seed=0, progress=False, recipe="varied")
    assert summary["recipe"] == "varied"
    for domain in ("strings", "speech"):
        files = sorted((tmp_path / domain).glob("*.wav"))
        assert files and all(f.name.startswith(f"{domain}-varied-s0-") for f in files)
        assert summary[domain]["rendered"] == len(files)
    with pytest.raises(DataError, match="unknown corpus recipe"):
        build_corpus(tmp_path, minutes=0.1, recipe="huge", progress=False)


def test_a_file_that_is_not_a_soundfont_is_refused(tmp_path):
    from wavae.cli import main as wavae_main

    fake = tmp_path / "notasoundfont.txt"
    fake.write_text("hello\n")
    assert wavae_main(["data", "--out", str(tmp_path / "c"), "--minutes", "0.1", "--soundfont", str(fake)]) == 2
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.wav"))
