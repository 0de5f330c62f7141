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

from ..capabilities import BACKENDS
from .base import Backend, BackendError
from .onnx import OnnxBackend
from .tensorrt import TensorRTBackend

if TYPE_CHECKING:
    from wavae.device.bundle import Bundle

__all__ = ["BACKENDS", "Backend", "BackendError", "OnnxBackend", "TensorRTBackend", "make_backend"]


def make_backend(bundle: "Bundle", kind: str = "onnxruntime", threads: int = 1, **options) -> Backend:
    """Create the backend ``kind`` (one of ``BACKENDS``) for ``bundle`` (sessions built and warmed up once)."""
    if kind == "onnxruntime":
        return OnnxBackend(bundle, threads=threads, **options)
    if kind == "tensorrt":
        return TensorRTBackend(bundle, **options)
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
