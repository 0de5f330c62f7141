"""Audio files read and written in blocks: checks up front, atomic on error,
and a cut WAV is noticed."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wavae.errors import WavaeError
from wavae.device.audio_file import AudioFileError, AudioReader, AudioWriter, wav_truncation


def _wav(path, seconds=1.0, rate=48000, channels=1):
    x = (0.1 * np.sin(np.arange(int(seconds * rate)) / 10.0)).astype(np.float32)
    x = np.stack([x] * channels, axis=1)
    sf.write(path, x, rate, subtype="FLOAT")
    return x


def test_blocks_give_back_the_whole_file(tmp_path):
    x = _wav(tmp_path / "a.wav", 1.0, channels=2)
    with AudioReader(tmp_path / "a.wav") as r:
        got = np.concatenate(list(r.blocks(4096)))
        assert (r.frames, r.channels, r.rate) == (48000, 2, 48000)
    np.testing.assert_array_equal(got, x)


def test_a_cut_wav_reports_the_missing_frames(tmp_path):
    p = tmp_path / "cut.wav"
    _wav(p, 1.0)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 24000 * 4])  # half the data chunk gone
    assert wav_truncation(p) == 24000
    with AudioReader(p) as r:
        assert r.truncated_frames == 24000
    assert wav_truncation(tmp_path / "nope.wav") is None
    _wav(tmp_path / "whole.wav")
    assert wav_truncation(tmp_path / "whole.wav") == 0


def test_a_writer_that_fails_leaves_the_old_file(tmp_path):
    out = tmp_path / "o.wav"
    out.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with AudioWriter(out, 48000, 1) as w:
            w.write(np.zeros((100, 1), np.float32))
            raise RuntimeError("render failed half-way")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav"]


def test_a_writer_writes_in_blocks(tmp_path):
    out = tmp_path / "o.flac"
    with AudioWriter(out, 16000, 1, subtype="PCM_16") as w:
        for _ in range(4):
            w.write(np.full((1000, 1), 0.25, np.float32))
    y, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and y.shape == (4000,) and np.allclose(y, 0.25, atol=1e-4)


def test_a_folder_or_the_input_is_no_output(tmp_path):
    src = tmp_path / "x.wav"
    _wav(src)
    with pytest.raises(WavaeError, match="is a folder"):
        AudioReader(tmp_path)
    with pytest.raises(WavaeError, match="is a folder"):
        AudioWriter(tmp_path, 48000, 1)
    with pytest.raises(WavaeError, match="is the input"):
        AudioWriter(src, 48000, 1, inputs=(src,))
    with pytest.raises(AudioFileError, match="unknown audio type"):
        AudioWriter(tmp_path / "o.txt", 48000, 1)
