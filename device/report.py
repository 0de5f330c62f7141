"""Writing a profile report: JSON (for machines), Markdown (for people), PNG plots.

    REPORT_DIR/
      report.json   the schema below (docs/profile.md documents every field)
      report.md     the summary: per-block times, latency, budget, resources, ratios
      hist.png      per-block compute time histograms with the deadline
      series.png    per-block compute time over the run with the deadline line
      budget.png    the action-to-sound budget, stacked, against 10 ms
      timings.csv   every per-block time (config, kind, index, ms)

matplotlib is optional on the device: it is imported only here, lazily, with the
Agg backend; where it is missing the PNGs are skipped and the report says so in
``warnings``.  Every file is written atomically (temporary file + rename).

``SCHEMA`` is the JSON schema as data: ``validate(report)`` lists every
difference (missing key, unknown key, wrong type), and the tests hold the
writer, the schema and docs/profile.md to each other.

The offline profile (``wavae.device.profile.profile``) and the live run's
report (``wavae.device.profile.write_report``) are put together by the same
builders here (``build_report``, ``settings_section``, ``startup_section``,
``resources_section``, ``config_section``), so both modes fill the same keys.
This module is the bottom of the profiler: it imports nothing from the modules
that measure (``timing``, ``latency``, ``profile``); they import from it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_bytes

from .machine import clock_tick_s, machine_info, memory_mib, utc_now

SCHEMA_VERSION = 2  # any change to a key or a type bumps it (docs/profile.md)
TARGET_MS = 10.0  # the action-to-sound delay players cannot tell from zero


class ProfileError(WavaeError, ValueError):
    """A profile cannot run as asked (a block, backend, input or directory that does not fit)."""


def json_ready(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: numpy scalars to Python, tuples to lists,
    dict keys to str, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_ready_or_none(obj: Any) -> Any:
    """``json_ready(obj)``, or None where ``obj`` is None or cannot be written as
    JSON (an engine's counters of an unknown shape are left out, not fatal)."""
    if obj is None:
        return None
    plain = json_ready(obj)
    try:
        json.dumps(plain)
    except (TypeError, ValueError):
        return None
    return plain

# ----------------------------------------------------------------------------
# the schema, as data
# ----------------------------------------------------------------------------
NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))
OPT_BOOL = (bool, type(None))
ANY = object


class Optional_:
    """A key that may be absent (``?``)."""

    def __init__(self, spec: Any):
        self.spec = spec


class ListOf:
    def __init__(self, spec: Any, nullable: bool = False):
        self.spec = spec
        self.nullable = nullable


class Nullable:
    def __init__(self, spec: Any):
        self.spec = spec


class MapOf:
    """A dict with free keys (str) and values of one spec."""

    def __init__(self, spec: Any):
        self.spec = spec


STATS = {
    "count": int,
    "deadline_ms": NUM,
    "mean_ms": OPT_NUM,
    "std_ms": OPT_NUM,
    "p50_ms": OPT_NUM,
    "p95_ms": OPT_NUM,
    "p99_ms": OPT_NUM,
    "max_ms": OPT_NUM,
    "jitter_ms": OPT_NUM,
    "misses": int,
    "miss_rate": NUM,
    "rtf": OPT_NUM,
}

LIVE_STATS = {
    **STATS,
    "blocks_total": int,
    "misses_total": int,
    "max_total_ms": NUM,
    "rtf_total": OPT_NUM,
    "window_blocks": int,
}

GRAPH_STATS = {**STATS, "gpu": Nullable(STATS)}

DECLARED = {
    "engine": ANY,
    "model_latency_samples": OPT_INT,
    "model_latency_ms": OPT_NUM,
    "block_ms": OPT_NUM,
    "total_ms": OPT_NUM,
    "total_samples": OPT_NUM,
    "resampler_ms": OPT_NUM,
    "algorithmic_ms": OPT_NUM,
    "buffering_ms": OPT_NUM,
}

ONSET = {
    "kind": str,
    "position": int,
    "input_onset": OPT_INT,
    "output_onset": OPT_INT,
    "first_influence": OPT_INT,
    "snr_db": NUM,
    "latency_samples": OPT_INT,
    "first_influence_samples": OPT_INT,
}

LATENCY = {
    "method": str,
    "onsets_total": int,
    "onsets_detected": int,
    "measured_ms": OPT_NUM,
    "measured_samples": OPT_NUM,
    "median_ms": OPT_NUM,
    "std_ms": OPT_NUM,
    "min_ms": OPT_NUM,
    "max_ms": OPT_NUM,
    "first_influence_ms": OPT_NUM,
    "first_influence_max_ms": OPT_NUM,
    "declared": DECLARED,
    "block_device_samples": OPT_NUM,
    "error_ms": OPT_NUM,
    "within_one_block": OPT_BOOL,
    "onsets": ListOf(ONSET),
}

BUDGET = {
    "alsa_buffering_ms": NUM,
    "resampler_ms": OPT_NUM,
    "algorithmic_ms": OPT_NUM,
    "engine_buffering_ms": OPT_NUM,
    "compute_p99_ms": OPT_NUM,
    "compute_budget_ms": NUM,
    "compute_fits": (bool, type(None)),
    "total_ms": NUM,
    "target_ms": NUM,
    "within_target": bool,
    "prefill_periods": int,
    "period": int,
    "model_side_source": str,
}

CONFIG = {
    "id": str,
    "bundle": OPT_STR,
    "preset": OPT_STR,
    "precision": OPT_STR,
    "backend": OPT_STR,
    "backend_description": OPT_STR,
    "threads": OPT_INT,
    "sample_rate": OPT_INT,
    "block": OPT_INT,
    "frame": OPT_INT,
    "block_ms": OPT_NUM,
    "device_rate": OPT_INT,
    "period": OPT_INT,
    "period_ms": OPT_NUM,
    "load_s": OPT_NUM,
    "first_block_ms": OPT_NUM,
    "rss_delta_mib": OPT_NUM,
    "engine": STATS,  # live reports: LIVE_STATS (a superset)
    "graph": Nullable(GRAPH_STATS),
    "latency": LATENCY,
    "budget": Nullable(BUDGET),
    "engine_stats": ANY,
}

COMPARISON = {
    "config": str,
    "reference": str,
    "axis": str,
    "value": (str, int),
    "reference_value": (str, int),
    "graph_p50_ratio": OPT_NUM,
    "graph_p99_ratio": OPT_NUM,
    "graph_mean_ratio": OPT_NUM,
    "engine_p50_ratio": OPT_NUM,
    "engine_p99_ratio": OPT_NUM,
    "engine_mean_ratio": OPT_NUM,
}

SCHEMA: dict[str, Any] = {
    "schema_version": int,
    "tool": str,
    "mode": str,
    "created": str,
    "machine": {
        "hostname": str,
        "platform": str,
        "machine": str,
        "cpu": str,
        "cpu_count": OPT_INT,
        "cpu_available": OPT_INT,
        "python": str,
        "wavae": OPT_STR,
        "numpy": OPT_STR,
        "onnxruntime": OPT_STR,
        "soxr": OPT_STR,
    },
    "settings": {
        "bundles": ListOf(str),
        "backend": OPT_STR,
        "threads": ListOf(int),
        "blocks": ListOf(int, nullable=True),
        "period_sizes": ListOf(int),
        "prefill_periods": int,
        "device_rate": OPT_INT,
        "seconds": NUM,
        "seed": OPT_INT,
        "onsets": int,
        "paced": bool,
        "input": str,
        "round_s": OPT_NUM,
    },
    "startup": {
        "clock_resolution_s": NUM,
        "process_to_first_block_s": OPT_NUM,
        "import_to_first_block_s": OPT_NUM,
        "load_s": OPT_NUM,
        "first_block_ms": OPT_NUM,
        "config": OPT_STR,
    },
    "resources": {"rss_mib": OPT_NUM, "rss_peak_mib": OPT_NUM, "rss_before_load_mib": OPT_NUM},
    "configs": ListOf(CONFIG),
    "comparisons": ListOf(COMPARISON),
    "files": MapOf(str),
    "warnings": ListOf(str),
    "live": Optional_({"xruns": int, "extra": ANY}),
}


def _type_name(spec: Any) -> str:
    if isinstance(spec, tuple):
        return " or ".join(_type_name(s) for s in spec)
    if spec is type(None):
        return "null"
    return getattr(spec, "__name__", str(spec))


def validate(report: Any, schema: Any = None, path: str = "") -> list[str]:
    """Every way ``report`` departs from ``SCHEMA`` ([] when it conforms)."""
    if schema is None:
        schema = SCHEMA
        if isinstance(report, dict) and report.get("mode") == "live":
            schema = dict(SCHEMA)
            configs = dict(CONFIG, engine=LIVE_STATS)
            schema["configs"] = ListOf(configs)
    problems: list[str] = []
    where = path or "report"
    if isinstance(schema, Optional_):
        return validate(report, schema.spec, path)
    if schema is ANY:
        return problems
    if isinstance(schema, Nullable):
        return [] if report is None else validate(report, schema.spec, path)
    if isinstance(schema, ListOf):
        if report is None and schema.nullable:
            return problems
        if not isinstance(report, list):
            return [f"{where}: expected a list, got {type(report).__name__}"]
        for i, item in enumerate(report):
            problems += validate(item, schema.spec, f"{where}[{i}]")
        return problems
    if isinstance(schema, MapOf):
        if not isinstance(report, dict):
            return [f"{where}: expected an object, got {type(report).__name__}"]
        for k, v in report.items():
            problems += validate(v, schema.spec, f"{where}.{k}")
        return problems
    if isinstance(schema, dict):
        if not isinstance(report, dict):
            return [f"{where}: expected an object, got {type(report).__name__}"]
        for k, spec in schema.items():
            if k not in report:
                if not isinstance(spec, Optional_):
                    problems.append(f"{where}: missing key {k!r}")
                continue
            problems += validate(report[k], spec, f"{where}.{k}" if path else k)
        for k in report:
            if k not in schema:
                problems.append(f"{where}: unknown key {k!r}")
        return problems
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(report, bool) and bool not in types:
        return [f"{where}: expected {_type_name(schema)}, got bool"]
    if not isinstance(report, types):
        return [f"{where}: expected {_type_name(schema)}, got {type(report).__name__}"]
    if isinstance(report, float) and not math.isfinite(report):
        return [f"{where}: {report} is not a finite number"]
    return problems


def schema_keys(schema: Any = None, prefix: str = "") -> list[str]:
    """Every documented key path (``configs[].latency.measured_ms``).

    The per-block statistics object is one named type, documented once as
    ``stats.KEY`` (its live-only keys too); where it is used (``configs[].engine``,
    ``configs[].graph``, ``configs[].graph.gpu``) only the field itself is listed.
    """
    top = schema is None
    schema = SCHEMA if schema is None else schema
    out: list[str] = []
    if top:
        out += [f"stats.{k}" for k in LIVE_STATS]
    if isinstance(schema, (Optional_, Nullable)):
        return out + schema_keys(schema.spec, prefix)
    if isinstance(schema, ListOf):
        return out + schema_keys(schema.spec, prefix + "[]")
    if schema is STATS:
        return out
    if isinstance(schema, dict):
        for k, spec in schema.items():
            if schema is GRAPH_STATS and k in STATS:
                continue
            p = f"{prefix}.{k}" if prefix else k
            out.append(p)
            out += schema_keys(spec, p)
    return out


# ----------------------------------------------------------------------------
# builders: the offline profile and the live run fill the same keys through these
# ----------------------------------------------------------------------------
def settings_section(
    *,
    bundles: list[str],
    backend: str | None,
    threads: list[int],
    blocks: list[int] | None,
    period_sizes: list[int],
    prefill_periods: int,
    device_rate: int | None,
    seconds: float,
    seed: int | None,
    onsets: int,
    paced: bool,
    input: str,
    round_s: float | None,
) -> dict[str, Any]:
    """The report's ``settings``: what was asked (every key named, none defaulted)."""
    return {
        "bundles": [str(b) for b in bundles],
        "backend": backend,
        "threads": [int(t) for t in threads],
        "blocks": [int(b) for b in blocks] if blocks else None,
        "period_sizes": [int(p) for p in period_sizes],
        "prefill_periods": int(prefill_periods),
        "device_rate": int(device_rate) if device_rate is not None else None,
        "seconds": float(seconds),
        "seed": int(seed) if seed is not None else None,
        "onsets": int(onsets),
        "paced": bool(paced),
        "input": input,
        "round_s": float(round_s) if round_s is not None else None,
    }


def startup_section(
    process_to_first_block_s: float | None,
    *,
    import_to_first_block_s: float | None = None,
    load_s: float | None = None,
    first_block_ms: float | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """The report's ``startup``, with the resolution of the process start time."""
    return {
        "clock_resolution_s": clock_tick_s(),
        "process_to_first_block_s": process_to_first_block_s,
        "import_to_first_block_s": import_to_first_block_s,
        "load_s": load_s,
        "first_block_ms": first_block_ms,
        "config": config,
    }


def resources_section(rss_before_load_mib: float | None = None) -> dict[str, Any]:
    """The report's ``resources``: RSS now and at its peak, read now."""
    mem = memory_mib()
    return {"rss_mib": mem["rss_mib"], "rss_peak_mib": mem["rss_peak_mib"], "rss_before_load_mib": rss_before_load_mib}


def config_section(
    description: dict[str, Any],
    *,
    engine: dict[str, Any],
    latency: dict[str, Any],
    budget: dict[str, Any] | None,
    graph: dict[str, Any] | None = None,
    load_s: float | None = None,
    first_block_ms: float | None = None,
    rss_delta_mib: float | None = None,
    engine_stats: Any = None,
) -> dict[str, Any]:
    """One ``configs[]`` entry: a configuration's description (its id, bundle,
    backend, block and period: ``ProfileConfig.describe()``) and its figures."""
    return {
        **description,
        "load_s": load_s,
        "first_block_ms": first_block_ms,
        "rss_delta_mib": rss_delta_mib,
        "engine": engine,
        "graph": graph,
        "latency": latency,
        "budget": budget,
        "engine_stats": json_ready_or_none(engine_stats),
    }


def comparisons(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Side-by-side ratios of ``configs[]`` entries (config time / reference time;
    below 1 = faster).

    For each configuration, its reference is the configuration that differs from
    it in exactly one axis and has that axis at its first value: threads vs the
    first thread count, bundle vs the first bundle (e.g. int8 vs fp32), period vs
    the first period.
    """
    out: list[dict[str, Any]] = []
    if not configs:
        return out
    axes = ("bundle", "threads", "period")
    firsts = {a: configs[0][a] for a in axes}
    for c in configs:
        for a in axes:
            if c[a] == firsts[a]:
                continue
            ref = next(
                (r for r in configs if r[a] == firsts[a] and all(r[o] == c[o] for o in axes if o != a)),
                None,
            )
            if ref is None:
                continue
            row = {"config": c["id"], "reference": ref["id"], "axis": a, "value": c[a], "reference_value": ref[a]}
            for sec in ("graph", "engine"):
                for stat in ("p50_ms", "p99_ms", "mean_ms"):
                    num, den = c[sec][stat], ref[sec][stat]
                    row[f"{sec}_{stat[:-3]}_ratio"] = (num / den) if (num is not None and den) else None
            out.append(row)
    return out


def build_report(
    *,
    tool: str,
    mode: str,
    settings: dict[str, Any],
    startup: dict[str, Any],
    resources: dict[str, Any],
    configs: list[dict[str, Any]],
    warnings: list[str],
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report (``SCHEMA``), stamped with the schema version, the time
    and the machine; ``comparisons`` are derived from ``configs``."""
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": tool,
        "mode": mode,
        "created": utc_now(),
        "machine": machine_info(),
        "settings": settings,
        "startup": startup,
        "resources": resources,
        "configs": configs,
        "comparisons": comparisons(configs),
        "files": {},
        "warnings": list(warnings),
    }
    if live is not None:
        report["live"] = live
    return report


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def prepare_dir(report_dir: str | Path) -> Path:
    """Create ``report_dir`` and prove it writable before anything is measured."""
    d = Path(report_dir)
    try:
        if d.exists() and not d.is_dir():
            raise ProfileError(f"the report directory {d} exists and is not a directory; choose another --report")
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".wavae-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except ProfileError:
        raise
    except OSError as e:
        raise ProfileError(
            f"cannot write the report to {d} ({e.strerror or e}); choose a writable --report directory"
        ) from e
    return d


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ProfileError(f"cannot write {path} ({e.strerror or e}); choose a writable --report directory") from e


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n"


def write_timings(series: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["config", "kind", "index", "ms"])
    for cid, kinds in series.items():
        for kind, times in kinds.items():
            for i, t in enumerate(np.asarray(times, np.float64)):
                w.writerow([cid, kind, i, f"{t * 1e3:.4f}"])
    _write(path, buf.getvalue().encode())


def write_all(report: dict[str, Any], series: dict[str, dict[str, np.ndarray]], report_dir: str | Path) -> Path:
    """Write report.json, report.md, the PNGs and timings.csv; return report.json's path."""
    d = prepare_dir(report_dir)
    files: dict[str, str] = {}
    write_timings(series, d / "timings.csv")
    files["timings"] = "timings.csv"
    try:
        pngs = write_plots(report, series, d)
        files.update(pngs)
    except ImportError as e:
        report.setdefault("warnings", []).append(
            f"PNG plots skipped: matplotlib is not installed ({e}); `pip install matplotlib` to get them"
        )
    files["markdown"] = "report.md"
    files["json"] = "report.json"
    report["files"] = files
    problems = validate(json_ready(report))
    if problems:  # a bug in the writer, not in the user's input
        raise RuntimeError("bug: the profile report does not match its schema: " + "; ".join(problems[:5]))
    _write(d / "report.md", markdown(report).encode())
    _write(d / "report.json", to_json(report).encode())
    return d / "report.json"


# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------
def _f(v: Any, fmt: str = ".2f") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_f(v) if not isinstance(v, str) else v for v in r) + " |")
    return out


def _axis_values(r: dict[str, Any]) -> str:
    if r["axis"] == "bundle":
        return f"{Path(str(r['value'])).name} vs {Path(str(r['reference_value'])).name}"
    return f"{r['value']} vs {r['reference_value']}"


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    L = [f"# wavae profile ({report['mode']})", ""]
    L.append(
        f"{report['created']} on `{m['hostname']}`: {m['cpu']} ({m['cpu_available']} of {m['cpu_count']} CPUs), "
        f"{m['platform']}, Python {m['python']}, onnxruntime {m.get('onnxruntime') or '–'}."
    )
    if report["mode"] == "offline":
        L.append(
            f"{s['seconds']:g} s of audio per configuration ({s['input']} input, "
            f"{'paced in real time' if s['paced'] else 'unpaced'}), device rate {s['device_rate']} Hz, "
            f"playback pre-filled with {s['prefill_periods']} periods, {s['onsets']} onsets for the latency, seed {s['seed']}. "
            f"Timings interleaved in rounds of {s['round_s']:g} s."
        )
    L.append("")
    L.append("Jitter = p99 - p50. A miss is a block whose compute time exceeds its own duration (the deadline).")
    L.append("")
    configs = report["configs"]
    L += ["## Configurations", ""]
    L += _table(
        ["id", "bundle", "preset", "precision", "backend", "threads", "block", "period"],
        [
            [c["id"], f"`{c['bundle']}`" if c["bundle"] else "–", c["preset"] or "–", c["precision"] or "–",
             c["backend"] or "–", c["threads"],
             f"{c['block']} @ {c['sample_rate']} Hz ({_f(c['block_ms'])} ms)" if c["block"] else "–",
             f"{c['period']} @ {c['device_rate']} Hz ({_f(c['period_ms'])} ms)" if c["period"] else "–"]
            for c in configs
        ],
    )
    L.append("")
    for sec, title in (("graph", "Model block (encoder + decoder on the backend)"),
                       ("engine", "Engine call (one ALSA period: resampling, controls, graphs when due)")):
        rows = []
        for c in configs:
            st = c.get(sec)
            if not st:
                continue
            rows.append([c["id"], st["count"], st["deadline_ms"], st["p50_ms"], st["p95_ms"], st["p99_ms"],
                         st["max_ms"], st["jitter_ms"], st["std_ms"], f"{st['misses']} ({100 * st['miss_rate']:.2f} %)",
                         _f(st["rtf"], ".3f")])
        if not rows:
            continue
        L += [f"## {title}", ""]
        L += _table(["id", "blocks", "deadline ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "jitter ms", "std ms",
                     "misses", "RTF"], rows)
        gpu_rows = [[c["id"], c["graph"]["gpu"]["p50_ms"], c["graph"]["gpu"]["p99_ms"], c["graph"]["gpu"]["max_ms"]]
                    for c in configs if c.get("graph") and c["graph"].get("gpu")]
        if sec == "graph" and gpu_rows:
            L += ["", "GPU time (CUDA events):", ""]
            L += _table(["id", "GPU p50 ms", "GPU p99 ms", "GPU max ms"], gpu_rows)
        if sec == "engine":
            long_blocks = [c for c in configs if c.get("block_ms") and c.get("period_ms")
                           and c["block_ms"] > c["period_ms"] * 1.001]
            if long_blocks:
                c = long_blocks[0]
                L += ["", f"With a model block ({c['block_ms']:.2f} ms) longer than the period "
                          f"({c['period_ms']:.2f} ms), only the call that completes a block runs the model; it "
                          f"takes the block's whole compute and misses its period's deadline whenever that "
                          f"compute exceeds a period. An inline loop needs that much ALSA buffer to absorb it; "
                          f"the worker threading (`audio.threading = \"worker\"`) spreads it over the block's "
                          f"periods instead."]
        L.append("")
    L += ["## Algorithmic latency", ""]
    lat_rows = []
    for c in configs:
        la = c["latency"]
        d = la["declared"]
        lat_rows.append([
            c["id"], f"{la['onsets_detected']}/{la['onsets_total']}", la["measured_ms"], la["std_ms"],
            f"{_f(la['min_ms'])} – {_f(la['max_ms'])}" if la["min_ms"] is not None else "–",
            la["first_influence_ms"], d.get("total_ms"),
            d.get("model_latency_ms"), la["error_ms"], la["within_one_block"],
        ])
    L += _table(["id", "onsets", "measured ms", "spread (std) ms", "range ms", "first influence ms",
                 "declared (engine) ms", "declared (model) ms", "measured - declared ms", "within one block"], lat_rows)
    L.append("")
    if configs and configs[0]["latency"]["onsets_total"]:
        L.append(f"Method: {configs[0]['latency']['method']}.")
        L.append("")
    L += ["## Action-to-sound budget", ""]
    b_rows = []
    for c in configs:
        b = c.get("budget")
        if not b:
            continue
        fits = {True: "fits", False: "**too slow**", None: "-"}[b["compute_fits"]]
        b_rows.append([c["id"], b["alsa_buffering_ms"], b["resampler_ms"], b["algorithmic_ms"],
                       b["engine_buffering_ms"], f"**{_f(b['total_ms'])}**",
                       f"{'within' if b['within_target'] else 'over'} {b['target_ms']:g} ms",
                       f"{_f(b['compute_p99_ms'])} of {_f(b['compute_budget_ms'])} ({fits})"])
    if b_rows:
        L += _table(["id", "ALSA queue ((prefill-1) x period) ms", "resampler ms", "algorithmic ms",
                     "engine FIFO ms", "round trip ms", "vs target", "compute p99 ms of budget"], b_rows)
        b0 = configs[0].get("budget") or {}
        if b0:
            L.append("")
            L.append(f"ALSA buffering: a pre-fill of {b0['prefill_periods']} period(s) of {b0['period']} frames "
                     f"queued for playback (the live loop's `audio.prefill_periods`). The engine's figures "
                     f"(resampler + algorithmic + FIFO = its declared total) include the period being captured. "
                     f"Compute p99 is the engine call's. Model side: {b0['model_side_source']} figures.")
        L.append("")
    st, rs = report["startup"], report["resources"]
    L += ["## Resources", ""]
    L.append(f"- start-up, process start to first audio block out: {_f(st['process_to_first_block_s'], '.3f')} s "
             f"(clock resolution {st['clock_resolution_s']:g} s)")
    if st.get("import_to_first_block_s") is not None:
        L.append(f"- from `wavae profile` imported to first block: {_f(st['import_to_first_block_s'], '.3f')} s "
                 f"(bundle load + sessions {_f(st['load_s'], '.3f')} s, first block {_f(st['first_block_ms'])} ms)")
    L.append(f"- RSS now {_f(rs['rss_mib'], '.1f')} MiB, peak {_f(rs['rss_peak_mib'], '.1f')} MiB"
             + (f" (before loading bundles {_f(rs['rss_before_load_mib'], '.1f')} MiB)" if rs.get("rss_before_load_mib") else ""))
    for c in configs:
        if c.get("rss_delta_mib") is not None:
            L.append(f"- {c['id']}: loading took {_f(c['load_s'], '.3f')} s and {_f(c['rss_delta_mib'], '.1f')} MiB "
                     f"(engine + a second backend for graph timing)")
    L.append("")
    if report.get("live"):
        L += ["## Live run", "", f"- xruns: {report['live']['xruns']}"]
        eng = configs[0]["engine"] if configs else {}
        if "blocks_total" in eng:
            L.append(f"- blocks: {eng['blocks_total']} in all, {eng['misses_total']} over the deadline, "
                     f"max {_f(eng['max_total_ms'])} ms, RTF {_f(eng['rtf_total'], '.3f')} "
                     f"(distribution over the last {eng['window_blocks']})")
        L.append("")
    if report["comparisons"]:
        L += ["## Side-by-side ratios (config / reference; below 1 is faster)", ""]
        L += _table(
            ["config", "reference", "axis", "value vs reference", "graph p50", "graph p99", "engine p50", "engine p99"],
            [[r["config"], r["reference"], r["axis"], _axis_values(r),
              _f(r["graph_p50_ratio"], ".3f"), _f(r["graph_p99_ratio"], ".3f"),
              _f(r["engine_p50_ratio"], ".3f"), _f(r["engine_p99_ratio"], ".3f")] for r in report["comparisons"]],
        )
        L.append("")
    files = report.get("files", {})
    pngs = [(k, v) for k, v in files.items() if v.endswith(".png")]
    if pngs:
        L += ["## Plots", ""]
        L += [f"![{k}]({v})" for k, v in pngs]
        L.append("")
    if report.get("warnings"):
        L += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    return "\n".join(L)


# ----------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------
def _savefig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _write(path, buf.getvalue())


def write_plots(report: dict[str, Any], series: dict[str, dict[str, np.ndarray]], d: Path) -> dict[str, str]:
    """hist.png, series.png, budget.png; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    configs = {c["id"]: c for c in report["configs"]}
    kinds = [k for k in ("graph", "engine") if any(k in s and len(s[k]) for s in series.values())]
    out: dict[str, str] = {}

    # histogram --------------------------------------------------------------
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for cid, s in series.items():
            t = np.asarray(s.get(kind, []), np.float64) * 1e3
            if not t.size:
                continue
            hi = float(np.percentile(t, 99.9)) * 1.2 + 1e-6
            ax.hist(np.clip(t, None, hi), bins=80, histtype="step", label=cid, linewidth=1.2)
            dl = configs[cid][kind]["deadline_ms"]
            ax.axvline(dl, linestyle="--", linewidth=1, color="red")
        ax.set_xlabel("compute time per block (ms)")
        ax.set_ylabel("blocks")
        ax.set_yscale("log")
        ax.set_title("model block" if kind == "graph" else "engine call (ALSA period)")
        ax.legend(fontsize=7, title="dashed: deadline", title_fontsize=7)
    fig.tight_layout()
    _savefig(fig, d / "hist.png")
    plt.close(fig)
    out["histogram"] = "hist.png"

    # time series -------------------------------------------------------------
    ids = list(series)[:8]
    fig, axes = plt.subplots(len(ids), len(kinds), figsize=(6 * len(kinds), 2.4 * len(ids)), squeeze=False)
    for r, cid in enumerate(ids):
        for col, kind in enumerate(kinds):
            ax = axes[r][col]
            t = np.asarray(series[cid].get(kind, []), np.float64) * 1e3
            st = configs[cid].get(kind)
            if not t.size or not st:
                ax.set_visible(False)
                continue
            x = np.arange(t.size) * st["deadline_ms"] / 1e3  # seconds of audio
            ax.plot(x, t, linewidth=0.6)
            ax.axhline(st["deadline_ms"], color="red", linestyle="--", linewidth=1, label="deadline")
            ax.set_ylim(0, max(st["deadline_ms"], float(t.max())) * 1.1)
            ax.set_title(f"{cid}: {'model block' if kind == 'graph' else 'engine call'}", fontsize=8)
            ax.set_ylabel("ms")
            if r == len(ids) - 1:
                ax.set_xlabel("audio time (s)")
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    _savefig(fig, d / "series.png")
    plt.close(fig)
    out["series"] = "series.png"

    # budget --------------------------------------------------------------------
    parts = [("alsa_buffering_ms", "ALSA buffering"), ("resampler_ms", "resampler"),
             ("algorithmic_ms", "algorithmic"), ("engine_buffering_ms", "engine FIFO")]
    rows = [c for c in report["configs"] if c.get("budget")]
    if rows:
        fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(rows)))
        ys = np.arange(len(rows))
        left = np.zeros(len(rows))
        for key, name in parts:
            vals = np.array([c["budget"][key] or 0.0 for c in rows])
            ax.barh(ys, vals, left=left, label=name)
            left += vals
        for y, c in zip(ys, rows):
            ax.text(left[y], y, f" {c['budget']['total_ms']:.1f} ms", va="center", fontsize=8)
        ax.axvline(TARGET_MS, color="red", linestyle="--", label=f"{TARGET_MS:g} ms")
        ax.set_yticks(ys)
        ax.set_yticklabels([c["id"] for c in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("action-to-sound latency (ms)")
        ax.set_xlim(0, max(TARGET_MS, float(left.max())) * 1.2)
        ax.legend(fontsize=7, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout()
        _savefig(fig, d / "budget.png")
        plt.close(fig)
        out["budget"] = "budget.png"
    return out


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "TARGET_MS", "ProfileError", "build_report", "comparisons", "config_section",
    "json_ready", "json_ready_or_none", "markdown", "prepare_dir", "resources_section", "schema_keys",
    "settings_section", "startup_section", "to_json", "validate", "write_all",
]
