"""Cost of the engine's feedback shaper per model block, against a per-sample Python loop.

    .venv/bin/python benchmarks/bench_dsp.py [--calls 2000] [--repeats 5]

``FeedbackShaper.process`` (band-pass, ramped gain, DC blocker, soft limiter;
``wavae.device.dsp``) runs its two IIR filters as a few small matrix products
per block.  The reference runs the same filters one sample at a time in Python
(the straightforward implementation), then the same limiter; both outputs are
checked to agree before anything is timed.  The shaper's gain is on (0.5) and
its filter fixed, as in steady use; when its gain is back to 0 and its tail has
died the engine does not call it at all.  The machine is shared: each figure
is the fastest batch of 10 consecutive blocks over ``--repeats`` passes of
``--calls`` blocks, both implementations measured side by side.

Writes docs/benchmarks/dsp.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from wavae.device.dsp import FeedbackShaper, bandpass_coefficients, soft_limit
from wavae.device.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "dsp.md"
RATE = 24000
BLOCKS = (256, 512)
FREQ, Q, GAIN = 1000.0, 2.0, 0.5


class LoopShaper:
    """The shaper's chain with its two filters run sample by sample (transposed direct form II)."""

    def __init__(self, shaper: FeedbackShaper):
        self.block = shaper.block
        self.bp = bandpass_coefficients(FREQ, Q, shaper.sample_rate)
        self.r = shaper.dc_r
        self.knee, self.ceiling = shaper.knee, shaper.ceiling
        self.s1 = self.s2 = 0.0
        self.x1 = self.y1 = 0.0
        self.out = np.zeros(self.block, np.float32)
        self.work = np.zeros(self.block, np.float32)

    def process(self, y: np.ndarray, gain: float) -> np.ndarray:
        b0, b1, b2, a1, a2 = self.bp
        s1, s2, x1, y1, r = self.s1, self.s2, self.x1, self.y1, self.r
        out = self.out
        for n, x in enumerate(y.tolist()):
            v = b0 * x + s1
            s1 = b1 * x - a1 * v + s2
            s2 = b2 * x - a2 * v
            v *= gain
            y1 = v - x1 + r * y1
            x1 = v
            out[n] = y1
        self.s1, self.s2, self.x1, self.y1 = s1, s2, x1, y1
        return soft_limit(out, self.knee, self.ceiling, out, self.work)


def per_block_us(step, blocks: list[np.ndarray], repeats: int, batch: int = 10) -> float:
    """The fastest batch of ``batch`` consecutive blocks, over ``repeats`` passes: on a shared
    machine a short batch usually runs uninterrupted, a long run seldom does."""
    best = float("inf")
    for _ in range(repeats):
        for i in range(0, len(blocks) - batch + 1, batch):
            t = time.perf_counter()
            for y in blocks[i : i + batch]:
                step(y)
            best = min(best, (time.perf_counter() - t) / batch)
    return best * 1e6


def measure(block: int, calls: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    blocks = [(0.3 * rng.standard_normal(block)).astype(np.float32) for _ in range(calls)]
    shaper = FeedbackShaper(RATE, block)
    shaper.set_filter(FREQ, Q)
    shaper.gain = GAIN  # steady state: no ramp from 0
    loop = LoopShaper(shaper)
    out = np.zeros(block, np.float32)
    for y in blocks[:50]:  # both from the same state: they must agree
        a = shaper.process(y, GAIN, out)
        b = loop.process(y, GAIN)
        if not np.allclose(a, b, atol=1e-5):
            raise SystemExit(f"block {block}: the shaper and the per-sample loop disagree by {np.abs(a - b).max():.2e}")
    fast = per_block_us(lambda y: shaper.process(y, GAIN, out), blocks, repeats)
    slow = per_block_us(lambda y: loop.process(y, GAIN), blocks[: max(calls // 10, 20)], repeats)
    return {"block": block, "shaper_us": fast, "loop_us": slow}


def write_report(rows: list[dict], calls: int, repeats: int, load: tuple[float, float]) -> None:
    lines = [
        "# Engine DSP: the feedback shaper per model block",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `benchmarks/bench_dsp.py` on {cpu_name()} "
        f"({os.cpu_count()} cores, **shared with other jobs**: 1-minute load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after), Python {platform.python_version()}, numpy {np.__version__}, one thread.",
        "",
        f"`FeedbackShaper.process` at {RATE} Hz, gain {GAIN}, band-pass {FREQ:g} Hz Q {Q:g}, against the same chain "
        "with its two IIR filters run sample by sample in Python (outputs checked equal first). Per block: the "
        f"fastest batch of 10 consecutive blocks over {repeats} passes of {calls} blocks (the loop: a tenth as many).",
        "",
        "| block (model samples) | shaper us per block | per-sample loop us per block | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['block']} | **{r['shaper_us']:.1f}** | {r['loop_us']:.1f} | "
                     f"{r['loop_us'] / r['shaper_us']:.1f}x |")
    lines += ["", "Once its gain is back to 0 and its tail has died away the engine stops calling the shaper: "
              "it costs nothing while feedback is off.", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, OUT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    before = os.getloadavg()[0]
    rows = [measure(b, a.calls, a.repeats) for b in BLOCKS]
    after = os.getloadavg()[0]
    for r in rows:
        print(f"block {r['block']}: shaper {r['shaper_us']:.1f} us, per-sample loop {r['loop_us']:.1f} us")
    write_report(rows, a.calls, a.repeats, (before, after))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
