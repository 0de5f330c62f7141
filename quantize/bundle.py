"""The bundle on the desktop side: streaming a bundle through the device's
onnxruntime backend, and the checks that `wavae verify`, the int8 calibrator and
the tests run on it.

The manifest rules themselves (format, version, files, sha256) are the device
reader's, ``wavae.device.bundle``: the device decides what it accepts, and the
desktop checks a bundle with the very same code (quantize -> device is the
allowed direction).  Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wavae.device.backends import make_backend
from wavae.device.bundle import Bundle, BundleError, load_bundle

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
    """Streams audio through a bundle, encoder then decoder per block from zero
    state, on the device's own onnxruntime backend: the desktop reference (verify,
    int8 calibration, tests) runs exactly what the device runs.

    ``encode`` and ``decode`` return copies; ``states[graph]`` is the state the
    next call of that graph takes (the backend's buffers: valid until that call).
    """

    def __init__(self, bundle: Path | Bundle, threads: int = 1):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.block = self.bundle.block
        self.backend = make_backend(self.bundle, "onnxruntime", threads=threads)
        self.reset()

    def reset(self) -> None:
        self.states = {g: self.backend.init_state(g) for g in self.bundle.graphs}

    def encode(self, audio_block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out, self.states["encoder"] = self.backend.process("encoder", {"audio": audio_block}, self.states["encoder"])
        return out["z_mean"].copy(), out["z_std"].copy(), out["loudness"].copy()

    def decode(self, z: np.ndarray, loudness: np.ndarray) -> np.ndarray:
        out, self.states["decoder"] = self.backend.process(
            "decoder", {"z": z, "loudness": loudness}, self.states["decoder"]
        )
        return out["audio"].copy()

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
