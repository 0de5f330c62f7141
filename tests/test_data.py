"""The training data pipeline: decoding, mono/resampling, chunking, the chunk cache, errors."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavae.train.data import AudioError, ChunkCache, DataError, find_audio, load_audio

SR = 24000
CHUNK = 4096


@pytest.fixture
def data_dir(audio_dir, tmp_path) -> Path:
    """A private copy of the shared `audio_dir`'s audio (the cache is written next to
    it); hidden folders, such as caches other tests built there, stay behind."""
    d = tmp_path / "data"
    shutil.copytree(audio_dir, d, ignore=shutil.ignore_patterns(".*"))
    return d


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_corrupt_file_is_skipped_with_one_warning_and_counted(data_dir, caplog):
    bad = data_dir / "sub" / "broken.wav"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(3000))
    with caplog.at_level(logging.WARNING):
        cache = ChunkCache.build(data_dir, SR, CHUNK)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "broken.wav" in warnings[0].getMessage()
    assert cache.n_skipped == 1 and cache.skipped == [bad]
    assert cache.n_files == 4  # the good files all loaded
    assert cache.seconds == pytest.approx(4 * 3.0, abs=1e-3)
    assert cache.chunks.shape[1] == CHUNK and len(cache) > 0
    assert not cache.from_cache


def test_missing_folder_raises_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ChunkCache.build(tmp_path / "nowhere", SR, CHUNK)


def test_folder_without_audio_raises_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="holds no audio files"):
        ChunkCache.build(tmp_path, SR, CHUNK)


def test_every_file_unreadable_raises_a_clear_error(tmp_path, caplog):
    for i in range(2):
        (tmp_path / f"junk{i}.wav").write_bytes(b"not a wav file" * 20)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="none of the 2 audio files"):
        ChunkCache.build(tmp_path, SR, CHUNK)
    assert len(_warnings(caplog)) == 2


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def test_stereo_and_other_rates_are_mixed_to_mono_and_resampled(tmp_path):
    t = np.arange(int(2.0 * 44100)) / 44100
    tone = np.sin(2 * np.pi * 1000.0 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([0.6 * tone, 0.2 * tone], axis=1), 44100, subtype="FLOAT")
    t16 = np.arange(int(1.5 * 16000)) / 16000
    sf.write(tmp_path / "low.flac", 0.5 * np.sin(2 * np.pi * 440.0 * t16), 16000)

    x = load_audio(tmp_path / "stereo.wav", SR)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 2.0 * SR) <= 1
    assert _peak_hz(x, SR) == pytest.approx(1000.0, abs=1.0)
    assert np.abs(x[SR // 2 : -SR // 2]).max() == pytest.approx(0.4, abs=0.01)  # the mean of the channels

    y = load_audio(tmp_path / "low.flac", SR)
    assert abs(len(y) - 1.5 * SR) <= 1
    assert _peak_hz(y, SR) == pytest.approx(440.0, abs=1.0)


def test_load_audio_names_the_file_for_bad_input(tmp_path):
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.5], dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(nan, SR)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty.wav.*no samples"):
        load_audio(empty, SR)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"\x00\xff" * 500)
    with pytest.raises(AudioError, match="garbage.mp3"):
        load_audio(garbage, SR)


def test_chunks_cover_the_stream_with_half_overlap(tmp_path):
    sr, chunk = 8000, 1000
    x = ((np.arange(3700) % 997) + 1).astype(np.float32) / 2000.0  # no zero sample anywhere
    sf.write(tmp_path / "ramp.wav", x, sr, subtype="FLOAT")
    cache = ChunkCache.build(tmp_path, sr, chunk)
    starts = [0, 500, 1000, 1500, 2000, 2500]  # hop = chunk // 2
    expected = np.stack([x[s : s + chunk] for s in starts] + [x[-chunk:]])  # + one chunk aligned to the end
    np.testing.assert_array_equal(cache.chunks, expected)


def test_short_files_count_and_silent_chunks_are_dropped(tmp_path):
    sr, chunk = 8000, 2000
    rng = np.random.default_rng(0)
    for i in range(6):  # each file shorter than a chunk
        sf.write(tmp_path / f"short{i}.wav", 0.3 * rng.standard_normal(1200).astype(np.float32), sr, subtype="FLOAT")
    sf.write(tmp_path / "zz_silence.wav", np.zeros(20 * chunk, np.float32), sr, subtype="FLOAT")
    cache = ChunkCache.build(tmp_path, sr, chunk)
    assert cache.n_files == 7 and len(cache) > 0
    assert np.all(np.abs(cache.chunks).max(axis=1) > 0)  # no chunk of pure digital silence
    # stream: 6 x 1200 samples with 5 gaps of 800 (11200 non-silent), a gap, 40000 zeros;
    # 51 chunks at hop 1000, of which only the 12 starting before sample 11200 hold sound
    assert len(cache) == 12


def test_cache_is_reused_without_decoding(data_dir, caplog):
    first = ChunkCache.build(data_dir, SR, CHUNK)
    assert not first.from_cache
    before = first.path.stat()
    reference = np.array(first.chunks)

    # Replace a file's bytes by garbage of the same size and restore its mtime: the
    # cache key is unchanged, so a build that decoded anything would now skip it.
    victim = data_dir / "clip1.wav"
    st = victim.stat()
    victim.write_bytes(b"\x00" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    with caplog.at_level(logging.WARNING):
        second = ChunkCache.build(data_dir, SR, CHUNK)
    assert second.from_cache
    assert not _warnings(caplog) and second.n_skipped == 0  # nothing was decoded
    after = second.path.stat()
    assert second.path == first.path and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert isinstance(second.chunks, np.memmap)
    np.testing.assert_array_equal(second.chunks, reference)
    assert (second.n_files, second.seconds) == (first.n_files, first.seconds)

    # A changed mtime is a changed folder: decoded again, the stale cache replaced.
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = ChunkCache.build(data_dir, SR, CHUNK)
    assert not third.from_cache and third.n_skipped == 1
    assert not first.path.exists()
    assert sorted(p.suffix for p in third.path.parent.iterdir()) == [".json", ".npy"]


def test_cache_dir_can_live_elsewhere(audio_dir, tmp_path):
    before = sorted(audio_dir.rglob("*"))  # other tests may have cached into the shared folder
    cache = ChunkCache.build(audio_dir, SR, CHUNK, cache_dir=tmp_path / "cache")
    assert cache.path.parent == tmp_path / "cache" and cache.path.is_file()
    assert sorted(audio_dir.rglob("*")) == before  # nothing written next to the audio
    assert find_audio(audio_dir) == sorted(audio_dir.glob("*.wav"))  # the cache folder is not audio


def test_too_little_audio_says_how_much_is_needed(tmp_path):
    sf.write(tmp_path / "tiny.wav", 0.1 * np.ones(1600, np.float32), 16000)  # 0.1 s
    with pytest.raises(DataError, match=r"needs at least 0\.171 s \(4096 samples at 24000 Hz\), found 0\.100 s"):
        ChunkCache.build(tmp_path, SR, CHUNK)


def test_data_module_does_not_import_torch():
    code = "import sys, wavae.train.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
