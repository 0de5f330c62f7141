"""The instrument's control inputs, assembled from the device config: presets, panel, OSC, MIDI.

``start_inputs(cfg, controls, bundle_name, status)`` is the one call the live
instrument makes (and, later, the service and the web page): it checks
everything that can be wrong in the files first (the mapping file against the
bundle's latent size, the preset folder), so a mistake is a clear error at
start-up before any thread runs, then starts each input that its section
turns on.  ``Inputs.stop()`` stops them all.

``Inputs`` owns the running inputs and restarts them: ``plan_inputs(cfg,
latent)`` reads what they are built from (the ``[osc]``, ``[panel]``,
``[midi]`` and ``[presets]`` sections and the mapping file, parsed by the
same loader as at start-up) into an ``InputsPlan``, and ``Inputs.apply(plan)``
stops and starts again only the parts whose ingredients changed, start-up
being the change from nothing.  A reload (``wavae.device.reload``) does the
same, so start-up and SIGHUP build the inputs one way:

- the OSC server restarts when ``[osc]`` changed;
- the panel when ``[panel]`` or the panel part of the mapping changed (the
  mapping is compared as parsed, so a file whose content changed under the
  same name counts, and a comment does not);
- the MIDI input when ``[midi]``, the mapping's ``[[midi_cc]]`` /
  ``[midi_program]`` or ``panel.retry_s`` changed;
- the preset folder when ``presets.dir`` changed (``presets.load`` is applied
  by the caller: at start-up here, on a reload by the reloader).

What can fail is done before anything running is touched (the mapping is
parsed by ``plan_inputs``, the preset folder made and scanned, the new parts
built), except binding the new OSC port: when that fails the old server is
started again on its port and the error raised, so a refused change leaves
the inputs as they were.

Each input runs on its own ordinary-priority daemon thread and only writes
``Controls`` through one shared ``Actions`` (which outlives every restart: the
bundle switcher keeps it); the audio path keeps reading snapshots.  Hardware
that is missing at start (no GPIO chip, no SPI bus, no MIDI port) is not an
error: it is logged once and retried while the instrument plays.
``open_gpio`` / ``open_adc`` replace the panel's hardware (tests, the soak):
each call must give a new device, as the real ones do, since a restarted or
retrying panel opens it again.

``live_status`` builds the status provider from the live loop's objects: what
``/wavae/status`` reports and what the LED follows.  It must stay cheap: the
panel polls it ten times a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from .actions import Actions, Rejected, StatusProvider
from .config import DeviceConfig, MidiConfig, OscConfig, PanelConfig, PresetsConfig
from .controls import Controls
from .panel.mapping import PanelMapping, load_mapping
from .presets import PresetStore

log = logging.getLogger("wavae.device.inputs")

DEFAULT_RETRY_S = 2.0  # a missing MIDI port is looked for this often without a [panel] section
PARTS = ("presets", "osc", "panel", "midi")  # the parts, in the order a reload names them


@dataclass(frozen=True)
class InputsPlan:
    """What the inputs are built from (``plan_inputs``); equal ingredients build equal parts."""

    osc: OscConfig | None = None
    panel: PanelConfig | None = None
    mapping: PanelMapping | None = None  # the mapping file as parsed
    midi: MidiConfig | None = None
    presets: PresetsConfig | None = None

    def ingredients(self, part: str) -> Any:
        """What ``part`` (one of ``PARTS``) is built from; None: the part is off."""
        m = self.mapping
        if part == "osc":
            return self.osc
        if part == "presets":
            return self.presets.dir if self.presets is not None else None
        if part == "panel":
            if m is None or not (m.uses_gpio() or m.uses_adc()):
                return None
            return self.panel, dataclasses.replace(m, midi_cc=(), program_selects="preset")
        if self.midi is None:
            return None
        retry = self.panel.retry_s if self.panel is not None else DEFAULT_RETRY_S
        return self.midi, (m.midi_cc, m.program_selects) if m is not None else None, retry


def plan_inputs(cfg: DeviceConfig, latent_dim: int) -> InputsPlan:
    """The inputs ``cfg`` turns on, with its mapping file read and checked against ``latent_dim``
    (``PanelMappingError`` names the file and the key)."""
    mapping = load_mapping(cfg.panel.mapping, latent_dim) if cfg.panel is not None else None
    return InputsPlan(cfg.osc, cfg.panel, mapping, cfg.midi, cfg.presets)


def open_presets(presets: PresetsConfig | None, controls: Controls) -> PresetStore | None:
    """The preset folder of ``[presets]``, made if missing and scanned (corrupt files moved aside)."""
    if presets is None:
        return None
    store = PresetStore(presets.dir)
    store.ensure_dir()
    good = store.scan(controls)
    log.info("presets: %d in %s", len(good), store.dir)
    return store


class Inputs:
    """The running inputs and their one owner (see the module docstring).

    ``presets``: the ``[presets]`` whose folder ``actions`` already uses (start-up opens it first,
    to load ``presets.load`` before any input runs)."""

    def __init__(self, actions: Actions, open_gpio: Callable | None = None, open_adc: Callable | None = None,
                 presets: PresetsConfig | None = None):
        self.actions, self.open_gpio, self.open_adc = actions, open_gpio, open_adc
        self.plan = InputsPlan(presets=presets)  # what runs now
        self.panel: Any = None  # wavae.device.panel.panel.Panel
        self.osc: Any = None  # wavae.device.osc.OscServer
        self.midi: Any = None  # wavae.device.midi.MidiInput

    def changes(self, plan: InputsPlan) -> tuple[str, ...]:
        """The parts ``apply(plan)`` would start, stop or restart."""
        return tuple(p for p in PARTS if plan.ingredients(p) != self.plan.ingredients(p))

    def apply(self, plan: InputsPlan) -> tuple[str, ...]:
        """Run what ``plan`` says: the parts whose ingredients changed are stopped and started again
        with the new ones; returns their names.  A ``WavaeError`` leaves everything as it was."""
        changed = self.changes(plan)
        # build everything first: a preset folder that cannot be made, python-osc missing, raise here
        new = {part: self._build(part, plan) for part in changed}
        if "osc" in changed:
            self._restart_osc(new["osc"])
        for part in ("panel", "midi"):
            if part in changed:
                old = getattr(self, part)
                if old is not None:
                    old.stop()
                if new[part] is not None:
                    new[part].start()
                setattr(self, part, new[part])
        if "presets" in changed:
            self.actions.use_presets(new["presets"])
        self.plan = plan
        return changed

    def _build(self, part: str, plan: InputsPlan) -> Any:
        if plan.ingredients(part) is None:
            return None
        if part == "presets":
            return open_presets(plan.presets, self.actions.controls)
        if part == "osc":
            from .osc import OscServer

            return OscServer(self.actions, plan.osc.host, plan.osc.port)
        if part == "panel":
            from .panel.panel import Panel

            return Panel(plan.mapping, self.actions, self.open_gpio, self.open_adc, plan.panel.adc_hz,
                         plan.panel.retry_s)
        from .midi import MidiInput

        m, retry = plan.midi, plan.ingredients("midi")[2]
        ccs = plan.mapping.midi_cc if plan.mapping is not None else ()
        selects = plan.mapping.program_selects if plan.mapping is not None else "preset"
        return MidiInput(self.actions, ccs, selects, m.port, m.api, m.virtual, retry)

    def _restart_osc(self, new: Any) -> None:
        """Stop the old server, start ``new``; when ``new`` cannot bind, the old one listens again."""
        from .osc import OscError

        old = self.osc
        if old is not None:
            old.stop()
        try:
            if new is not None:
                new.start()
        except OscError:
            if old is not None:
                try:
                    old.start()
                except OscError as e:  # its port was taken in between: say so, never leave it half-open
                    self.osc = None
                    log.error("OSC off: %s", e)
            raise
        self.osc = new

    def stop(self) -> None:
        for part in (self.midi, self.osc, self.panel):
            if part is not None:
                part.stop()


def start_inputs(
    cfg: DeviceConfig,
    controls: Controls,
    bundle_name: str | None = None,
    status: StatusProvider | None = None,
    open_gpio: Callable | None = None,
    open_adc: Callable | None = None,
    bundles: tuple[str, ...] = (),
    switch_bundle: Callable[[str], None] | None = None,
    mapping_latent: int | None = None,
) -> Inputs:
    """Start the inputs ``cfg`` turns on (``open_gpio`` / ``open_adc`` replace the hardware in tests).

    ``bundles`` and ``switch_bundle``: the instrument's bundles and its switcher
    (``wavae.device.switch``), for ``Actions``; ``mapping_latent``: the latent
    size the mapping's ``bias.K`` are checked against (the largest of the
    bundles; default: ``controls``').
    """
    plan = plan_inputs(cfg, mapping_latent or controls.latent_dim)
    actions = Actions(controls, open_presets(cfg.presets, controls), bundle=bundle_name, bundles=bundles,
                      switch_bundle=switch_bundle, status=status)
    if cfg.presets is not None and cfg.presets.load:
        try:
            actions.load_preset(cfg.presets.load)
        except Rejected as e:
            log.error("presets.load: %s; starting from [controls]", e)
    inputs = Inputs(actions, open_gpio, open_adc, presets=cfg.presets)
    try:
        inputs.apply(plan)
    except BaseException:
        inputs.stop()
        raise
    return inputs


def live_status(duplex: Any, processor: Any, engine: Callable[[], Any], latency: dict[str, Any],
                extra: StatusProvider | None = None) -> StatusProvider:
    """The live loop's status: xruns, late periods, latency, the load (p50 compute / block time) of
    ``engine()``, the engine playing now, and what ``extra`` adds (the bundle switcher's state)."""
    cache: dict[str, Any] = {"t": 0.0, "load": None}

    def status() -> dict[str, Any]:
        st = duplex.stats
        now = time.monotonic()
        if now - cache["t"] >= 1.0:  # the percentile over 4096 blocks: once a second at most
            cache["t"] = now
            cache["load"] = engine().timing().get("rtf_p50")
        out = {
            "state": "playing",
            "xruns": st.xruns,
            "xruns_unrecovered": st.xruns_unrecovered,
            "late_periods": processor.late_periods,
            "device_lost": st.device_lost,
            "latency_ms": latency.get("total_ms"),
            "load": cache["load"],
            "cpu_load_1min": os.getloadavg()[0],
        }
        if extra is not None:
            out.update(extra())
        return out

    return status
