"""The bundle on the desktop side: streaming a bundle through onnxruntime, and the
checks that `wavae verify`, the int8 calibrator and the tests run on it.

The manifest rules themselves (format, version, files, sha256) are the device
reader's, ``wavae.device.bundle``: the device decides what it accepts, and the
desktop checks a bundle with the very same code (quantize -> device is the
allowed direction).  Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wavae.device.bundle import (  # noqa: F401  (re-exported for the desktop side)
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    load_bundle,
    read_manifest,
)

OPSET = 17


def graph_opset(proto) -> int | None:
    """The default-domain (``ai.onnx``) opset an ONNX ModelProto imports."""
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


def verify_bundle_files(bundle: Path) -> dict[str, Any]:
    """Check a bundle exactly as the device does (format, version, files, sizes,
    sha256); return its manifest.  Raises BundleError."""
    return load_bundle(bundle).manifest


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
