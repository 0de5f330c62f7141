"""SIGHUP: read the device config again and apply it while the audio plays.

``systemctl reload wavae`` sends SIGHUP; the service thread
(``wavae.device.service``) sends ``RELOADING=1``, calls a ``ConfigReloader``,
logs its one-line answer and sends ``READY=1``.  The reloader reads the config
file again (with the same command-line overrides), reads the mapping file it
names again, and compares both with what runs (``plan_reload``).  Nothing of
it runs on the audio thread, and the audio never stops.

First everything is checked, and nothing running is touched:

- the config loads (bad TOML, an unknown key, a bad value: its
  ``DeviceConfigError``);
- a new start bundle (``[bundle] path``, or the first of ``paths``) is whole
  and servable at the running device settings (``BundleSwitcher.check``:
  manifest, checksums, graph contract, rate, period, channels);
- ``[controls] bias`` fits the latent of the bundle playing;
- the mapping file parses with the start-up loader, its ``bias.K`` checked
  against the largest latent of the new bundle list (``plan_inputs``).

Any failure there raises, and the service answers "refused: <why>; still
running with the previous config".  Then, in this order:

1. The inputs (``wavae.device.inputs.Inputs.apply``): the OSC server, the
   panel, the MIDI input and the preset folder whose ingredients changed
   (their section, or the mapping file's content) are stopped and started
   again on their own ordinary threads.  A new OSC port that cannot be bound
   leaves the old server listening and refuses the reload here, with nothing
   else changed.
2. ``[controls]``, when that section changed in the file, is applied through
   ``Actions`` (a new snapshot; the audio path only swaps a reference).  When
   it did not change, nothing is applied, so the knob positions of the evening
   are kept.  Likewise a changed ``presets.load`` loads that preset (one that
   cannot be loaded is said in the answer; the controls stay).
3. ``[service]`` ``log_level``, ``io_timeout_s`` and ``reopen_interval_s`` take
   effect at once (the audio loop reads them at each use).
4. ``[bundle] path`` / ``paths``: the new list replaces the switcher's (what
   ``bundle.next``, ``/wavae/bundle`` and MIDI program changes choose from).
   When the start bundle changed, the instrument switches to it through the
   live switch (``wavae.device.switch``: loaded on the loader thread,
   crossfaded in at a period boundary), exactly as ``/wavae/bundle`` does, and
   the reloader waits for the outcome (``switch_wait_s``, with ``pause``
   between looks: the service keeps feeding the watchdog meanwhile).  A
   bundle that fails to load leaves the one playing, and the ``[bundle]``
   section as it was (a reload after the fix tries again); the answer says
   why.  When only the list changed, the bundle playing keeps playing, so a
   switch made during the evening is kept, as knob positions are.

``[audio]``, ``[debug]``, ``service.realtime_priority`` and ``bundle.backend``
/ ``threads`` / ``crossfade_ms`` shape the running streams, threads and chain:
a change there is reported, with the command that applies it (``systemctl
restart wavae``), and the running values are kept.  ``[web]`` belongs to
``wavae web``, a process of its own.  Without a switcher or inputs (a
reloader built for a test), bundle and input changes are reported the same
way; a new bundle is then loaded and checked first, so the technician learns
now, not at the restart, that it is damaged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from .actions import Actions, Rejected
from .bundle import load_bundle
from .config import DeviceConfig
from .inputs import Inputs, plan_inputs
from .switch import BundleSwitcher, latent_dims

log = logging.getLogger("wavae.device.reload")

# [service] keys the running loop reads at each use
LIVE_SERVICE_KEYS = ("log_level", "io_timeout_s", "reopen_interval_s")
LIVE_BUNDLE_KEYS = ("path", "paths")  # through the switcher
RESTART_SECTIONS = ("audio", "debug")
INPUT_SECTIONS = ("panel", "osc", "midi", "presets")  # through Inputs
SWITCH_WAIT_S = 20.0  # how long a reload waits for a new start bundle to load and fade in


@dataclass(frozen=True)
class ReloadPlan:
    controls: bool  # [controls] changed: apply it
    service: tuple[str, ...]  # live [service] keys that changed
    bundle: tuple[str, ...]  # "bundle.path" / "bundle.paths" that changed: the list, maybe the start bundle
    inputs: tuple[str, ...]  # input sections that changed in the config file (the mapping's content aside)
    restart: tuple[str, ...]  # "section.key" that changed and need a restart

    @property
    def nothing(self) -> bool:
        return not (self.controls or self.service or self.bundle or self.inputs or self.restart)


def _changed(old, new, prefix: str) -> list[str]:
    return [f"{prefix}.{f.name}" for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def plan_reload(old: DeviceConfig, new: DeviceConfig) -> ReloadPlan:
    """What differs between the running config and the file, split by how it can be applied."""
    restart: list[str] = []
    for section in RESTART_SECTIONS:
        restart += _changed(getattr(old, section), getattr(new, section), section)
    bundle = _changed(old.bundle, new.bundle, "bundle")
    live_bundle = tuple(k for k in bundle if k.split(".", 1)[1] in LIVE_BUNDLE_KEYS)
    restart += [k for k in bundle if k not in live_bundle]
    service = _changed(old.service, new.service, "service")
    live = tuple(k.split(".", 1)[1] for k in service if k.split(".", 1)[1] in LIVE_SERVICE_KEYS)
    restart += [k for k in service if k.split(".", 1)[1] not in LIVE_SERVICE_KEYS]
    inputs = tuple(f"[{s}]" for s in INPUT_SECTIONS if getattr(old, s) != getattr(new, s))
    return ReloadPlan(controls=old.controls != new.controls, service=live, bundle=live_bundle, inputs=inputs,
                      restart=tuple(restart))


class ConfigReloader:
    """Called on the service thread at each SIGHUP; returns what it did, in one line (see the module docstring).

    ``load()`` reads and validates the config (the same way as at start);
    ``actions``: the instrument's one door to its controls (``[controls]``,
    ``presets.load``); ``apply_service(service_cfg)`` hands the new
    ``[service]`` to the audio loop; ``inputs`` and ``switcher``: the live
    instrument's inputs and bundle switcher (None: their changes wait for a
    restart); ``pause(s)``: how the reloader waits for a bundle switch.
    """

    def __init__(
        self,
        load: Callable[[], DeviceConfig],
        current: DeviceConfig,
        actions: Actions,
        apply_service: Callable[[Any], None],
        *,
        inputs: Inputs | None = None,
        switcher: BundleSwitcher | None = None,
        pause: Callable[[float], None] = time.sleep,
        switch_wait_s: float = SWITCH_WAIT_S,
    ):
        self.load, self.current = load, current
        self.actions, self.apply_service = actions, apply_service
        self.inputs, self.switcher = inputs, switcher
        self.pause, self.switch_wait_s = pause, switch_wait_s

    def __call__(self) -> str:
        old = self.current
        new = self.load()  # a DeviceConfigError here leaves everything as it was
        plan = plan_reload(old, new)
        restart = list(plan.restart)
        # -- check everything; nothing running is touched until all of it passed ------------------------
        names = switch_to = None
        if plan.bundle and self.switcher is None:
            restart += plan.bundle
            start = new.bundle.start()
            if start != old.bundle.start() and start is not None:
                load_bundle(start)  # a damaged bundle is refused now, with its own message
        elif plan.bundle:
            names = new.bundle.names()
            start = new.bundle.start()
            if start is not None and start != old.bundle.start():
                switch_to = start.name
                self.switcher.check(start.name, start)  # Rejected: why this bundle cannot be played
        controls = new.controls.for_latent(self.actions.controls.latent_dim, new.source) if plan.controls else None
        if self.inputs is not None:
            inputs_plan = plan_inputs(new, self._mapping_latent(names))  # a bad mapping file raises here
        else:
            restart += plan.inputs
        # -- apply: the inputs first (the one step that may still refuse, leaving them as they were) -------
        done: list[str] = []
        running = old
        if self.inputs is not None:
            restarted = self.inputs.apply(inputs_plan)
            running = dataclasses.replace(running, **{s: getattr(new, s) for s in INPUT_SECTIONS})
            if restarted:
                done.append("restarted: " + ", ".join(restarted))
        if controls is not None:
            self.actions.update(controls)
            running = dataclasses.replace(running, controls=new.controls)
            done.append("[controls] applied")
        load = new.presets.load if new.presets is not None else None
        if load and self.inputs is not None and load != (old.presets.load if old.presets is not None else None):
            try:
                self.actions.load_preset(load)
                done.append(f"preset {load} loaded")
            except Rejected as e:
                done.append(f"presets.load: {e}; the controls are kept")
        if plan.service:
            kept = {k: getattr(running.service, k) for k in ("realtime_priority",)}
            service = dataclasses.replace(new.service, **kept)
            self.apply_service(service)
            logging.getLogger("wavae").setLevel(service.log_level.upper())
            running = dataclasses.replace(running, service=service)
            done.append("service." + ", service.".join(plan.service) + " applied")
        if names is not None:
            running = self._apply_bundles(running, new, names, switch_to, done)
        self.current = dataclasses.replace(running, source=new.source)
        if restart:
            done.append(
                f"{', '.join(restart)} changed: kept the running values; `systemctl restart wavae` applies them"
            )
        return "; ".join(done) if done else "no change"

    def _mapping_latent(self, names) -> int:
        """The latent the mapping's ``bias.K`` are checked against: the largest of the bundle playing
        and the bundles of the (new) list, as at start-up."""
        dims = [self.actions.controls.latent_dim]
        if self.switcher is not None:
            dims += latent_dims(names if names is not None else self.switcher.paths).values()
        return max(dims)

    def _apply_bundles(self, running: DeviceConfig, new: DeviceConfig, names, switch_to: str | None,
                       done: list[str]) -> DeviceConfig:
        """The new bundle list, and the switch to a new start bundle (waited for)."""
        sw = self.switcher
        before = dict(sw.paths)
        sw.use_paths(names)
        bundle = dataclasses.replace(running.bundle, path=new.bundle.path, paths=new.bundle.paths)
        if switch_to is None:
            gone = "" if sw.playing in names else " (no longer in the list, until the next switch)"
            done.append(f"[bundle] applied: {', '.join(names)}; {sw.playing} plays on{gone}")
            return dataclasses.replace(running, bundle=bundle)
        try:
            state, why = sw.switch_and_wait(switch_to, self.switch_wait_s, self.pause)
        except Rejected as e:  # it changed on disk since the check a moment ago
            state, why = "failed", str(e)
        if state == "playing":
            done.append(f"bundle {switch_to} playing")
        elif state == "loading":
            done.append(why)
        else:
            sw.use_paths(before)
            log.error("reload: %s", why)
            done.append(f"{why}; [bundle] kept as it was")
            return running
        return dataclasses.replace(running, bundle=bundle)
