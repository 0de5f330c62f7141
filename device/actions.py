"""What a panel, OSC or MIDI may ask of the instrument: one door, shared by all three.

``Actions`` sets and toggles controls, loads, saves and steps presets, selects
bundles and answers status.  Every input thread calls it; it writes only
``Controls`` (whose lock serialises writers; the audio path reads snapshots)
and the preset files, and its own small lock keeps "next preset" from two
sources in order.  Nothing here runs on the audio path.

A request that cannot be done (an unknown control, a value out of range, no
such preset, a bundle switch this build cannot make) raises ``Rejected`` to a
caller that wants to know (the panel check, tests); the network and MIDI
inputs call ``refuse``, which counts it by reason and logs it, at most once a
second per reason so a flood of bad messages cannot flood the log.

Bundles: ``bundles`` names the bundles of the instrument and ``switch_bundle``
is the live loop's switcher (``wavae.device.switch``): it checks a request at
once (an unknown, missing, damaged or unservable bundle raises ``Rejected``)
and loads the bundle in the background.  ``bundle`` is the bundle selected
last, which ``bundle.next`` steps from; when a background load fails, the
switcher calls ``switch_failed``, which puts ``bundle`` back to the one still
playing and counts the failure.  The live loop always has a switcher (a
reload may bring bundles); without one (file mode, tests) a bundle request is
refused and says so.  A reload replaces the list (``set_bundles``) and the
preset folder (``use_presets``); the ``Actions`` itself lives as long as the
instrument.

A bundle with another latent size comes with its own ``Controls``:
``adopt_controls`` carries every value over to them (``Controls.adopt``) and
points the inputs at them, under the same lock as every write made through
``set``/``update``/``toggle``, so no write falls between the copy and the swap.
Inputs therefore read ``actions.controls`` at each use, never keep it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from wavae.errors import WavaeError

from .controls import ControlError, Controls
from .presets import PresetError, PresetStore, control_values

log = logging.getLogger("wavae.device.actions")

LOG_EVERY_S = 1.0


class Rejected(WavaeError, ValueError):
    """A command from the panel, OSC or MIDI that was refused; the message says why."""


StatusProvider = Callable[[], dict[str, Any]]


class Actions:
    def __init__(self, controls: Controls, presets: PresetStore | None = None, bundle: str | None = None,
                 bundles: tuple[str, ...] = (), switch_bundle: Callable[[str], None] | None = None,
                 status: StatusProvider | None = None):
        self.controls, self.presets = controls, presets
        self.bundle, self.bundles, self.switch_bundle = bundle, tuple(bundles), switch_bundle
        self.status_provider = status
        self.preset: str | None = None  # the preset last loaded or saved
        self.started = time.monotonic()
        self.rejected: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (last log time, count then)

    # controls ------------------------------------------------------------------
    def set(self, name: str, value: Any) -> Any:
        """Set one control; returns the value applied. Raises ``Rejected``."""
        with self._lock:
            try:
                v = self.controls.check(name, value)
                self.controls.set(name, v)
            except ControlError as e:
                raise Rejected(str(e)) from None
        return v

    def update(self, values: dict[str, Any]) -> None:
        """Set several controls in one snapshot. Raises ``Rejected``."""
        with self._lock:
            try:
                self.controls.update(values)
            except ControlError as e:
                raise Rejected(str(e)) from None

    def toggle(self, name: str) -> Any:
        """Flip an on/off control, or ``loudness_source`` between input and manual."""
        with self._lock:
            current = self.get(name)
            if name == "loudness_source":
                return self.set(name, "manual" if current == "input" else "input")
            if not isinstance(current, bool):
                raise Rejected(f"control {name!r} is not on/off; it cannot be toggled")
            return self.set(name, not current)

    def adopt_controls(self, controls: Controls) -> tuple[float, ...]:
        """Carry every value over to ``controls`` (a new bundle's) and write to them from now on.

        Returns the non-zero bias values dropped (beyond the new latent size)."""
        with self._lock:
            dropped = controls.adopt(self.controls.snapshot)
            self.controls = controls
        return dropped

    def set_bundles(self, names: tuple[str, ...]) -> None:
        """The instrument's bundles from now on (a reload of ``[bundle]``; ``BundleSwitcher.use_paths``)."""
        with self._lock:
            self.bundles = tuple(names)

    def use_presets(self, presets: PresetStore | None) -> None:
        """Save and load presets in ``presets`` from now on (a reload of ``[presets]``)."""
        with self._lock:
            if presets is None or self.presets is None or presets.dir != self.presets.dir:
                self.preset = None  # the preset last loaded is not one of this folder's
            self.presets = presets

    def get(self, name: str) -> Any:
        try:
            return self.controls.get(name)
        except ControlError as e:
            raise Rejected(str(e)) from None

    # presets -------------------------------------------------------------------
    def _store(self) -> PresetStore:
        if self.presets is None:
            raise Rejected("presets are off: add a [presets] section with dir = \"/var/lib/wavae/presets\"")
        return self.presets

    def preset_names(self) -> list[str]:
        return self.presets.names() if self.presets is not None else []

    def load_preset(self, name: str) -> str:
        with self._lock:
            try:
                preset = self._store().load(name, self.controls)
            except PresetError as e:
                raise Rejected(str(e)) from None
            self.controls.update(preset.values)  # one snapshot; the engine ramps to it
            self.preset = name
        if preset.fitted:
            log.warning("preset %s was made for another latent size: its bias list was cut or padded", name)
        if preset.bundle and self.bundle and preset.bundle != self.bundle:
            if self.switch_bundle is not None:
                try:
                    self.select_bundle(preset.bundle)
                except Rejected as e:  # the controls are loaded; the bundle stays
                    log.warning("preset %s was saved with bundle %s: %s", name, preset.bundle, e)
            else:
                log.warning("preset %s was saved with bundle %s; %s keeps playing (this instrument has no "
                            "bundles to switch to: list them in [bundle] paths)", name, preset.bundle, self.bundle)
        log.info("preset %s loaded", name)
        return name

    def save_preset(self, name: str | None = None) -> str:
        """Save under ``name``; with none, over the current preset, or as the next free ``pNN``."""
        with self._lock:
            store = self._store()
            if name is None:
                name = self.preset
            if name is None:
                taken = set(store.names())
                name = next(f"p{k:02d}" for k in range(1, 10000) if f"p{k:02d}" not in taken)
            try:
                path = store.save(name, self.controls, self.bundle)
            except PresetError as e:
                raise Rejected(str(e)) from None
            self.preset = name
        log.info("preset %s saved to %s", name, path)
        return name

    def step_preset(self, delta: int) -> str:
        with self._lock:
            names = self.preset_names()
            if not names:
                raise Rejected(f"no presets saved yet in {self._store().dir}")
            if self.preset in names:
                i = (names.index(self.preset) + delta) % len(names)
            else:
                i = 0 if delta > 0 else len(names) - 1
            return self.load_preset(names[i])

    def preset_by_number(self, number: int) -> str:
        names = self.preset_names()
        if not 0 <= number < len(names):
            raise Rejected(f"no preset number {number}: {len(names)} preset(s) saved")
        return self.load_preset(names[number])

    # bundles -------------------------------------------------------------------
    def select_bundle(self, name: str) -> str:
        """Start switching to bundle ``name`` (loaded in the background); ``Rejected`` when it cannot be."""
        if self.switch_bundle is None:
            raise Rejected(f"cannot switch to bundle {name!r}: this instrument has no bundles to switch to "
                           f"(list them in [bundle] paths; file mode never switches); "
                           f"{self.bundle or 'the current bundle'} keeps playing")
        if self.bundles and name not in self.bundles:
            raise Rejected(f"unknown bundle {name!r}; this instrument has {', '.join(self.bundles)} "
                           f"(list its bundles in [bundle] paths)")
        with self._lock:
            self.switch_bundle(name)
            self.bundle = name
        return name

    def switch_failed(self, name: str, playing: str, why: str) -> None:
        """The switcher's report of a background load that failed: ``playing`` keeps playing."""
        with self._lock:
            if self.bundle == name:
                self.bundle = playing
        self.refuse("bundle", "bundle.failed", f"bundle {name} did not load: {why}; {playing} keeps playing")

    def step_bundle(self, delta: int) -> str:
        if not self.bundles:
            return self.select_bundle(self.bundle or "")
        i = self.bundles.index(self.bundle) if self.bundle in self.bundles else -1
        return self.select_bundle(self.bundles[(i + delta) % len(self.bundles)])

    def bundle_by_number(self, number: int) -> str:
        if not 0 <= number < len(self.bundles):
            return self.select_bundle(f"#{number}")
        return self.select_bundle(self.bundles[number])

    # named actions (mapping files) -----------------------------------------------
    def do(self, action: str) -> Any:
        """A toggle name or one of preset.next/prev/save, bundle.next/prev."""
        if action == "preset.next":
            return self.step_preset(1)
        if action == "preset.prev":
            return self.step_preset(-1)
        if action == "preset.save":
            return self.save_preset()
        if action == "bundle.next":
            return self.step_bundle(1)
        if action == "bundle.prev":
            return self.step_bundle(-1)
        return self.toggle(action)

    # status and refusals -----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "controls": control_values(self.controls),
            "bundle": self.bundle,
            "preset": self.preset,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "rejected": dict(self.rejected),
        }
        out.update(self.provider_status())
        return out

    def provider_status(self) -> dict[str, Any]:
        """What the instrument's status provider reports ({} without one); never raises."""
        if self.status_provider is None:
            return {}
        try:
            return dict(self.status_provider())
        except Exception as e:  # a status provider must never take an input thread down
            return {"error": f"status provider failed: {e!r}"}

    def refuse(self, source: str, reason: str, detail: str) -> None:
        """Count a refused request by ``reason`` and log it (at most once a second per reason)."""
        self.rejected[reason] += 1
        now = time.monotonic()
        last = self._logged.get(reason)
        if last is None or now - last[0] >= LOG_EVERY_S:
            n = self.rejected[reason]
            more = f" ({n - last[1] - 1} more since the last report)" if last is not None and n - last[1] > 1 else ""
            log.warning("%s: refused (%s): %s%s", source, reason, detail, more)
            self._logged[reason] = (now, n)
