"""``wavae profile``: how fast, how late and how steady a bundle plays on this machine.

    wavae profile --bundle B [B ...] [--backend onnxruntime|tensorrt] [--threads N ...]
                  [--block N ...] [--period P ...] [--device-rate R] [--prefill-periods N]
                  [--seconds S] [--onsets N] [--seed N] [--paced] [--input WAV]
                  --report DIR [--json]

Every combination of bundle x threads x period is measured in one run, the
timings interleaved round by round so that their ratios hold on a noisy
machine.  A bundle's graphs have a fixed block: ``--block`` selects among the
bundles given (and names the `wavae export --block N` to run for a block none
of them has); the ALSA period, at the device rate, is free (``--period``).

Device code: no torch (``wavae.device.profile`` measures, ``wavae.device.report``
writes; docs/profile.md documents the JSON).  ``--prefill-periods`` is the
device config's ``audio.prefill_periods`` (periods of playback queued ahead);
an ALSA ring's size (``audio.periods``) does not enter the profile.
"""

from __future__ import annotations

import time

_T_IMPORT = time.monotonic()  # start-up is also reported from here (the interpreter's own start is before)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from .audio_file import AudioReader  # noqa: E402
from .capabilities import BACKENDS  # noqa: E402
from .backends.tensorrt import gpu_present  # noqa: E402
from .profile import DEFAULT_PREFILL_PERIODS, profile  # noqa: E402
from .report import ProfileError, prepare_dir, to_json, write_all  # noqa: E402



def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", nargs="+", required=True, type=Path, metavar="B",
                   help="bundle directory (several: e.g. fp32 and int8, or one per block; compared side by side)")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS,
                   help="inference backend (default onnxruntime; tensorrt needs a Jetson / NVIDIA GPU)")
    p.add_argument("--threads", nargs="+", type=_positive_int, default=[1], metavar="N",
                   help="intra-op threads, one configuration per value (default 1)")
    p.add_argument("--block", nargs="+", type=_positive_int, default=None, metavar="N",
                   help="model blocks to profile (samples at the model rate); each must be the block of a "
                        "--bundle: graphs have a fixed block, re-export for another")
    p.add_argument("--period", nargs="+", type=_positive_int, default=[256], metavar="P",
                   help="ALSA period size(s) in frames at the device rate (default 256)")
    p.add_argument("--device-rate", type=_positive_int, default=48000, metavar="R",
                   help="device (ALSA) sample rate in Hz (default 48000)")
    p.add_argument("--prefill-periods", type=_positive_int, default=DEFAULT_PREFILL_PERIODS, metavar="N",
                   help=f"periods of playback queued ahead (the live loop's pre-fill, audio.prefill_periods), "
                        f"for the latency budget (default {DEFAULT_PREFILL_PERIODS})")
    p.add_argument("--seconds", type=_positive_float, default=10.0, metavar="S",
                   help="seconds of audio timed per configuration (default 10)")
    p.add_argument("--onsets", type=_positive_int, default=12, metavar="N",
                   help="onsets for the latency measurement (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the onset positions and the test signal")
    p.add_argument("--paced", action="store_true",
                   help="pace engine calls in real time (one period per period duration), like a live loop")
    p.add_argument("--input", type=Path, default=None, metavar="WAV",
                   help="time on this audio instead of the generated notes (mono mix)")
    p.add_argument("--report", type=Path, required=True, metavar="DIR",
                   help="directory for report.json, report.md, the PNGs and timings.csv")
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout")


def check_backend(kind: str) -> None:
    """Refuse a backend this machine cannot run, naming what to install."""
    if kind != "tensorrt":
        return
    why = []
    ok, reason = gpu_present()
    if not ok:
        why.append(reason)
    if importlib.util.find_spec("tensorrt") is None:
        why.append("the `tensorrt` Python module is not installed")
    if why:
        raise ProfileError(
            "--backend tensorrt cannot run on this machine: " + "; ".join(why) + ". "
            "It needs an NVIDIA GPU with TensorRT: on a Jetson, install TensorRT from JetPack "
            "(`sudo apt install nvidia-jetpack`, or just `python3-libnvinfer`) and pycuda, then build the "
            "engines with `wavae engine`; on a Raspberry Pi or an x86 CPU, use --backend onnxruntime."
        )


MIN_INPUT_S = 0.5  # the timers loop over the input in whole periods and model blocks


def _read_input(path: Path) -> tuple[np.ndarray, int]:
    """``--input`` as mono float32 and its rate, with the checks every audio input gets."""
    with AudioReader(path, rates=None, max_channels=64, what="--input") as r:
        x = r.read(r.frames)
    if r.seconds < MIN_INPUT_S:
        raise ProfileError(
            f"--input {path} is shorter than {MIN_INPUT_S:g} s ({r.frames} samples at {r.rate} Hz); the "
            f"profiler times whole periods and model blocks over it: give a longer file"
        )
    return x.mean(axis=1, dtype=np.float32), int(r.rate)


def _summary_lines(report: dict) -> list[str]:
    out = []
    for c in report["configs"]:
        g, e, la, b = c["graph"], c["engine"], c["latency"], c["budget"]
        out.append(
            f"{c['id']}: {Path(c['bundle']).name} {c['precision']} {c['threads']} thr, block {c['block']} "
            f"({c['block_ms']:.2f} ms): graph p50 {g['p50_ms']:.3f} / p99 {g['p99_ms']:.3f} ms, RTF {g['rtf']:.3f}, "
            f"{g['misses']} misses; period {c['period']}: engine p99 {e['p99_ms']:.3f} ms, {e['misses']} misses"
        )
        if la["measured_ms"] is not None:
            d = la["declared"]["total_ms"]
            out.append(
                f"    latency measured {la['measured_ms']:.2f} ms (spread {la['std_ms']:.2f} ms, "
                f"{la['onsets_detected']}/{la['onsets_total']} onsets) vs declared {d:.2f} ms; "
                f"action-to-sound {b['total_ms']:.2f} ms ({'within' if b['within_target'] else 'over'} "
                f"{b['target_ms']:g} ms)"
            )
        else:
            out.append(f"    latency: no onset detected in the output ({la['onsets_total']} injected)")
    st = report["startup"]
    if st.get("process_to_first_block_s") is not None:
        out.append(f"start-up (process start to first block out) {st['process_to_first_block_s']:.2f} s; "
                   f"peak RSS {report['resources']['rss_peak_mib']:.0f} MiB")
    return out


def main(args: argparse.Namespace) -> int:
    check_backend(args.backend)
    input_audio = _read_input(args.input) if args.input is not None else None
    report_dir = prepare_dir(args.report)  # fail now, not after minutes of measuring
    quiet = bool(args.json)

    def say(msg: str) -> None:
        if not quiet:
            print(f"profile: {msg}", file=sys.stderr, flush=True)

    result, series = profile(
        args.bundle,
        backend=args.backend,
        threads=args.threads,
        blocks=args.block,
        period_sizes=args.period,
        device_rate=args.device_rate,
        prefill_periods=args.prefill_periods,
        seconds=args.seconds,
        seed=args.seed,
        n_onsets=args.onsets,
        paced=args.paced,
        input_audio=input_audio,
        t_import=_T_IMPORT,
        progress=say,
        show_bar=sys.stderr.isatty() and not quiet,
    )
    path = write_all(result, series, report_dir)
    if args.json:
        sys.stdout.write(to_json(result))
    else:
        for line in _summary_lines(result):
            print(line)
        for w in result["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        print(f"report: {path} and {path.with_name('report.md')}")
    return 0


__all__ = ["add_arguments", "check_backend", "main"]
