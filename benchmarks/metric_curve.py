"""Quality metrics over training steps, from `wavae evaluate` reports of snapshots of one run.

    .venv/bin/python benchmarks/metric_curve.py 5700=docs/benchmarks/pi-eval-5k/metrics.json \
        16500=models/pi/eval/fp32/metrics.json [--solo 16500=models/pi/eval/fp32-solo/metrics.json] \
        [--out docs/benchmarks/pi-metrics.md]

Each argument is ``VOCODER_STEP=metrics.json``.  Writes a Markdown table (each metric
against issue 13's target, from ``wavae.quantize.evaluate.TARGETS``) and a PNG of the
curves beside it.  ``--solo`` reports give the f0 error on monophonic strings (the
target's own clips); without one for a step, the f0 column is the mixed clips'.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wavae.fileio import atomic_path, atomic_write_bytes  # noqa: E402
from wavae.quantize.evaluate import TARGETS, target_text  # noqa: E402

METRICS = (("log_mel_l1_db", "log-mel L1 (dB)"), ("rms_corr", "RMS-envelope correlation"),
           ("f0_cents", "f0 median error (cents)"), ("loudness_probe_accuracy", "loudness probe accuracy"))


def _pairs(items: list[str]) -> dict[int, dict]:
    out = {}
    for item in items:
        step, _, path = item.partition("=")
        out[int(step)] = json.loads(Path(path).read_text())
    return dict(sorted(out.items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", metavar="STEP=metrics.json")
    p.add_argument("--solo", nargs="*", default=[], metavar="STEP=metrics.json")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "pi-metrics.md")
    a = p.parse_args()
    reports, solo = _pairs(a.reports), _pairs(a.solo)
    rows = {}
    for step, r in reports.items():
        t = dict(r["total"])
        t["f0_solo"] = step in solo
        if step in solo:
            t["f0_cents"] = solo[step]["total"]["f0_cents"]
        t["files"] = len(r["files"])
        rows[step] = t
    lines = ["# Quality over training steps", "",
             "`wavae evaluate` of snapshots of the `pi` run on held-out clips (`benchmarks/metric_curve.py`). "
             "f0 marked * is measured on monophonic strings (`wavae data --recipe solo`), where the target "
             "is defined; the others on the mixed held-out clips.", "",
             "| vocoder step | clips | " + " | ".join(f"{label} ({target_text(k)})" for k, label in METRICS) + " |",
             "|---:|---:|" + "---:|" * len(METRICS)]
    for step, t in rows.items():
        cells = []
        for k, _ in METRICS:
            v = t.get(k)
            cells.append("n/a" if v is None else f"{v:.3g}" + ("*" if k == "f0_cents" and t["f0_solo"] else ""))
        lines.append(f"| {step:,} | {t['files']} | " + " | ".join(cells) + " |")
    lines += ["", f"![metrics over steps]({a.out.with_suffix('.png').name})", ""]
    atomic_write_bytes(a.out, "\n".join(lines).encode())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    steps = list(rows)
    for ax, (k, label) in zip(axes, METRICS):
        ys = [rows[s].get(k) for s in steps]
        ax.plot([s for s, y in zip(steps, ys) if y is not None], [y for y in ys if y is not None], "o-")
        if k in TARGETS:
            ax.axhline(TARGETS[k][1], color="tab:red", ls="--", lw=1, label="target")
            ax.legend(fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("vocoder step")
    fig.tight_layout()
    with atomic_path(a.out.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
