"""The onnxruntime backend (CPU): Raspberry Pi and x86.

One ``InferenceSession`` per graph, created once.  With ``io_binding`` (the
default) every input, output and state tensor is bound once to a preallocated
numpy array; two bindings per graph alternate the state sets (A -> B, then
B -> A), so a step is ``run_with_iobinding`` and nothing else: no feeds dict,
no output allocation, no state copy.  ``io_binding=False`` uses plain
``session.run`` (for comparison in benchmarks/bench_device.py).

With ``huge_pages`` (the default) the memory the sessions took (weights, their
packed copies, the warm-up's buffers) is put on transparent huge pages once they
are built (``wavae.device.memory``): a step streams all its weights from memory,
and does so faster on huge pages.  ``describe()`` says what the kernel allowed.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from wavae.device.bundle import Bundle, BundleError, GraphInfo, check_model_card
from wavae.device.memory import HugePages, advise_huge_pages, anonymous_regions

from .base import Backend, BackendError


def _message(e: BaseException, limit: int = 200) -> str:
    """An exception's text, safe whatever bytes onnxruntime put in it."""
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - a message that cannot even be made into text
        text = repr(e.args)
    if isinstance(e, UnicodeDecodeError) and isinstance(e.object, (bytes, bytearray)):
        text = bytes(e.object).decode("utf-8", errors="replace")
    return text.encode("utf-8", errors="replace").decode("utf-8").strip()[:limit]


class _Graph:
    def __init__(self, info: GraphInfo, session, io_binding: bool):
        self.info = info
        self.session = session
        self.inputs = {t.name: np.zeros(t.shape, np.float32) for t in info.inputs}
        self.outputs = {t.name: np.zeros(t.shape, np.float32) for t in info.outputs}
        self.states = [[np.zeros(s.shape, np.float32) for s in info.states] for _ in range(2)]
        self.output_names = info.output_names
        self.n_out = len(info.outputs)
        self.bindings = None
        if io_binding:
            self.bindings = []
            for p in (0, 1):
                b = session.io_binding()
                for name, arr in self.inputs.items():
                    b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
                for s, arr in zip(info.states, self.states[p]):
                    b.bind_ortvalue_input(s.input, ort.OrtValue.ortvalue_from_numpy(arr))
                for name, arr in self.outputs.items():
                    b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
                for s, arr in zip(info.states, self.states[1 - p]):
                    b.bind_ortvalue_output(s.output, ort.OrtValue.ortvalue_from_numpy(arr))
                self.bindings.append(b)


class OnnxBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int = 1, io_binding: bool = True, spin: bool = False, warmup: int = 2,
                 huge_pages: bool = True):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BackendError(f"threads must be a whole number >= 1, got {threads!r}")
        regions = anonymous_regions() if huge_pages else {}
        self.bundle = bundle
        self.threads = threads
        self.io_binding = io_binding
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # spinning worker threads wake up sooner but keep a core busy between steps; on a
        # shared 2-core machine it tripled the p50 at 2 threads (docs/benchmarks/device.md),
        # so it is off unless asked for
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._graphs: dict[str, _Graph] = {}
        for name, info in bundle.graphs.items():
            try:
                sess = ort.InferenceSession(str(info.file), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - any failure to build a session is a damaged bundle
                raise BundleError(
                    f"onnxruntime cannot load {info.file} ({type(e).__name__}: {_message(e)}); "
                    f"the bundle is damaged or was exported for a newer runtime: re-export it"
                ) from None
            self._check_io(info, sess)
            check_model_card(bundle, info.file.name, sess.get_modelmeta().custom_metadata_map)
            self._graphs[name] = _Graph(info, sess, io_binding)
        for _ in range(warmup):
            for name in self._graphs:
                self.process(name, {}, self.init_state(name))
        for name in self._graphs:
            self.init_state(name)
        self.huge_pages: HugePages | None = advise_huge_pages(regions) if huge_pages else None

    @staticmethod
    def _check_io(info: GraphInfo, sess) -> None:
        got_in = {i.name: tuple(i.shape) for i in sess.get_inputs()}
        got_out = {o.name: tuple(o.shape) for o in sess.get_outputs()}
        want_in = {t.name: t.shape for t in info.inputs} | {s.input: s.shape for s in info.states}
        want_out = {t.name: t.shape for t in info.outputs} | {s.output: s.shape for s in info.states}
        for what, got, want in (("inputs", got_in, want_in), ("outputs", got_out, want_out)):
            if set(got) != set(want):
                raise BundleError(
                    f"{info.file.name} has {what} {sorted(got)}, but the manifest lists {sorted(want)}; "
                    f"the bundle is inconsistent, re-export it"
                )
            for k, shape in want.items():
                if got[k] != shape:
                    raise BundleError(
                        f"{info.file.name}: {k} has shape {list(got[k])} in the graph but {list(shape)} in the "
                        f"manifest; re-export the bundle"
                    )

    def describe(self) -> str:
        pages = f", {self.huge_pages.describe()}" if self.huge_pages is not None else ""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"onnxruntime (CPU, {threads}, io_binding={self.io_binding}{pages})"

    def input_buffers(self, graph: str) -> dict[str, np.ndarray]:
        return self._graphs[graph].inputs

    def init_state(self, graph: str) -> list[np.ndarray]:
        g = self._graphs[graph]
        for arr in g.states[0]:
            arr.fill(0.0)
        return g.states[0]

    def process(self, graph, inputs, state):
        g = self._graphs[graph]
        self._stage(g.inputs, inputs)
        p = self._parity(state, g.states)
        if p is None:  # a state from elsewhere: copy it into set 0
            for dst, src in zip(g.states[0], state):
                np.copyto(dst, src)
            p = 0
        if g.bindings is not None:
            g.session.run_with_iobinding(g.bindings[p])
        else:
            feeds = dict(g.inputs)
            feeds.update({s.input: a for s, a in zip(g.info.states, g.states[p])})
            res = g.session.run(g.output_names, feeds)
            for name, r in zip(g.outputs, res[: g.n_out]):
                np.copyto(g.outputs[name], r)
            for dst, r in zip(g.states[1 - p], res[g.n_out :]):
                np.copyto(dst, r)
        return g.outputs, g.states[1 - p]

    def close(self) -> None:
        self._graphs.clear()
