"""``wavae web``: the instrument's page, a foreground process of its own (no torch).

    wavae web [--config device.toml] [--host 127.0.0.1] [--port 8080]
              [--bundle B] [--state-dir DIR] [--osc-port N]

Settings come from the device config's ``[web]``, ``[osc]``, ``[presets]``
and ``[bundle]`` sections; flags override them.  It binds to loopback unless
the config has ``[web] lan = true`` and a ``token``: a LAN address given with
``--host`` is refused otherwise.  It runs at ordinary priority until SIGINT or
SIGTERM; renders run in niced worker processes (``wavae.device.web.worker``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .config import DeviceConfig, check_web_binding, load_config
from .web.app import WebSettings, serve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="DEVICE.toml", help="device config ([web], [osc], [presets], [bundle])")
    p.add_argument("--host", default=None, help="address to serve on (default [web] host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default [web] port, 8080; 0 picks a free one)")
    p.add_argument("--bundle", default=None, help="the bundle the playground renders with (default [bundle] path)")
    p.add_argument("--state-dir", default=None,
                   help="uploads and renders (default [web] state_dir, $STATE_DIRECTORY, ~/.local/state/wavae)")
    p.add_argument("--osc-port", type=int, default=None, help="the instrument's OSC port (default [osc] port, 9000)")


def default_state_dir() -> Path:
    """systemd's ``StateDirectory=`` when run as a service, else the user's state folder."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "wavae"


def settings_from(args: argparse.Namespace) -> WebSettings:
    cfg = load_config(args.config) if args.config else DeviceConfig()
    web = cfg.web
    host = args.host or web.host
    check_web_binding(host, web, cfg.source if args.config else "--host")
    osc_host = cfg.osc.host if cfg.osc is not None else "127.0.0.1"
    if osc_host in ("0.0.0.0", "::"):  # the instrument listens everywhere: reach it here
        osc_host = "127.0.0.1" if osc_host == "0.0.0.0" else "::1"
    return WebSettings(
        host=host,
        port=web.port if args.port is None else args.port,
        state_dir=Path(args.state_dir) if args.state_dir else (web.state_dir or default_state_dir()),
        bundle=Path(args.bundle) if args.bundle else cfg.bundle.path,
        osc_host=osc_host,
        osc_port=args.osc_port or (cfg.osc.port if cfg.osc is not None else 9000),
        presets_dir=cfg.presets.dir if cfg.presets is not None else None,
        token=web.token,
        max_upload=int(web.upload_mb * 2**20),
    )


def main(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return asyncio.run(_run(settings))


async def _run(settings: WebSettings) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)

    def ready(app) -> None:
        print(f"wavae web: serving http://{settings.host}:{app.port}/ (state {settings.state_dir})", flush=True)

    try:
        await serve(settings, ready)
    except asyncio.CancelledError:
        print("wavae web: stopped", file=sys.stderr)
    return 0
