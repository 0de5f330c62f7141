"""Reading a bundle on the device (docs/bundle.md, format version 1), without torch.

``load_bundle(path)`` checks the manifest's format and version, every field the
engine relies on, the graphs' I/O and state names, and each file's size and
sha256, then returns a ``Bundle``.  Anything wrong raises ``BundleError`` with a
message that says what to do (re-export, re-copy, upgrade).

``graph_contract`` is format 1's graph I/O: the one definition that the exporter
writes (``wavae.quantize.export``) and this reader checks a manifest against.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from wavae.errors import WavaeError
from wavae.fileio import file_sha256

FORMAT = "wavae-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_LATENCY_FRAMES = 8  # one latent frame plus filter delays; far above any preset
PRECISIONS = ("fp32", "fp16", "int8")  # what the device runs, hence what export writes
GRAPHS = ("encoder", "decoder")


class BundleError(WavaeError, ValueError):
    """A bundle is missing, damaged, of an unknown version, or does not fit this device."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class StateInfo:
    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class GraphInfo:
    name: str
    file: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    states: tuple[StateInfo, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs] + [s.input for s in self.states]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs] + [s.output for s in self.states]

    def manifest_entry(self, bundle: Path) -> dict[str, Any]:
        """This graph as the manifest's ``graphs`` section lists it (``file`` relative to ``bundle``)."""
        return {
            "file": self.file.relative_to(bundle).as_posix(),
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.outputs],
            "states": [
                {"input": s.input, "output": s.output, "shape": list(s.shape), "dtype": s.dtype} for s in self.states
            ],
        }


def graph_contract(
    block: int,
    frame: int,
    latent_dim: int,
    state_shapes: Mapping[str, Sequence[Sequence[int]]],
    root: Path = Path(),
) -> dict[str, GraphInfo]:
    """Format 1's graphs for a model of this block, frame and latent size, whose
    streaming states (one list per graph, from the model) have ``state_shapes``::

        encoder (root/encoder.onnx): audio [1,1,block], state_in_k
            -> z_mean, z_std [1,latent_dim,frames], loudness [1,1,frames], state_out_k
        decoder (root/decoder.onnx): z [1,latent_dim,frames], loudness [1,1,frames], state_in_k
            -> audio [1,1,block], state_out_k

    with ``frames = block // frame``; every tensor float32 and static.  The
    exporter writes exactly this; the reader refuses a manifest that differs.
    """
    frames = block // frame
    d = latent_dim

    def t(name: str, *shape: int) -> TensorInfo:
        return TensorInfo(name, tuple(int(s) for s in shape), "float32")

    io = {
        "encoder": (
            (t("audio", 1, 1, block),),
            (t("z_mean", 1, d, frames), t("z_std", 1, d, frames), t("loudness", 1, 1, frames)),
        ),
        "decoder": (
            (t("z", 1, d, frames), t("loudness", 1, 1, frames)),
            (t("audio", 1, 1, block),),
        ),
    }
    return {
        g: GraphInfo(
            g,
            Path(root) / f"{g}.onnx",
            ins,
            outs,
            tuple(
                StateInfo(f"state_in_{k}", f"state_out_{k}", tuple(int(s) for s in shape), "float32")
                for k, shape in enumerate(state_shapes[g])
            ),
        )
        for g, (ins, outs) in io.items()
    }


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    sample_rate: int
    block: int
    frame: int
    latent_dim: int
    latency_samples: int
    precision: str
    graphs: dict[str, GraphInfo]

    @property
    def frames_per_block(self) -> int:
        return self.block // self.frame

    @property
    def model_delay(self) -> int:
        """Model-rate samples by which the output trails the input beyond the wait for a
        whole frame: a multi-band vocoder's synthesis filter (0 for a single-band model)."""
        return self.latency_samples - self.frame

    def graph(self, name: str) -> GraphInfo:
        if name not in self.graphs:
            raise BundleError(f"bundle {self.path} has no graph {name!r}; it has {sorted(self.graphs)}")
        return self.graphs[name]

    @property
    def sha256(self) -> str:
        """The bundle's identity (``bundle_sha256`` of its manifest)."""
        return bundle_sha256(self.manifest)

    def engine_file(self, name: str, precision: str | None = None) -> Path:
        """Where the TensorRT plan of graph ``name`` at ``precision`` (default: the bundle's)
        lives: ``engines/<graph>.<precision>.plan``, built on the Jetson by ``wavae engine``."""
        return self.path / "engines" / f"{name}.{precision or self.precision}.plan"


def bundle_sha256(manifest: Mapping[str, Any]) -> str:
    """A bundle's identity: sha256 over the sorted ``name:sha256`` lines of its
    manifest's ``files``.

    It names the model's weights (the graphs' bytes), not the export: the
    manifest's time stamp and source do not enter it, so the same files copied
    anywhere keep the same identity, and any other graph (another model, or the
    same model at another precision) has another.  Latent paths carry it to
    refuse a decode on a bundle that did not encode them.
    """
    files = manifest.get("files")
    if not isinstance(files, Mapping) or not files:
        raise BundleError("the manifest lists no files; the bundle is damaged, re-export it with `wavae export`")
    lines = "".join(f"{name}:{entry.get('sha256') if isinstance(entry, Mapping) else entry}\n"
                    for name, entry in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _unreadable(bundle: Path, e: OSError, path: Path | None = None) -> BundleError:
    """A permission or I/O error while reading the bundle, as a message a technician can act on."""
    what = path or e.filename or bundle
    return BundleError(
        f"cannot read bundle {bundle}: {what}: {e.strerror or e}; check that the service user may read the "
        f"folder and its files (`ls -l {bundle}`) and the storage (`dmesg` shows I/O errors); re-copy the "
        f"bundle if it is damaged"
    )


def _damaged(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: {what}; the bundle is damaged or from another tool, re-export it with `wavae export`")


def _int_field(m: dict, key: str, where: str, minimum: int = 1) -> int:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _damaged(where, f"field {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in v):
        raise _damaged(where, f"shape must be a list of positive integers, got {v!r}")
    return tuple(v)


def _tensor(v: Any, where: str) -> TensorInfo:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        raise _damaged(where, f"each tensor needs a name, shape and dtype, got {v!r}")
    dtype = v.get("dtype", "float32")
    if dtype != "float32":
        raise _damaged(where, f"tensor {v['name']!r} has dtype {dtype!r}; bundle graph I/O is always float32")
    return TensorInfo(v["name"], _shape(v.get("shape"), f"{where}, {v['name']}"), dtype)


def _graph(bundle: Path, name: str, spec: Any, manifest_path: Path) -> GraphInfo:
    where = f"{manifest_path} graph {name!r}"
    if not isinstance(spec, dict):
        raise _damaged(where, "is not an object")
    file = spec.get("file")
    if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise _damaged(where, f"'file' must name a file inside the bundle, got {file!r}")
    for key in ("inputs", "outputs", "states"):
        if not isinstance(spec.get(key), list):
            raise _damaged(where, f"{key!r} must be a list")
    inputs = tuple(_tensor(t, where) for t in spec["inputs"])
    outputs = tuple(_tensor(t, where) for t in spec["outputs"])
    states = []
    for k, s in enumerate(spec["states"]):
        if not isinstance(s, dict):
            raise _damaged(where, f"state {k} is not an object")
        if s.get("dtype", "float32") != "float32":
            raise _damaged(where, f"state {k} has dtype {s.get('dtype')!r}; streaming state is always float32")
        # names are held as given: the contract check (_check_contract) says what they should be
        shape = _shape(s.get("shape"), f"{where} state {k}")
        states.append(StateInfo(s.get("input"), s.get("output"), shape, "float32"))
    return GraphInfo(name, bundle / file, inputs, outputs, tuple(states))


def _check_contract(got: GraphInfo, want: GraphInfo, manifest_path: Path, block: int) -> None:
    """A graph the manifest lists against ``graph_contract``: I/O names, state names, I/O shapes."""
    where = f"{manifest_path} graph {got.name!r}"
    names = ([t.name for t in got.inputs], [t.name for t in got.outputs])
    want_names = ([t.name for t in want.inputs], [t.name for t in want.outputs])
    if names != want_names:
        raise _damaged(where, f"I/O {names[0]} -> {names[1]} is not the format-1 {want_names[0]} -> {want_names[1]}")
    for k, (s, w) in enumerate(zip(got.states, want.states)):
        if (s.input, s.output) != (w.input, w.output):
            raise _damaged(where, f"state {k} is named {s.input!r}/{s.output!r}, not {w.input}/{w.output}")
    for t, w in zip(got.inputs + got.outputs, want.inputs + want.outputs):
        if t.shape != w.shape:
            raise _damaged(
                str(manifest_path),
                f"{got.name} tensor {t.name!r} has shape {list(t.shape)}, expected {list(w.shape)} for block {block}",
            )


# The model card each graph carries in its ONNX metadata (written by the exporter).
# The graphs are covered by their sha256; the manifest's own numbers are checked
# against this, so an edited or damaged manifest cannot make a model run at the
# wrong rate or report a wrong latency.
MODEL_CARD_PREFIX = "wavae."
MODEL_CARD_KEYS = ("sample_rate", "block", "frame", "latent_dim", "latency_samples")


def model_card(bundle: "Bundle | dict[str, Any]") -> dict[str, str]:
    """The metadata a bundle's graphs carry: ``wavae.<key>`` -> the value, as text."""
    get = bundle.get if isinstance(bundle, dict) else (lambda k: getattr(bundle, k))
    return {MODEL_CARD_PREFIX + k: str(int(get(k))) for k in MODEL_CARD_KEYS}


def check_model_card(bundle: "Bundle", graph_file: str, metadata: dict[str, str]) -> None:
    """Refuse a manifest whose numbers differ from what its graph was exported with.

    Graphs without the card (hand-made test bundles) are not checked."""
    want = model_card(bundle)
    for key, value in want.items():
        if key in metadata and metadata[key] != value:
            name = key[len(MODEL_CARD_PREFIX):]
            raise BundleError(
                f"{bundle.path / MANIFEST} says {name} = {value}, but {graph_file} was exported with "
                f"{name} = {metadata[key]}: the manifest was edited or damaged; re-export or re-copy the bundle"
            )


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Parse ``manifest.json`` and check its format and version (not the files)."""
    bundle = Path(path)
    try:
        return _read_manifest(bundle)
    except OSError as e:  # permissions, I/O errors: not a traceback
        raise _unreadable(bundle, e) from e


def _read_manifest(bundle: Path) -> dict[str, Any]:
    if not bundle.exists():
        raise BundleError(f"bundle {bundle} does not exist; export one with `wavae export` and copy it to this device")
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} is not a directory; a bundle is the folder `wavae export` writes")
    mpath = bundle / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bundle} is not a bundle: it has no {MANIFEST}; re-export it with `wavae export`")
    try:
        manifest = json.loads(mpath.read_text())
    except OSError as e:
        raise _unreadable(bundle, e, mpath) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e}); the bundle is damaged, re-export or re-copy it") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{mpath} has format {got!r}, not {FORMAT!r}: this is not a wavae bundle")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise BundleError(
            f"{mpath}: format_version must be a whole number (this wavae reads {FORMAT_VERSION}), not "
            f"{type(version).__name__} {version!r}; the manifest was edited or damaged: re-export the bundle"
        )
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{bundle} is bundle format version {version!r}, but this wavae reads version {FORMAT_VERSION}; "
            f"re-export the bundle with the wavae version installed here, or update wavae on this device"
        )
    return manifest


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle; ``verify=False`` skips the sha256 pass (sizes are still checked)."""
    bundle = Path(path)
    try:
        return _load_bundle(bundle, verify)
    except OSError as e:  # permissions, I/O errors: not a traceback
        raise _unreadable(bundle, e) from e


def _load_bundle(bundle: Path, verify: bool) -> Bundle:
    manifest = read_manifest(bundle)
    mpath = bundle / MANIFEST
    where = str(mpath)
    sample_rate = _int_field(manifest, "sample_rate", where)
    block = _int_field(manifest, "block", where)
    frame = _int_field(manifest, "frame", where)
    latent_dim = _int_field(manifest, "latent_dim", where)
    latency = _int_field(manifest, "latency_samples", where, minimum=0)
    if latency < frame:
        raise _damaged(where, f"latency_samples {latency} is less than one latent frame ({frame}), which no "
                              f"block-causal model has")
    if latency > MAX_LATENCY_FRAMES * frame:
        raise _damaged(where, f"latency_samples {latency} is more than {MAX_LATENCY_FRAMES} latent frames "
                              f"({MAX_LATENCY_FRAMES * frame} samples), which no wavae model has")
    if block % frame:
        raise _damaged(where, f"block {block} is not a multiple of the latent frame {frame}")
    precision = manifest.get("precision")
    if precision not in PRECISIONS:
        raise BundleError(
            f"{where}: precision {precision!r} is not one this wavae runs ({', '.join(PRECISIONS)}); "
            f"re-export the bundle or update wavae"
        )
    graphs_spec = manifest.get("graphs")
    if not isinstance(graphs_spec, dict) or set(GRAPHS) - set(graphs_spec):
        raise _damaged(where, f"'graphs' must hold {sorted(GRAPHS)}")
    graphs = {g: _graph(bundle, g, graphs_spec[g], mpath) for g in GRAPHS}
    contract = graph_contract(block, frame, latent_dim, {g: [s.shape for s in graphs[g].states] for g in GRAPHS})
    for g in GRAPHS:
        _check_contract(graphs[g], contract[g], mpath, block)
    _check_files(bundle, manifest, graphs, verify)
    return Bundle(bundle, manifest, sample_rate, block, frame, latent_dim, latency, precision, graphs)


def _check_files(bundle: Path, manifest: dict, graphs: dict[str, GraphInfo], verify: bool) -> None:
    files = manifest.get("files")
    mpath = bundle / MANIFEST
    if not isinstance(files, dict) or not files:
        raise _damaged(str(mpath), "'files' lists no checksums")
    for g in graphs.values():
        rel = g.file.relative_to(bundle).as_posix()
        if rel not in files:
            raise _damaged(str(mpath), f"graph {g.name!r} file {rel!r} has no entry in 'files'")
    for name, entry in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise _damaged(str(mpath), f"'files' names a path outside the bundle: {name!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise _damaged(str(mpath), f"'files' entry {name!r} has no sha256")
        p = bundle / name
        try:
            _check_file(bundle, name, p, entry, verify)
        except OSError as e:
            raise _unreadable(bundle, e, p) from e


def _check_file(bundle: Path, name: str, p: Path, entry: dict, verify: bool) -> None:
    """One listed file: present, of the listed size, and (with ``verify``) of the listed sha256."""
    if not p.is_file():
        raise BundleError(f"{bundle} is missing {name}; the bundle is incomplete, re-copy or re-export it")
    size = p.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise BundleError(
            f"{p} is {size} bytes but the manifest says {entry['bytes']}: the file is damaged or truncated; "
            f"re-copy or re-export the bundle"
        )
    if verify:
        digest = file_sha256(p)
        if digest != entry["sha256"]:
            raise BundleError(
                f"{p} fails its checksum (sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}...): "
                f"the file is damaged; re-copy or re-export the bundle"
            )
