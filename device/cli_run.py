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

is ``wavae.device.live.main_live(args)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from wavae.errors import WavaeError

DEFAULT_PERIOD = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory written by `wavae export` (overrides the config's)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default=None,
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


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise WavaeError(f"--set takes NAME=VALUE, got {item!r}")
        name, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word such as manual / on
        out[name.strip()] = value
    return out


def main(args: argparse.Namespace) -> int:
    if args.config:
        from wavae.device.live import main_live

        return int(main_live(args) or 0)
    if not args.input and not args.output:
        raise WavaeError(
            "nothing to run: give --config DEVICE.toml for the live loop, or --bundle B --input IN.wav "
            "--output OUT.wav for file mode"
        )
    for name in ("bundle", "input", "output"):
        if not getattr(args, name):
            raise WavaeError(f"file mode needs --{name} (wavae run --bundle B --input IN.wav --output OUT.wav)")
    if args.capture or args.playback or args.seconds is not None:
        raise WavaeError("--capture, --playback and --seconds belong to the live loop: add --config DEVICE.toml")
    return run_file(args)


def run_file(args: argparse.Namespace) -> int:
    from .audio_file import read_wav
    from .backends import make_backend
    from .bundle import load_bundle
    from .controls import Controls, ControlScript

    period = DEFAULT_PERIOD if args.period is None else args.period
    threads = 1 if args.threads is None else args.threads
    bundle = load_bundle(args.bundle)
    audio, rate = read_wav(args.input)
    controls = Controls(bundle.latent_dim)
    if args.set_controls:
        controls.update(parse_set(args.set_controls))
    script = ControlScript.load(args.controls, controls) if args.controls else None
    with make_backend(bundle, args.backend or "onnxruntime", threads=threads) as backend:  # closed on every path
        return _render(args, bundle, backend, audio, rate, controls, script, period)


def _render(args, bundle, backend, audio, rate, controls, script, period) -> int:
    """Play ``audio`` through the engine on ``backend`` and write the output (run_file closes the backend)."""
    from .audio_file import write_wav_atomic
    from .engine import Engine

    channels = audio.shape[1]
    engine = Engine(
        bundle,
        backend,
        device_rate=rate,
        period=period,
        channels_in=channels,
        channels_out=channels,
        controls=controls,
        resampler=args.resampler or "polyphase",
    )
    n = audio.shape[0]
    delay = 0 if args.keep_latency else engine.prefill
    calls = -(-(n + delay) // period)
    x = np.zeros((calls * period, channels), np.float32)
    x[:n] = audio
    y = np.zeros_like(x)
    t0 = time.perf_counter()
    try:
        from tqdm import tqdm

        it = tqdm(range(calls), desc="wavae run", unit="period", disable=None, leave=False)
    except ImportError:  # tqdm is a dependency; the loop does not need it
        it = range(calls)
    for k in it:
        i = k * period
        if script is not None:
            script.apply(controls, i, period, rate)
        engine.process(x[i : i + period], out=y[i : i + period])
    wall = time.perf_counter() - t0
    out = y[delay : delay + n]
    write_wav_atomic(args.output, out, rate)
    lat = engine.latency()
    print(
        f"wrote {args.output}: {n / rate:.2f} s at {rate} Hz, {channels} channel(s); "
        f"{backend.describe()}; engine latency {lat['total_ms']:.1f} ms "
        f"(resampler {lat['resampler_ms']:.1f}, algorithmic {lat['algorithmic_ms']:.1f}, "
        f"buffering {lat['buffering_ms']:.1f}); rendered in {wall:.2f} s ({n / rate / max(wall, 1e-9):.1f}x real time)"
    )
    st = engine.stats
    if st["nan_resets"]:
        print(f"warning: the NaN guard muted and reset the model {st['nan_resets']} time(s)", file=sys.stderr)
    if args.profile:
        t = engine.timing()
        print(
            f"per block ({engine.block} samples, {t['block_ms']:.2f} ms): p50 {t['p50_ms']:.3f} ms, "
            f"p99 {t['p99_ms']:.3f} ms, max {t['max_ms']:.3f} ms, RTF {t['rtf_p50']:.3f} over {t['blocks']} blocks"
        )
    return 0
