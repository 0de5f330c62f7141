"""``wavae status``: what the running instrument is doing, for the technician (no torch, no numpy).

Reads the status file the service rewrites every second (``wavae.device.status``)::

    wavae status                 # /run/wavae/status.json, or $RUNTIME_DIRECTORY/status.json
    wavae status --json          # the file itself, for scripts
    wavae status --file PATH

A missing, orphaned or stale file is an error that says where to look next
(exit 2, as every WavaeError), so ``wavae status && echo ok`` is a health check.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .status import STALE_AFTER_S, default_status_path, format_status, read_status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", metavar="PATH", default=None,
                   help="status file (default: $RUNTIME_DIRECTORY/status.json, else /run/wavae/status.json)")
    p.add_argument("--json", action="store_true", help="print the status file as JSON")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_S, metavar="S",
                   help=f"a file older than this is an error: the instrument is hung or stopped (default {STALE_AFTER_S:g})")


def main(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else default_status_path()
    status = read_status(path, stale_after_s=args.stale_after)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0
