"""The device side never imports torch, the training code or the quantizer.

Two proofs: ``wavae run`` (file mode, on a real bundle) succeeds in a process
where torch cannot be imported, and no file under device/ has such an import
anywhere, even inside a function.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import synth_audio

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "wavae.train", "wavae.quantize")

PROBE = r"""
import importlib.abc, json, sys
FORBIDDEN = %r
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
            attempts.append(name)
            raise ImportError(f"{name} is not importable in this test")
        return None

sys.meta_path.insert(0, Blocker())
from wavae.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
print("PROBE" + json.dumps({"rc": rc, "loaded": loaded, "attempts": attempts}))
"""


def _run_args(tiny_bundle, tmp_path) -> list[str]:
    wav = tmp_path / "in.wav"
    sf.write(wav, synth_audio(0.5, 48000, seed=1), 48000)
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"events": [{"t": 0.1, "control": "feedback_gain", "value": 0.5}]}))
    return ["run", "--bundle", str(tiny_bundle), "--input", str(wav), "--output", str(tmp_path / "out.wav"),
            "--controls", str(script)]


def test_wavae_run_works_with_torch_unimportable(tiny_bundle, tmp_path):
    # a `torch` package first on the path that refuses to import, for the real console script
    fake = tmp_path / "fake_site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is not installed on this device')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent), OMP_NUM_THREADS="1")
    exe = Path(sys.executable).parent / "wavae"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wavae"]
    args = _run_args(tiny_bundle, tmp_path)
    r = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 48000 and out.shape[0] == 24000 and np.isfinite(out).all()


def test_no_forbidden_module_is_even_attempted(tiny_bundle, tmp_path):
    args = _run_args(tiny_bundle, tmp_path)
    r = subprocess.run([sys.executable, "-c", PROBE % (FORBIDDEN,)] + args, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    line = next((x for x in r.stdout.splitlines() if x.startswith("PROBE")), None)
    assert line is not None, r.stderr
    res = json.loads(line[5:])
    assert res["rc"] == 0, r.stderr
    assert res["loaded"] == []
    assert res["attempts"] == []  # nothing on the path even tried


def _imports(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against wavae.device[.sub]
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
    return out


def test_no_device_file_imports_torch():
    files = sorted((ROOT / "device").rglob("*.py"))
    assert files
    bad = []
    for f in files:
        rel = f.relative_to(ROOT / "device")
        package = ".".join(["wavae", "device", *rel.parts[:-1]])
        for line, mod in _imports(ast.parse(f.read_text(), str(f)), package):
            if any(mod == x or mod.startswith(x + ".") for x in FORBIDDEN):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)
