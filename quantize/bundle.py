"""The bundle on the desktop side: manifest rules, checksums, and streaming a
bundle through onnxruntime (docs/bundle.md).

Nothing here imports torch: the same rules as the device reader
(``wavae.device.bundle``), usable by ``wavae verify``, the int8 calibrator and
the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from wavae.errors import WavaeError

FORMAT = "wavae-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OPSET = 17


class BundleError(WavaeError, ValueError):
    """A bundle is missing, damaged, of an unknown version, or does not fit."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def graph_opset(proto) -> int | None:
    """The default-domain (``ai.onnx``) opset an ONNX ModelProto imports."""
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    data = (json.dumps(obj, indent=2) + "\n").encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Parse ``manifest.json`` and check its format and version (not the checksums)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} does not exist or is not a directory; create it with `wavae export`")
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle: {MANIFEST} is missing; re-export it with `wavae export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); the bundle is damaged, re-export it") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{path} has format {got!r}, not {FORMAT!r}; this is not a wavae bundle")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle} has bundle format version {version!r}, but this wavae reads version {FORMAT_VERSION}; "
            f"re-export the bundle with this wavae version, or update wavae"
        )
    for key in ("sample_rate", "block", "frame", "latent_dim", "precision", "graphs", "files"):
        if key not in manifest:
            raise BundleError(f"{path} lacks the field {key!r}; the bundle is damaged, re-export it")
    return manifest


def verify_bundle_files(bundle: Path) -> dict[str, Any]:
    """Read the manifest and check every listed file's size and sha256; return the manifest.

    Refuses (BundleError) an unknown format or version, a missing file, a file
    named by a graph but not listed, or a checksum that does not match.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{bundle}/{MANIFEST} lists no files; the bundle is damaged, re-export it")
    for g, spec in manifest["graphs"].items():
        if spec.get("file") not in files:
            raise BundleError(f"{bundle}: graph {g!r} file {spec.get('file')!r} has no checksum in the manifest; re-export it")
    for name, entry in files.items():
        p = bundle / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{bundle}/{MANIFEST} names a file outside the bundle: {name!r}")
        if not p.is_file():
            raise BundleError(f"{bundle} is missing {name}; the bundle is incomplete, re-export it")
        size = p.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise BundleError(
                f"{p} is {size} bytes but the manifest says {entry['bytes']}; the file is damaged, re-export or re-copy the bundle"
            )
        digest = file_sha256(p)
        if digest != entry.get("sha256"):
            raise BundleError(
                f"{p} does not match its sha256 in the manifest (file {digest[:12]}..., manifest "
                f"{str(entry.get('sha256'))[:12]}...); the file is damaged, re-export or re-copy the bundle"
            )
    return manifest


class BundleStreamer:
    """Streams audio through a bundle's two graphs in onnxruntime, from zero state.

    This is the desktop reference for what the device does: encoder then decoder
    per block, each ``state_out_k`` fed back as the next call's ``state_in_k``.
    """

    def __init__(self, bundle: Path, threads: int = 1, check: bool = True):
        import onnxruntime as ort

        self.dir = Path(bundle)
        self.manifest = verify_bundle_files(self.dir) if check else read_manifest(self.dir)
        self.block = int(self.manifest["block"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.sessions = {
            g: ort.InferenceSession(str(self.dir / spec["file"]), so, providers=["CPUExecutionProvider"])
            for g, spec in self.manifest["graphs"].items()
        }
        self.reset()

    def reset(self) -> None:
        self.states = {
            g: [np.zeros(s["shape"], np.float32) for s in spec["states"]] for g, spec in self.manifest["graphs"].items()
        }

    def encode(self, audio_block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec = self.manifest["graphs"]["encoder"]
        feeds = {"audio": np.ascontiguousarray(audio_block, dtype=np.float32).reshape(1, 1, self.block)}
        feeds.update({s["input"]: v for s, v in zip(spec["states"], self.states["encoder"])})
        outs = self.sessions["encoder"].run(None, feeds)
        self.states["encoder"] = outs[3:]
        return outs[0], outs[1], outs[2]

    def decode(self, z: np.ndarray, loudness: np.ndarray) -> np.ndarray:
        spec = self.manifest["graphs"]["decoder"]
        feeds = {"z": np.asarray(z, np.float32), "loudness": np.asarray(loudness, np.float32)}
        feeds.update({s["input"]: v for s, v in zip(spec["states"], self.states["decoder"])})
        outs = self.sessions["decoder"].run(None, feeds)
        self.states["decoder"] = outs[1:]
        return outs[0]

    def process(self, audio_block: np.ndarray) -> np.ndarray:
        z, _, loud = self.encode(audio_block)
        return self.decode(z, loud).reshape(-1)

    def stream(self, audio: np.ndarray) -> np.ndarray:
        """Reconstruct a mono signal whose length is a multiple of the block, from zero state."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        if audio.size % self.block:
            raise BundleError(f"length {audio.size} is not a multiple of the bundle's block {self.block}")
        self.reset()
        return np.concatenate([self.process(audio[i : i + self.block]) for i in range(0, audio.size, self.block)])
