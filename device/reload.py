"""SIGHUP: read the device config again and apply what can change while the audio plays.

``systemctl reload wavae`` sends SIGHUP; the service thread
(``wavae.device.service``) calls a ``ConfigReloader``, which reads the config
file again (with the same command-line overrides) and compares it with the
running one (``plan_reload``):

- ``[controls]``, when that section changed in the file, is applied through the
  controls' writers' lock (a new snapshot; the audio path only swaps a
  reference).  When it did not change, nothing is applied, so the knob
  positions of the evening are kept.
- ``[service]`` ``log_level``, ``io_timeout_s`` and ``reopen_interval_s`` take
  effect at once (the audio loop reads them at each use).
- ``[bundle]``, ``[audio]``, ``[debug]`` and ``service.realtime_priority`` shape
  the running streams, model and threads: a change there is reported, with the
  command that applies it (``systemctl restart wavae``); a new bundle is loaded
  and checked first, so the technician learns now, not at the restart, that it
  is damaged.  The running ones are kept.

A config that does not load (bad TOML, unknown key, bad value) raises its
``DeviceConfigError``: the caller keeps the running config and reports why.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable

from .bundle import load_bundle
from .config import DeviceConfig

log = logging.getLogger("wavae.device.reload")

# [service] keys the running loop reads at each use
LIVE_SERVICE_KEYS = ("log_level", "io_timeout_s", "reopen_interval_s")
RESTART_SECTIONS = ("bundle", "audio", "debug")


@dataclass(frozen=True)
class ReloadPlan:
    controls: bool  # [controls] changed: apply it
    service: tuple[str, ...]  # live [service] keys that changed
    restart: tuple[str, ...]  # "section.key" that changed and need a restart

    @property
    def nothing(self) -> bool:
        return not (self.controls or self.service or self.restart)


def _changed(old, new, prefix: str) -> list[str]:
    return [f"{prefix}.{f.name}" for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def plan_reload(old: DeviceConfig, new: DeviceConfig) -> ReloadPlan:
    """What differs between the running config and the file, split by how it can be applied."""
    restart: list[str] = []
    for section in RESTART_SECTIONS:
        restart += _changed(getattr(old, section), getattr(new, section), section)
    service = _changed(old.service, new.service, "service")
    live = tuple(k.split(".", 1)[1] for k in service if k.split(".", 1)[1] in LIVE_SERVICE_KEYS)
    restart += [k for k in service if k.split(".", 1)[1] not in LIVE_SERVICE_KEYS]
    return ReloadPlan(controls=old.controls != new.controls, service=live, restart=tuple(restart))


class ConfigReloader:
    """Called on the service thread at each SIGHUP; returns what it did, in one line.

    ``load()`` reads and validates the config (the same way as at start);
    ``apply_controls(cfg)`` writes ``cfg``'s ``[controls]`` to the live controls;
    ``apply_service(service_cfg)`` hands the new ``[service]`` to the audio loop.
    """

    def __init__(
        self,
        load: Callable[[], DeviceConfig],
        current: DeviceConfig,
        apply_controls: Callable[[DeviceConfig], None],
        apply_service: Callable[[object], None],
    ):
        self.load, self.current = load, current
        self.apply_controls, self.apply_service = apply_controls, apply_service

    def __call__(self) -> str:
        new = self.load()  # a DeviceConfigError here leaves everything as it was
        plan = plan_reload(self.current, new)
        start = new.bundle.start()
        if plan.restart and start != self.current.bundle.start() and start is not None:
            load_bundle(start)  # a damaged bundle is refused now, with its own message
        done: list[str] = []
        running = self.current
        if plan.controls:
            self.apply_controls(new)
            running = dataclasses.replace(running, controls=new.controls)
            done.append("[controls] applied")
        if plan.service:
            kept = {k: getattr(running.service, k) for k in ("realtime_priority",)}
            service = dataclasses.replace(new.service, **kept)
            self.apply_service(service)
            logging.getLogger("wavae").setLevel(service.log_level.upper())
            running = dataclasses.replace(running, service=service)
            done.append("service." + ", service.".join(plan.service) + " applied")
        self.current = dataclasses.replace(running, source=new.source)
        if plan.restart:
            done.append(
                f"{', '.join(plan.restart)} changed: kept the running values; `systemctl restart wavae` applies them"
            )
        return "; ".join(done) if done else "no change"
