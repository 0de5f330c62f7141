"""The backend interface and its names: what every backend is (see the package docstring)."""

from __future__ import annotations

import numpy as np

from wavae.errors import WavaeError



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
