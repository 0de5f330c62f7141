"""Every subcommand against hostile input: no traceback, exit code 2, one line
that names the problem, and no file changed or created that should not be.

The inputs are what a hostile but fair new user gives: a missing path, an
empty file, a folder, a text file, a one-sample WAV (where too short is an
error), NaN and inf samples, and NaN, inf, negative or huge numbers.  Each
case runs the real CLI in-process (torch is imported once).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavae.cli import main as wavae_main


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files = {"missing": d / "missing.wav", "dir": d / "folder", "empty": d / "empty.wav", "text": d / "notes.txt"}
    files["dir"].mkdir()
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n")
    one = d / "one.wav"
    sf.write(one, np.array([0.1], np.float32), 48000)
    nan = d / "nan.wav"
    x = np.full(4800, 0.1, np.float32)
    x[100] = np.nan
    sf.write(nan, x, 48000, subtype="FLOAT")
    inf = d / "inf.wav"
    x[100] = np.inf
    sf.write(inf, x, 48000, subtype="FLOAT")
    good = d / "good.wav"
    sf.write(good, (0.1 * np.sin(np.arange(24000) / 9.0)).astype(np.float32), 48000)
    files.update(one=one, nan=nan, inf=inf, good=good)
    return files


def _cases(h: dict[str, Path], run: Path, bundle: Path, out: Path) -> list[tuple[str, list[str], str]]:
    """(id, argv, a phrase the one line must hold)."""
    o = str(out / "new.wav")
    cases = []
    for kind, phrase in (("missing", "does not exist"), ("dir", "is a folder"), ("empty", "empty"),
                         ("text", "cannot read"), ("nan", "NaN/Inf"), ("inf", "NaN/Inf")):
        src = str(h[kind])
        cases.append((f"run-input-{kind}", ["run", "--bundle", str(bundle), "--input", src, "--output", o], phrase))
        cases.append((f"reconstruct-input-{kind}", ["reconstruct", str(run), src, o], phrase))
        cases.append((f"profile-input-{kind}", ["profile", "--bundle", str(bundle), "--input", src,
                                                 "--report", str(out / "r")], phrase))
        cases.append((f"verify-input-{kind}", ["verify", str(bundle), "--run", str(run), "--input", src],
                      phrase if kind in ("missing", "dir", "empty") else ""))
    cases += [
        ("reconstruct-one-sample-48k", ["reconstruct", str(run), str(h["one"]), o], "too short"),
        ("profile-one-sample", ["profile", "--bundle", str(bundle), "--input", str(h["one"]),
                                "--report", str(out / "r")], "shorter"),
        ("run-bundle-missing", ["run", "--bundle", str(h["missing"]), "--input", str(h["good"]), "--output", o],
         "does not exist"),
        ("run-bundle-text", ["run", "--bundle", str(h["text"]), "--input", str(h["good"]), "--output", o],
         "not a directory"),
        ("run-bundle-empty-dir", ["run", "--bundle", str(h["dir"]), "--input", str(h["good"]), "--output", o],
         "not a bundle"),
        ("run-script-folder", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                               "--controls", str(h["dir"])], "is a folder"),
        ("run-script-text", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                             "--controls", str(h["text"])], "control script"),
        ("run-output-is-input", ["run", "--bundle", str(bundle), "--input", str(h["good"]),
                                 "--output", str(h["good"])], "is the input"),
        ("run-output-folder", ["run", "--bundle", str(bundle), "--input", str(h["good"]),
                               "--output", str(h["dir"])], "is a folder"),
        ("run-period-nan", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                            "--period", "nan"], "invalid int"),
        ("run-period-huge", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                             "--period", "1000000000"], "period"),
        ("run-period-negative", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                                 "--period", "-5"], "period"),
        ("run-set-nan", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                         "--set", "feedback_gain=nan"], "feedback_gain"),
        ("run-set-inf", ["run", "--bundle", str(bundle), "--input", str(h["good"]), "--output", o,
                         "--set", "bias.0=inf"], "bias.0"),
        ("reconstruct-run-is-file", ["reconstruct", str(h["text"]), str(h["good"]), o], "is a file"),
        ("reconstruct-run-missing", ["reconstruct", str(h["missing"]), str(h["good"]), o], "does not exist"),
        ("reconstruct-block-odd", ["reconstruct", str(run), str(h["good"]), o, "--streaming",
                                   "--block", "1000"], "block"),
        ("export-block-huge", ["export", str(run), "--out", str(out / "b"), "--block", "1280000"], "too long"),
        ("export-block-negative", ["export", str(run), "--out", str(out / "b"), "--block", "-128"], "block"),
        ("export-block-nan", ["export", str(run), "--out", str(out / "b"), "--block", "nan"], "invalid int"),
        ("export-run-missing", ["export", str(h["missing"]), "--out", str(out / "b")], "does not exist"),
        ("train-lr-nan", ["train", "--preset", "tiny", "--data", str(h["dir"]), "--out", str(out / "t"),
                          "--set", "train.lr=NaN"], "finite"),
        ("train-lr-inf", ["train", "--preset", "tiny", "--data", str(h["dir"]), "--out", str(out / "t"),
                          "--set", "train.lr=Infinity"], "finite"),
        ("train-steps-negative", ["train", "--preset", "tiny", "--data", str(h["dir"]), "--out", str(out / "t"),
                                  "--steps", "-1"], "steps"),
        ("train-data-missing", ["train", "--preset", "tiny", "--data", str(h["missing"]), "--out", str(out / "t")],
         ""),
        ("prune-ratio-nan", ["prune", str(run), "--ratio", "nan", "--out", str(out / "p")], "ratio"),
        ("prune-ratio-huge", ["prune", str(run), "--ratio", "1e9", "--out", str(out / "p")], "ratio"),
        ("engine-bundle-text", ["engine", str(h["text"])], ""),
        ("verify-bundle-missing", ["verify", str(h["missing"]), "--run", str(run), "--input", str(h["good"])],
         "does not exist"),
        ("status-file-missing", ["status", "--file", str(h["missing"])], ""),
        ("data-minutes-negative", ["data", "--out", str(out / "c"), "--minutes", "-1"], "minutes"),
        ("data-minutes-nan", ["data", "--out", str(out / "c"), "--minutes", "nan"], "minutes"),
        ("data-soundfont-text", ["data", "--out", str(out / "c"), "--soundfont", str(h["text"])], "not a SoundFont"),
        ("evaluate-input-missing", ["evaluate", str(bundle), "--data", str(h["dir"]), "--input", str(h["missing"]),
                                    "--report", str(out / "e")], "does not exist"),
        ("latent-encode-text", ["latent", "encode", "--bundle", str(bundle), str(h["text"]), "-o", str(out / "a.npz")],
         "cannot read"),
        ("latent-decode-missing", ["latent", "decode", "--bundle", str(bundle), str(h["missing"]), "-o", o],
         "does not exist"),
        ("transfer-input-nan", ["transfer", "--bundle", str(bundle), str(h["nan"]), "-o", o], "NaN"),
    ]
    return cases


def test_every_subcommand_refuses_hostile_input_in_one_line(hostile, trained_tiny_run, tiny_bundle, tmp_path,
                                                           capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    out.mkdir()
    watched = [hostile["good"].parent, Path(trained_tiny_run), Path(tiny_bundle), out]
    failures = []
    for case_id, argv, phrase in _cases(hostile, Path(trained_tiny_run), Path(tiny_bundle), out):
        before = [_tree(w) for w in watched]
        capsys.readouterr()
        try:
            rc = wavae_main(argv)
        except BaseException as e:  # noqa: BLE001 - the point is to catch anything escaping
            failures.append(f"{case_id}: raised {type(e).__name__}: {e}")
            continue
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        problems = []
        if rc != 2:
            problems.append(f"exit {rc}")
        if "Traceback" in err:
            problems.append("a traceback")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines")
        elif not lines[0].startswith(f"wavae {argv[0]}"):
            problems.append("a line that does not name the command")
        if phrase and phrase.lower() not in err.lower():
            problems.append(f"no {phrase!r}")
        after = [_tree(w) for w in watched]
        for w, b, a in zip(watched, before, after):
            if a != b:
                problems.append(f"files changed under {w.name}: {sorted(set(a.items()) ^ set(b.items()))[:3]}")
        if problems:
            failures.append(f"{case_id}: {', '.join(problems)}: {err.strip()[:300]}")
    assert not failures, "\n".join(failures)
