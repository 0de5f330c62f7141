"""The instrument's control inputs, assembled from the device config: presets, panel, OSC, MIDI.

``start_inputs(cfg, controls, bundle_name, status)`` is the one call the live
instrument makes (and, later, the service and the web page): it checks
everything that can be wrong in the files first (the mapping file against the
bundle's latent size, the preset folder, the OSC port), so a mistake is a
clear error at start-up before any thread runs, then starts each input that
its section turns on.  ``Inputs.stop()`` stops them all.

Each input runs on its own ordinary-priority daemon thread and only writes
``Controls`` through one shared ``Actions``; the audio path keeps reading
snapshots.  Hardware that is missing at start (no GPIO chip, no SPI bus, no
MIDI port) is not an error: it is logged once and retried while the
instrument plays.

``live_status`` builds the status provider from the live loop's objects: what
``/wavae/status`` reports and what the LED follows.  It must stay cheap: the
panel polls it ten times a second.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from .actions import Actions, Rejected, StatusProvider
from .config import DeviceConfig
from .controls import Controls
from .presets import PresetStore

log = logging.getLogger("wavae.device.inputs")


@dataclass
class Inputs:
    actions: Actions
    panel: Any = None  # wavae.device.panel.panel.Panel
    osc: Any = None  # wavae.device.osc.OscServer
    midi: Any = None  # wavae.device.midi.MidiInput

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
    presets = None
    if cfg.presets is not None:
        presets = PresetStore(cfg.presets.dir)
        presets.ensure_dir()
        good = presets.scan(controls)
        log.info("presets: %d in %s", len(good), presets.dir)
    actions = Actions(controls, presets, bundle=bundle_name, bundles=bundles, switch_bundle=switch_bundle,
                      status=status)
    if cfg.presets is not None and cfg.presets.load:
        try:
            actions.load_preset(cfg.presets.load)
        except Rejected as e:
            log.error("presets.load: %s; starting from [controls]", e)

    mapping = None
    if cfg.panel is not None:
        from .panel.mapping import load_mapping

        mapping = load_mapping(cfg.panel.mapping, mapping_latent or controls.latent_dim)
    inputs = Inputs(actions)
    try:
        if cfg.osc is not None:
            from .osc import OscServer

            inputs.osc = OscServer(actions, cfg.osc.host, cfg.osc.port).start()
        if mapping is not None and (mapping.uses_gpio() or mapping.uses_adc()):
            from .panel.panel import Panel

            inputs.panel = Panel(mapping, actions, open_gpio, open_adc, cfg.panel.adc_hz, cfg.panel.retry_s).start()
        if cfg.midi is not None:
            from .midi import MidiInput

            m = cfg.midi
            ccs = mapping.midi_cc if mapping is not None else ()
            selects = mapping.program_selects if mapping is not None else "preset"
            retry = cfg.panel.retry_s if cfg.panel is not None else 2.0
            inputs.midi = MidiInput(actions, ccs, selects, m.port, m.api, m.virtual, retry).start()
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
