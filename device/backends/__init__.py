"""Inference backends behind one interface (the anira split: backend <- engine).

A backend owns one runtime session per bundle graph (``encoder``, ``decoder``),
created once, and runs one streaming step at a time::

    outputs, state = backend.process("encoder", {"audio": block}, state)

``state`` is the list of ``state_in_k`` arrays (start from ``init_state``); the
returned list holds the matching ``state_out_k`` and is what the next call takes.
Backends keep two preallocated state sets per graph and alternate between them,
so a step allocates nothing: the returned arrays (outputs and state) are the
backend's own buffers, valid until the step after next.  Inputs may be written
in place into ``input_buffers(graph)`` to skip even the copy.  Because of these
shared buffers a backend serves one stream at a time.

* ``onnxruntime``: Pi and x86 CPUs (``backends.onnx``).
* ``tensorrt``: the Jetson's GPU, running plans built by ``wavae engine``
  (``backends.tensorrt``); refused with a clear message where no NVIDIA GPU is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from wavae.errors import WavaeError

if TYPE_CHECKING:
    from wavae.device.bundle import Bundle

BACKENDS = ("onnxruntime", "tensorrt")  # the one list of backend names: configs, CLIs and make_backend


class BackendError(WavaeError, RuntimeError):
    """A backend cannot be created or run on this machine; the message says what to use instead."""


class Backend:
    """One streaming step of a bundle graph at a time; see the module docstring."""

    kind = "abstract"

    def input_buffers(self, graph: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def init_state(self, graph: str) -> list[np.ndarray]:
        """Zero state in the backend's buffers."""
        raise NotImplementedError

    def process(
        self, graph: str, inputs: dict[str, np.ndarray], state: list[np.ndarray]
    ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @staticmethod
    def _stage(buffers: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> None:
        """Copy ``inputs`` into the backend's own input buffers (a no-op for those
        the caller already filled in place, via ``input_buffers``)."""
        for name, arr in inputs.items():
            buf = buffers[name]
            if arr is not buf:
                np.copyto(buf, arr.reshape(buf.shape))

    @staticmethod
    def _parity(state: list[np.ndarray], pair: list[list[np.ndarray]]) -> int | None:
        """Which of the backend's two alternating state sets ``state`` is (0 or 1);
        None for a state that is not the backend's own."""
        if state is pair[0]:
            return 0
        if state is pair[1]:
            return 1
        return None

    def describe(self) -> str:
        return self.kind

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_backend(bundle: "Bundle", kind: str = "onnxruntime", threads: int = 1, **options) -> Backend:
    """Create the backend ``kind`` (one of ``BACKENDS``) for ``bundle`` (sessions built and warmed up once)."""
    if kind == "onnxruntime":
        from .onnx import OnnxBackend

        return OnnxBackend(bundle, threads=threads, **options)
    if kind == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, **options)
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
