"""``wavae panel check``: a wiring diagnostic for the person building the box (no torch, no audio).

    wavae panel check --config device.toml [--mapping panel.toml] [--seconds S] [--once]

reads the real hardware with the same mapping file and the same code the
instrument runs, and prints, several times a second, each pot's raw ADC value
and the value it maps to, each encoder's click count (and dropped, invalid
transitions), each button's state and press count, the shift layer, and what
hardware is missing and why.  Turn every knob end to end, press every button:
a pot stuck at 0 or 1023, a count that never moves, a button that never
reads "down" is a wiring fault on that line.

The controls it drives are a scratch set: nothing is played or saved.  The
soft takeover is off here, so every pot shows where it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Callable, TextIO

from wavae.errors import WavaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="panel_command", metavar="ACTION")
    c = sub.add_parser("check", help="show pots, encoders and buttons live from the hardware",
                       description="Show each pot's raw and mapped value, encoder counts and button states live.")
    c.add_argument("--config", metavar="DEVICE.toml", help="device config whose [panel] mapping is used")
    c.add_argument("--mapping", metavar="PANEL.toml", help="the mapping file (overrides the config's)")
    c.add_argument("--latent-dim", type=int, default=None,
                   help="latent size for checking bias.K (default: the config's bundle, else no upper limit)")
    c.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    c.add_argument("--interval", type=float, default=0.2, help="seconds between printouts (default 0.2)")
    c.add_argument("--once", action="store_true",
                   help="read for a moment, print once, exit 1 if any part of the panel is missing")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "panel_command", None) != "check":
        raise WavaeError("usage: wavae panel check --config DEVICE.toml [--mapping PANEL.toml]")
    mapping, adc_hz = resolve_mapping(args)
    seconds, interval = (0.3, 0.3) if args.once else (args.seconds, args.interval)
    return run_check(mapping, sys.stdout, seconds=seconds, interval=interval, adc_hz=adc_hz,
                     clear=sys.stdout.isatty() and not args.once)


def resolve_mapping(args: argparse.Namespace):
    from .config import MAX_LATENT_DIM, load_config
    from .panel.mapping import load_mapping

    cfg = load_config(args.config) if args.config else None
    path = args.mapping or (cfg.panel.mapping if cfg is not None and cfg.panel is not None else None)
    if path is None:
        raise WavaeError("no mapping: give --mapping PANEL.toml, or --config with a [panel] section")
    latent = args.latent_dim
    if latent is None and cfg is not None and cfg.bundle.start() is not None:
        from .bundle import load_bundle

        try:
            latent = load_bundle(cfg.bundle.start(), verify=False).latent_dim
        except WavaeError as e:
            print(f"note: bias.K not checked against the bundle ({e})", file=sys.stderr)
    adc_hz = cfg.panel.adc_hz if cfg is not None and cfg.panel is not None else 200.0
    return load_mapping(path, latent or MAX_LATENT_DIM), adc_hz


def run_check(mapping, out: TextIO, seconds: float | None = None, interval: float = 0.2, adc_hz: float = 200.0,
              open_gpio: Callable | None = None, open_adc: Callable | None = None, clear: bool = False) -> int:
    """Read the panel and print its state every ``interval`` s; returns 1 if a part is missing."""
    from .actions import Actions
    from .controls import Controls
    from .panel.panel import Panel

    jump = dataclasses.replace(mapping, adc=dataclasses.replace(mapping.adc, takeover="jump"))
    controls = Controls(_latent_needed(mapping))
    panel = Panel(jump, Actions(controls), open_gpio, open_adc, adc_hz=adc_hz, retry_s=1.0)
    start = time.monotonic()
    next_print = start + min(interval, seconds if seconds is not None else interval)
    try:
        while True:
            panel.tick()
            now = time.monotonic()
            if now >= next_print:
                if clear:
                    out.write("\x1b[H\x1b[J")
                out.write(format_readings(panel.readings(), now - start))
                out.flush()
                next_print = now + interval
                if seconds is not None and now - start >= seconds:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        panel.stop()
    return 1 if panel.failures else 0


def _latent_needed(mapping) -> int:
    dims = [int(c.target[5:]) for p in mapping.pots for c in p.layers if c.target.startswith("bias.")]
    dims += [int(x.target[5:]) for x in [*mapping.encoders, *mapping.midi_cc] if x.target.startswith("bias.")]
    return max(dims, default=0) + 1


def format_readings(r: dict[str, Any], t: float) -> str:
    lines = [f"-- panel at {t:6.1f} s, layer {r['layer']} " + "-" * 40]
    for p in r["pots"]:
        raw = "   -" if p["raw"] is None else f"{p['raw']:4d}"
        value = "-" if p["value"] is None else f"{p['value']:.4g}"
        lines.append(f"pot     {p['label']:<10} ch{p['channel']}  raw {raw}  -> {p['target']} = {value}")
    for e in r["encoders"]:
        lines.append(f"encoder {e['label']:<10} count {e['count']:+5d}  invalid {e['invalid']}  ({e['target']})")
    for s in r["switches"]:
        state = "DOWN" if s["pressed"] else "up"
        lines.append(f"button  {s['label']:<10} {state:<4}  presses {s['presses']}  ({s['key']})")
    for part, why in r["failures"].items():
        lines.append(f"MISSING {part}: {why}")
    return "\n".join(lines) + "\n"
