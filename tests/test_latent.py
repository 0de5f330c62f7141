"""Latent paths and `wavae latent` / `wavae transfer`, against their formulas (device code, a real bundle)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_audio
from wavae.cli import main as wavae_main
from wavae.device.bundle import bundle_sha256, load_bundle
from wavae.device.latent import (
    Bias,
    BundleMismatchError,
    Curve,
    LatentOpError,
    LatentPath,
    PathCodec,
    PathMeta,
    PathShapeError,
    Reverse,
    Scale,
    apply_ops,
    interpolate,
    load_path,
    op_from_json,
    plane,
    save_path,
)


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = wavae_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def expect_error(capsys, match: str, *args) -> str:
    rc, _, err = cli(capsys, *args)
    assert rc != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line a person can read
    assert match in lines[0], lines[0]
    return lines[0]


def random_path(meta: PathMeta, n: int, seed: int) -> LatentPath:
    rng = np.random.default_rng(seed)
    return LatentPath(rng.standard_normal((meta.latent_dim, n)).astype(np.float32),
                      rng.uniform(0, 1, n).astype(np.float32), meta)


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def meta(bundle):
    return PathMeta.of(bundle)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sounds")
    a, b = d / "a.wav", d / "b.wav"
    sf.write(a, synth_audio(1.0, 44100, seed=1), 44100)  # another rate than the model's: resampled
    x = synth_audio(0.6, 16000, seed=2)
    sf.write(b, np.stack([x, 0.5 * x], axis=1), 16000)  # stereo: mixed to mono
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def encoded(tiny_bundle, sounds, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("paths")
    out = {}
    for name, wav in sounds.items():
        out[name] = d / f"{name}.npz"
        assert wavae_main(["latent", "encode", "--bundle", str(tiny_bundle), str(wav), "-o", str(out[name])]) == 0
    return out


# -- the file and its identity -------------------------------------------------
def test_bundle_sha256_names_the_files_not_the_export(tiny_bundle, tmp_path):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    again = dict(m, source={"run": "elsewhere", "created": "2030-01-01T00:00:00Z"})
    assert bundle_sha256(again) == bundle_sha256(m)
    other = json.loads(json.dumps(m))
    other["files"]["decoder.onnx"]["sha256"] = "0" * 64
    assert bundle_sha256(other) != bundle_sha256(m)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    assert load_bundle(copy).sha256 == load_bundle(tiny_bundle).sha256


def test_path_file_round_trip_keeps_arrays_and_meta(meta, tmp_path):
    p = random_path(meta, 37, 0)
    save_path(tmp_path / "p.npz", p)
    q = load_path(tmp_path / "p.npz")
    np.testing.assert_array_equal(q.z, p.z)
    np.testing.assert_array_equal(q.loudness, p.loudness)
    assert q.meta == p.meta


def test_encode_length_rate_and_channels(encoded, bundle, sounds):
    for name, wav in sounds.items():
        info = sf.info(str(wav))
        n_model = round(info.frames * bundle.sample_rate / info.samplerate)
        p = load_path(encoded[name])
        assert p.z.shape == (bundle.latent_dim, -(-n_model // bundle.frame))
        assert p.loudness.shape == (p.frames,)
        assert p.meta == PathMeta.of(bundle)
        assert np.isfinite(p.z).all() and p.z.std() > 0


def test_encode_matches_the_streaming_encoder_block_by_block(bundle):
    # the path is the encoder's own output, block after block from zero state
    x = synth_audio(0.1, bundle.sample_rate, seed=3)[: 5 * bundle.block]
    with PathCodec(bundle) as codec:
        p = codec.encode(x)
        state = codec.backend.init_state("encoder")
        want = []
        for k in range(5):
            out, state = codec.backend.process("encoder", {"audio": x[k * bundle.block:(k + 1) * bundle.block]}, state)
            want.append(out["z_mean"].reshape(bundle.latent_dim, -1).copy())
    np.testing.assert_array_equal(p.z, np.concatenate(want, axis=1))


def test_decode_gives_finite_audio_of_n_frames(capsys, tiny_bundle, bundle, encoded, tmp_path):
    for name in ("a", "b"):
        wav = tmp_path / f"{name}.wav"
        rc, out, _ = cli(capsys, "latent", "decode", "--bundle", tiny_bundle, encoded[name], "-o", wav)
        assert rc == 0, out
        y, sr = sf.read(wav, dtype="float32")
        assert sr == bundle.sample_rate
        assert y.shape == (load_path(encoded[name]).frames * bundle.frame,)
        assert np.isfinite(y).all()


def test_decode_of_an_odd_length_equals_the_decoder_on_held_frames(bundle, meta):
    p = random_path(meta, 2 * bundle.frames_per_block + 1, 4)
    with PathCodec(bundle) as codec:
        y = codec.decode(p)
        longer = codec.decode(p.replace(z=np.concatenate([p.z, p.z[:, -1:]], axis=1),
                                        loudness=np.append(p.loudness, p.loudness[-1])))
    assert y.shape == (p.frames * bundle.frame,)
    np.testing.assert_array_equal(y, longer[: y.size])  # causal: the held tail changes nothing before it


# -- operators against their formulas ------------------------------------------
def test_interpolate_matches_the_seeds_formula(capsys, encoded, tmp_path):
    out = tmp_path / "ab.npz"
    rc, _, err = cli(capsys, "latent", "interpolate", encoded["a"], encoded["b"], "-o", out)
    assert rc == 0, err
    a, b, ab = load_path(encoded["a"]), load_path(encoded["b"]), load_path(out)
    N = min(a.frames, b.frames)
    assert ab.frames == N
    for n in range(N):
        want = a.z[:, n].astype(np.float64) * (1 - n / N) + b.z[:, n].astype(np.float64) * (n / N)
        assert np.abs(ab.z[:, n] - want).max() <= 1e-6
        want_l = a.loudness[n] * (1 - n / N) + b.loudness[n] * (n / N)
        assert abs(ab.loudness[n] - want_l) <= 1e-6


def test_interpolate_length_holds_the_shorter_paths_last_frame(meta):
    a, b = random_path(meta, 10, 1), random_path(meta, 6, 2)
    ab = interpolate(a, b, length=12)
    n = 9
    want = a.z[:, n] * (1 - n / 12) + b.z[:, 5] * (n / 12)
    np.testing.assert_allclose(ab.z[:, n], want, atol=1e-6)


def test_reverse_twice_is_the_identity(capsys, encoded, tmp_path):
    out = tmp_path / "rr.npz"
    assert cli(capsys, "latent", "edit", encoded["a"], "-o", out, "--reverse", "--reverse")[0] == 0
    a, rr = load_path(encoded["a"]), load_path(out)
    np.testing.assert_array_equal(rr.z, a.z)
    np.testing.assert_array_equal(rr.loudness, a.loudness)
    once = Reverse().apply(a)
    np.testing.assert_array_equal(once.z[:, 0], a.z[:, -1])


def test_scale_one_and_bias_zero_change_nothing(capsys, encoded, tmp_path):
    out = tmp_path / "same.npz"
    assert cli(capsys, "latent", "edit", encoded["a"], "-o", out, "--scale", 1, "--bias", "0=0", "--bias", "3=0")[0] == 0
    a, same = load_path(encoded["a"]), load_path(out)
    np.testing.assert_array_equal(same.z, a.z)
    np.testing.assert_array_equal(same.loudness, a.loudness)


def test_edit_applies_operators_in_command_line_order(capsys, encoded, tmp_path):
    a = load_path(encoded["a"])
    cli(capsys, "latent", "edit", encoded["a"], "-o", tmp_path / "sb.npz", "--scale", 2, "--bias", "1=0.5")
    cli(capsys, "latent", "edit", encoded["a"], "-o", tmp_path / "bs.npz", "--bias", "1=0.5", "--scale", 2)
    sb, bs = load_path(tmp_path / "sb.npz"), load_path(tmp_path / "bs.npz")
    np.testing.assert_allclose(sb.z[1], a.z[1] * 2 + 0.5, atol=1e-6)
    np.testing.assert_allclose(bs.z[1], (a.z[1] + 0.5) * 2, atol=1e-6)
    np.testing.assert_allclose(sb.z[0], a.z[0] * 2, atol=1e-6)


def test_randomize_adds_seeded_gaussian_noise(capsys, encoded, tmp_path):
    a = load_path(encoded["a"])
    for name in ("r1", "r2"):
        cli(capsys, "latent", "edit", encoded["a"], "-o", tmp_path / f"{name}.npz", "--randomize", 0.5, "--seed", 7)
    r1, r2 = load_path(tmp_path / "r1.npz"), load_path(tmp_path / "r2.npz")
    np.testing.assert_array_equal(r1.z, r2.z)  # the same seed, the same path
    want = a.z + (0.5 * np.random.default_rng(7).standard_normal(a.z.shape)).astype(np.float32)
    np.testing.assert_allclose(r1.z, want, atol=1e-6)


def test_curve_add_and_set_follow_linear_breakpoints(capsys, encoded, tmp_path):
    curve = tmp_path / "c.json"
    pts = [[1.0, -1.0], [0.0, 0.0], [0.5, 2.0]]  # unsorted on purpose
    curve.write_text(json.dumps(pts))
    a = load_path(encoded["a"])
    t = np.arange(a.frames) / (a.frames - 1)
    ramp = np.interp(t, [0.0, 0.5, 1.0], [0.0, 2.0, -1.0])
    for mode in ("add", "set"):
        out = tmp_path / f"{mode}.npz"
        assert cli(capsys, "latent", "edit", encoded["a"], "-o", out, "--curve", f"2={curve}", "--curve-mode", mode)[0] == 0
        got = load_path(out)
        want = a.z[2] + ramp if mode == "add" else ramp
        np.testing.assert_allclose(got.z[2], want, atol=1e-6)
        np.testing.assert_array_equal(got.z[3], a.z[3])


def test_plane_is_bilinear_over_the_corners(meta, tmp_path):
    A, B, C, D = (random_path(meta, 20, s) for s in range(4))
    x, y = 0.3, 0.8
    p = plane([A, B, C, D], (x, y))
    want = A.z * (1 - x) * (1 - y) + B.z * x * (1 - y) + C.z * (1 - x) * y + D.z * x * y
    np.testing.assert_allclose(p.z, want, atol=1e-6)
    np.testing.assert_allclose(plane([A, B, C, D], (0.0, 0.0)).z, A.z, atol=1e-6)
    np.testing.assert_allclose(plane([A, B, C, D], (1.0, 1.0)).z, D.z, atol=1e-6)
    # a gesture from corner A to corner D: the path starts at A and ends at D
    g = plane([A, B, C, D], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(g.z[:, 0], A.z[:, 0], atol=1e-6)
    np.testing.assert_allclose(g.z[:, -1], D.z[:, -1], atol=1e-6)
    s = 10 / 19
    mid = A.z[:, 10] * (1 - s) ** 2 + (B.z[:, 10] + C.z[:, 10]) * s * (1 - s) + D.z[:, 10] * s * s
    np.testing.assert_allclose(g.z[:, 10], mid, atol=1e-6)


def test_plane_cli_fixed_point_and_gesture(capsys, encoded, tmp_path):
    a, b = encoded["a"], encoded["b"]
    rc, _, err = cli(capsys, "latent", "plane", a, b, a, b, "--x", 1, "--y", 0, "-o", tmp_path / "p.npz")
    assert rc == 0, err
    np.testing.assert_allclose(load_path(tmp_path / "p.npz").z, load_path(b).z, atol=1e-6)
    g = tmp_path / "g.json"
    g.write_text(json.dumps([[0, 0, 0], [1, 1, 0]]))
    assert cli(capsys, "latent", "plane", a, b, a, b, "--xy", g, "-o", tmp_path / "g.npz")[0] == 0


def test_web_json_operators_are_the_cli_operators(meta):
    p = random_path(meta, 9, 5)
    ops = [op_from_json(o) for o in (
        {"op": "scale", "s": 0.5}, {"op": "bias", "dim": 1, "value": 2.0}, {"op": "reverse"},
        {"op": "curve", "dim": 0, "points": [[0, 1], [1, 1]], "mode": "set"})]
    assert ops == [Scale(0.5), Bias(1, 2.0), Reverse(), Curve(0, ((0.0, 1.0), (1.0, 1.0)), "set")]
    got = apply_ops(p, ops)
    np.testing.assert_allclose(got.z[1], (p.z[1] * 0.5 + 2.0)[::-1], atol=1e-6)
    np.testing.assert_array_equal(got.z[0], np.ones(9, np.float32))


# -- style transfer ---------------------------------------------------------------
def test_transfer_follows_the_input_or_holds_the_loudness(capsys, tiny_bundle, bundle, sounds, tmp_path):
    info = sf.info(str(sounds["a"]))
    frames = -(-round(info.frames * bundle.sample_rate / info.samplerate) // bundle.frame)
    for extra in ((), ("--loudness", 0.7)):
        out = tmp_path / f"t{len(extra)}.wav"
        rc, _, err = cli(capsys, "transfer", "--bundle", tiny_bundle, sounds["a"], "-o", out, *extra)
        assert rc == 0, err
        y, sr = sf.read(out, dtype="float32")
        assert sr == bundle.sample_rate and y.shape == (frames * bundle.frame,) and np.isfinite(y).all()
    with PathCodec(bundle) as codec:
        p = codec.encode_file(sounds["a"])
    held = apply_ops(p, [])
    assert held.loudness.std() > 0  # the input's own loudness moves


# -- errors: one line, no traceback ---------------------------------------------
def test_a_path_from_another_bundle_is_refused(capsys, tiny_bundle, bundle, meta, encoded, tmp_path):
    other = PathMeta("f" * 64, meta.sample_rate, meta.frame, meta.latent_dim)
    foreign = tmp_path / "foreign.npz"
    save_path(foreign, random_path(other, 5, 0))
    expect_error(capsys, "encoded by another bundle", "latent", "decode", "--bundle", tiny_bundle, foreign,
                 "-o", tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()
    expect_error(capsys, "different bundles", "latent", "interpolate", encoded["a"], foreign, "-o", tmp_path / "y.npz")
    with pytest.raises(BundleMismatchError):
        interpolate(load_path(encoded["a"]), load_path(foreign))


def test_wrong_shapes_are_refused(capsys, meta, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, z=np.zeros((meta.latent_dim + 1, 4), np.float32), loudness=np.zeros(4, np.float32),
             meta=np.array(json.dumps(PathMeta(**{**meta.__dict__}).to_json())))
    expect_error(capsys, "z must be [latent_dim=", "latent", "edit", bad, "-o", tmp_path / "o.npz", "--reverse")
    np.savez(bad, z=np.zeros((meta.latent_dim, 4), np.float32), loudness=np.zeros(3, np.float32),
             meta=np.array(json.dumps(meta.to_json())))
    expect_error(capsys, "loudness must be [frames=4]", "latent", "edit", bad, "-o", tmp_path / "o.npz")
    with pytest.raises(PathShapeError):
        LatentPath(np.zeros((meta.latent_dim, 3), np.float32), np.zeros(2, np.float32), meta)


@pytest.mark.parametrize("args, match", [
    (("latent", "edit", "{a}", "-o", "{t}/o.npz", "--bias", "x=1"), "--bias takes DIM=VALUE"),
    (("latent", "edit", "{a}", "-o", "{t}/o.npz", "--bias", "99=1"), "dimension 99 does not exist"),
    (("latent", "edit", "{a}", "-o", "{t}/o.npz", "--bias", "1=abc"), "is not a number"),
    (("latent", "edit", "{a}", "-o", "{t}/o.npz", "--randomize", "-1"), "sigma must be >= 0"),
    (("latent", "edit", "{a}", "-o", "{t}/o.npz", "--curve", "0={t}/missing.json"), "does not exist"),
    (("latent", "edit", "{a}", "-o", "{a}", "--reverse"), "is the input"),
    (("latent", "edit", "{t}/none.npz", "-o", "{t}/o.npz"), "does not exist"),
    (("latent", "edit", "{wav}", "-o", "{t}/o.npz"), "is not a latent path"),
    (("latent", "interpolate", "{a}", "{a}", "-o", "{t}/o.npz", "--length", "0"), "length must be"),
    (("latent", "plane", "{a}", "{a}", "{a}", "{a}", "-o", "{t}/o.npz", "--x", "0.5"), "needs a position"),
    (("latent", "plane", "{a}", "{a}", "{a}", "{a}", "-o", "{t}/o.npz", "--x", "2", "--y", "0"), "run from 0 to 1"),
    (("latent", "decode", "--bundle", "{t}/nobundle", "{a}", "-o", "{t}/o.wav"), "does not exist"),
    (("latent", "encode", "--bundle", "{bundle}", "{t}/none.wav", "-o", "{t}/o.npz"), "does not exist"),
    (("latent", "encode", "--bundle", "{bundle}", "{wav}", "-o", "{t}/nodir/o.npz"), "does not exist"),
    (("transfer", "--bundle", "{bundle}", "{wav}", "-o", "{t}/o.wav", "--loudness", "3"), "loudness runs from 0 to 1"),
])
def test_bad_input_is_one_line_without_traceback(capsys, tiny_bundle, encoded, sounds, tmp_path, args, match):
    fill = {"a": encoded["a"], "t": tmp_path, "wav": sounds["a"], "bundle": tiny_bundle}
    expect_error(capsys, match, *(a.format(**fill) for a in args))


def test_bad_curve_file_is_refused(capsys, encoded, tmp_path):
    c = tmp_path / "c.json"
    for content, match in (("not json", "is not JSON"), ("[[0, 1, 2]]", "list of 2 numbers"),
                           ("[[1.5, 0]]", "t runs from 0"), ("[]", "non-empty list")):
        c.write_text(content)
        expect_error(capsys, match, "latent", "edit", encoded["a"], "-o", tmp_path / "o.npz", "--curve", f"0={c}")
    with pytest.raises(LatentOpError):
        op_from_json({"op": "wobble"})
