"""``wavae run``: the instrument, over a file or live through ALSA (no torch).

File mode (renders, demos, tests)::

    wavae run --bundle B --input in.wav --output out.wav [--controls script.json]
              [--period N] [--threads N] [--backend onnxruntime|tensorrt] [--set NAME=VALUE ...]

runs the same ``Engine`` the live loop runs, period by period, at the file's
rate.  A stereo input is mixed to mono for the model and written back as two
equal channels.  The output is aligned with the input (the engine's delay is
removed) unless ``--keep-latency`` writes the stream exactly as the live loop
would play it.

Live mode::

    wavae run --config device.toml [--bundle B] [--capture PCM] [--playback PCM] [--seconds S]
    wavae run --bundle B --capture PCM --playback PCM          (no config: the default settings)

is ``wavae.device.live.main_live(args)``.  Both build the instrument with
``wavae.device.instrument``: this module only maps arguments to an
``InstrumentSpec`` and renders the file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from wavae.errors import WavaeError
from wavae.progress import Progress

from .audio_file import AudioReader, AudioWriter
from .controls import parse_set
from .instrument import Instrument, InstrumentSpec, timing_line
from .live import main_live
from .shipped import bundle_or_default

from .capabilities import BACKENDS

DEFAULT_PERIOD = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory written by `wavae export` (overrides the config's; "
                                    "default: the shipped model, models/pi/pi-fp32)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="inference backend (default onnxruntime; tensorrt needs the Jetson's GPU)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--period", type=int, default=None,
                   help=f"device frames per engine call (file mode default {DEFAULT_PERIOD})")
    p.add_argument("--controls", metavar="SCRIPT.json", default=None,
                   help='control script: {"events": [{"t": s, "control": name, "value": v}, ...]}')
    p.add_argument("--set", dest="set_controls", metavar="NAME=VALUE", action="append", default=[],
                   help="initial control value, e.g. --set feedback_gain=0.4 --set bias.0=1.5 (repeatable)")
    p.add_argument("--resampler", default=None,
                   help="polyphase (default, low latency) or soxr-lq/mq/hq/vhq")
    f = p.add_argument_group("file mode")
    f.add_argument("--input", metavar="IN.wav", help="input audio file (mono or stereo, at a device rate)")
    f.add_argument("--output", metavar="OUT.wav", help="output WAV (float32), written atomically")
    f.add_argument("--keep-latency", action="store_true",
                   help="write the engine's stream as played live (delayed by its latency) instead of aligned")
    live = p.add_argument_group("live mode (ALSA)")
    live.add_argument("--config", metavar="DEVICE.toml", help="device config: run the live ALSA loop")
    live.add_argument("--capture", metavar="PCM", help="capture PCM name (overrides the config, like arecord -D)")
    live.add_argument("--playback", metavar="PCM", help="playback PCM name (overrides the config, like aplay -D)")
    live.add_argument("--seconds", type=float, default=None, help="stop after this many seconds of audio")
    p.add_argument("--profile", action="store_true",
                   help="record per-block compute time; file mode prints p50/p99/max and RTF, live mode writes "
                        "the full profile report (JSON, Markdown, PNGs) on exit, SIGINT/SIGTERM included")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="with --profile in live mode: where the report goes (default ./profile-report)")


FILE_ONLY = ("input", "output", "keep_latency")
LIVE_ONLY = ("capture", "playback", "seconds")


def _flags(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]


def main(args: argparse.Namespace) -> int:
    if args.report is not None and not args.profile:
        raise WavaeError("--report says where the --profile report goes: add --profile, or drop --report")
    if args.config or args.capture or args.playback:  # the live loop, from a config or from the defaults
        stray = _flags(args, FILE_ONLY)
        if stray:
            live = "--config" if args.config else "--capture/--playback"
            raise WavaeError(f"{', '.join(stray)} belong to file mode, but {live} runs the live loop: "
                             f"drop {live} to render a file, or drop {', '.join(stray)}")
        return int(main_live(args) or 0)
    if not args.input and not args.output:
        raise WavaeError(
            "nothing to run: give --config DEVICE.toml for the live loop, or --bundle B --input IN.wav "
            "--output OUT.wav for file mode"
        )
    for name in ("input", "output"):
        if not getattr(args, name):
            raise WavaeError(f"file mode needs --{name} (wavae run [--bundle B] --input IN.wav --output OUT.wav)")
    args.bundle = bundle_or_default(args.bundle)
    stray = _flags(args, LIVE_ONLY)
    if stray:
        raise WavaeError(f"{', '.join(stray)} belong to the live loop: add --config DEVICE.toml, "
                         f"or --capture and --playback PCMs to play with the default settings")
    return run_file(args)


def file_spec(args: argparse.Namespace, rate: int, channels: int) -> InstrumentSpec:
    """The instrument file mode plays: the command line's, at the input file's rate and channel count."""
    return InstrumentSpec(
        bundle=Path(args.bundle),
        backend=args.backend or "onnxruntime",
        threads=1 if args.threads is None else args.threads,
        device_rate=rate,
        period=DEFAULT_PERIOD if args.period is None else args.period,
        channels_in=channels,
        channels_out=channels,
        settings=parse_set(args.set_controls),
        script=Path(args.controls) if args.controls else None,
        resampler=args.resampler or "polyphase",
    )


def run_file(args: argparse.Namespace) -> int:
    with AudioReader(args.input) as reader:
        n, rate, channels = reader.frames, reader.rate, reader.channels
        if reader.truncated_frames:
            print(f"warning: {args.input} is cut short: its header promises {reader.truncated_frames} more "
                  f"frames ({reader.truncated_frames / rate:.2f} s) than it holds; rendering what is there",
                  file=sys.stderr)
        AudioWriter(args.output, rate, channels, inputs=(args.input,))  # a bad output fails before the model loads
        with Instrument.open(file_spec(args, rate, channels)) as inst, \
                AudioWriter(args.output, rate, channels, inputs=(args.input,)) as writer:
            wall = render_stream(inst, reader.read, n, writer.write, keep_latency=args.keep_latency,
                                 progress="wavae run")
            lat = inst.engine.latency()
            print(
                f"wrote {args.output}: {n / rate:.2f} s at {rate} Hz, {channels} channel(s); "
                f"{inst.backend.describe()}; engine latency {lat['total_ms']:.1f} ms "
                f"(resampler {lat['resampler_ms']:.1f}, algorithmic {lat['algorithmic_ms']:.1f}, "
                f"buffering {lat['buffering_ms']:.1f}); rendered in {wall:.2f} s "
                f"({n / rate / max(wall, 1e-9):.1f}x real time)"
            )
            st = inst.engine.stats
            if st["nan_resets"]:
                print(f"warning: the NaN guard muted and reset the model {st['nan_resets']} time(s)",
                      file=sys.stderr)
            if args.profile:
                line = timing_line(inst.engine)
                if line is not None:
                    print(line)
    return 0


CHUNK_PERIODS = 64  # periods read and written per file access: few syscalls, a few hundred kB at most


def render_stream(inst: Instrument, read: Callable[[int], np.ndarray], n: int,
                  write: Callable[[np.ndarray], None], keep_latency: bool = False,
                  progress: str | None = None) -> float:
    """Run ``n`` input frames through the instrument, period by period, as the live loop would.

    ``read(k)`` returns up to ``k`` frames ``[k, channels]`` (fewer at the
    end); ``write(y)`` receives the output in order, ``n`` frames in all,
    aligned with the input unless ``keep_latency``.  Memory is a few chunks,
    whatever ``n``.  The control script applies by audio frames processed,
    exactly as live.  Returns the wall time.
    """
    engine, controls, script = inst.engine, inst.controls, inst.script
    period, rate = engine.period, engine.device_rate
    channels = engine.channels_in
    skip = 0 if keep_latency else round(engine.signal_delay)  # output frames that precede the input's first
    calls = -(-(n + skip) // period)
    chunk = period * CHUNK_PERIODS
    x = np.zeros((chunk, channels), np.float32)
    y = np.zeros((chunk, engine.channels_out), np.float32)
    left = n  # output frames still owed
    t0 = time.perf_counter()
    with Progress(n / rate, progress or "", "audio s", enabled=progress is not None) as bar:
        for c0 in range(0, calls, CHUNK_PERIODS):
            k = min(CHUNK_PERIODS, calls - c0)
            got = read(k * period) if c0 * period < n else x[:0]
            m = got.shape[0]
            x[:m] = got
            x[m : k * period] = 0.0
            for j in range(k):
                i = j * period
                if script is not None:
                    script.apply(controls, (c0 + j) * period, period, rate)
                engine.process(x[i : i + period], out=y[i : i + period])
            start = min(skip, k * period)
            skip -= start
            take = min(k * period - start, left)
            if take > 0:
                write(y[start : start + take])
                left -= take
            bar.update(min(k * period, max(0, n - c0 * period)) / rate)
    return time.perf_counter() - t0


def render(inst: Instrument, audio: np.ndarray, keep_latency: bool = False) -> tuple[np.ndarray, float]:
    """``render_stream`` over an array in memory: [frames, channels] in, the same shape out."""
    n = audio.shape[0]
    out = np.zeros((n, inst.engine.channels_out), np.float32)
    pos = {"r": 0, "w": 0}

    def read(k: int) -> np.ndarray:
        block = audio[pos["r"] : pos["r"] + k]
        pos["r"] += block.shape[0]
        return block

    def write(block: np.ndarray) -> None:
        out[pos["w"] : pos["w"] + block.shape[0]] = block
        pos["w"] += block.shape[0]

    wall = render_stream(inst, read, n, write, keep_latency)
    return out, wall
