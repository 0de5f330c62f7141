"""``make bench``: every benchmark in turn; each writes its figures under docs/benchmarks/.

Speed targets live here, never in timed tests.  The machine is noisy: each
benchmark measures its comparisons side by side in one run, as ratios.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["model_stats.py", "bench_quantize.py", "bench_device.py", "bench_dsp.py", "bench_baselines.py",
              "bench_panel.py", "bench_web.py", "bench_web_live.py", "bench_service.py"]
# not here: bench_memory.py needs a bundle and a run (see its docstring); benchmarks/soak.py runs for as
# long as asked (--minutes 60 for the figures)


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name}", flush=True)
        t = time.monotonic()
        r = subprocess.run([sys.executable, str(HERE / name)])
        print(f"=== {name}: exit {r.returncode} in {time.monotonic() - t:.0f} s", flush=True)
        if r.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
