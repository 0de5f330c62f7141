"""Loss curves of a training run from its log's plain progress lines.

    .venv/bin/python benchmarks/training_curve.py /work/train-pi/train.log \
        [--every 1000] [--out docs/benchmarks/pi-training.md]

The trainer writes, every ``train.log_every`` steps, a line such as

    2026-11-30 04:00:41,736 INFO wavae.train.trainer: vae step 50/20000  11.688 steps/s  lr 7.5e-05  loss 26.61 ...

This script averages every loss term (and the speed) over windows of ``--every``
steps per stage, writes a Markdown table and a PNG of the curves beside it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(\S+ \S+) INFO wavae\.train\.trainer: (\w+) step (\d+)/(\d+)\s+([\d.]+) steps/s\s+lr (\S+)\s+(.*)$")


def parse(log: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        stamp, stage, step, _total, rate, lr, rest = m.groups()
        tokens = rest.split()
        values = {tokens[i]: float(tokens[i + 1]) for i in range(0, len(tokens) - 1, 2)}
        rows[stage].append({"time": stamp, "step": int(step), "steps_per_s": float(rate), "lr": float(lr), **values})
    return rows


def windows(rows: list[dict], every: int) -> list[dict]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["step"] - 1) // every].append(r)
    table = []
    for w in sorted(out):
        group = out[w]
        keys = [k for k in group[-1] if k not in ("time", "step")]
        avg = {k: sum(g.get(k, 0.0) for g in group) / len(group) for k in keys}
        table.append({"step": group[-1]["step"], "time": group[-1]["time"], **avg})
    return table


def render(log: Path, stages: dict[str, list[dict]], every: int, png: str | None) -> str:
    lines = ["# Training curves", "", f"From `{log}`: each row averages the logged lines of {every} steps "
             "(`benchmarks/training_curve.py`).", ""]
    for stage, table in stages.items():
        if not table:
            continue
        keys = [k for k in table[-1] if k not in ("step", "time")]
        lines += [f"## {stage}", "", "| step | time | " + " | ".join(keys) + " |",
                  "|---:|---|" + "---:|" * len(keys)]
        for r in table:
            lines.append(f"| {r['step']} | {r['time'][:19]} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for k in keys) + " |")
        lines.append("")
    if png:
        lines += [f"![loss curves]({png})", ""]
    return "\n".join(lines)


def plot(stages: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {s: t for s, t in stages.items() if t}
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4), squeeze=False)
    for ax, (stage, table) in zip(axes[0], shown.items()):
        keys = [k for k in table[-1] if k not in ("step", "time", "steps_per_s", "lr")]
        for k in keys:
            ax.plot([r["step"] for r in table], [r.get(k, float("nan")) for r in table], label=k)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(stage)
        ax.legend(fontsize=7)
    fig.tight_layout()
    from wavae.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--every", type=int, default=1000, help="steps per row (default 1000)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "pi-training.md")
    args = ap.parse_args(argv)
    from wavae.fileio import atomic_write_bytes

    stages = {s: windows(rows, args.every) for s, rows in parse(args.log).items()}
    if not any(stages.values()):
        print(f"no progress lines in {args.log}", file=sys.stderr)
        return 1
    png = args.out.with_suffix(".png")
    plot(stages, png)
    atomic_write_bytes(args.out, render(args.log, stages, args.every, png.name).encode())
    print(f"wrote {args.out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
