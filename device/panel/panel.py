"""The panel: pots, encoders, buttons and the status LED, on their own ordinary thread.

``Panel.tick`` does one round: read every pot once ``1 / adc_hz`` has passed
(EMA, deadband, soft takeover), wait for GPIO edges until the next ADC
reading is due (so an edge is handled as soon as it arrives, and the thread
sleeps in the kernel between readings), decode them, fire long presses, and
drive the LED.  ``Panel.start`` runs ticks on a daemon thread at ordinary
priority; it never touches the audio path: it only writes ``Controls``
through ``Actions`` (pots that moved in one round go in one snapshot).

Hardware that is missing or fails (no gpiochip, a line taken by another
program, a dead SPI bus) is logged once, closed, and retried every
``retry_s``; the instrument keeps playing meanwhile, and the log says when the
part comes back.  Parts fail independently: pots keep working with the GPIO
chip gone, and the other way round.

The shift action is momentary: while its button is held, pots with a shift
layer drive their second target.  Each switch of layer releases the
takeover of the layer switched to, so a pot never jumps a control it has not
yet caught.  A button with only ``on_press`` acts when pressed; one with an
``on_long_press`` acts on release (short) or once held for the long-press time.

LED (``[led]`` in the mapping): steady on while the instrument plays; blinking
at 8 Hz for two seconds after each xrun, and at 2 Hz while the status reports
an error; off when stopped.  It follows the ``Actions`` status provider
(``state``, ``xruns``, ``error``), polled ten times a second.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..actions import Actions, Rejected
from ..realtime import ordinary_priority
from .adc import Mcp3008, SpiBus, open_spidev
from .encoders import ButtonDecoder, QuadratureDecoder
from .gpio import GpioLines, GpiodLines, Line, PanelHardwareError
from .mapping import Curve, EncoderSpec, PanelMapping, PotSpec
from .pots import PotFilter, Takeover

log = logging.getLogger("wavae.device.panel")

IDLE_WAIT_S = 0.05  # longest wait for edges: long presses, the LED and stop() are served at least this often
XRUN_BLINK_S = 2.0
STATUS_POLL_NS = 100_000_000  # the LED asks the status provider ten times a second


def default_gpio(mapping: PanelMapping) -> Callable[[], GpioLines]:
    def open_lines() -> GpioLines:
        g = mapping.gpio
        outputs = [mapping.led.line] if mapping.led else []
        return GpiodLines(g.chip, mapping.input_lines(), outputs, mapping.debounced_lines(), g.debounce_ms, g.bias)

    return open_lines


def default_adc(mapping: PanelMapping) -> Callable[[], SpiBus]:
    a = mapping.adc
    return lambda: open_spidev(a.spi_bus, a.spi_device, a.speed_hz)


class _Pot:
    def __init__(self, spec: PotSpec, alpha: float, hysteresis: float, soft: bool):
        self.spec, self.channel = spec, spec.channel
        self.filter = PotFilter(alpha, hysteresis)
        self.takeovers = [Takeover(c, soft) for c in spec.layers]
        self.raw: int | None = None


class _Switch:
    """A button or an encoder's push switch."""

    def __init__(self, key: str, label: str, line: Line, on_press: str | None, on_long: str | None,
                 debounce_ms: float, long_ms: float):
        self.key, self.label, self.line = key, label, line
        self.on_press, self.on_long = on_press, on_long
        self.decoder = ButtonDecoder(debounce_ms, long_ms)


def _playing_has(controls, target: str) -> bool:
    """Whether ``target`` exists in the controls of the bundle playing now: the mapping is checked
    against the largest latent of the instrument's bundles, a switch may bring a smaller one."""
    return not target.startswith("bias.") or int(target[5:]) < controls.latent_dim


class Panel:
    def __init__(
        self,
        mapping: PanelMapping,
        actions: Actions,
        open_gpio: Callable[[], GpioLines] | None = None,
        open_adc: Callable[[], SpiBus] | None = None,
        adc_hz: float = 200.0,
        retry_s: float = 2.0,
        clock: Callable[[], int] = time.monotonic_ns,
    ):
        self.mapping, self.actions = mapping, actions
        self.open_gpio = open_gpio or default_gpio(mapping)
        self.open_adc = open_adc or default_adc(mapping)
        self.adc_period_ns = int(1e9 / adc_hz)
        self.retry_ns = int(retry_s * 1e9)
        self.clock = clock
        a, g = mapping.adc, mapping.gpio
        self.pots = [_Pot(p, a.ema_alpha, a.hysteresis, a.takeover == "soft") for p in mapping.pots]
        self.encoders = [(e, QuadratureDecoder(e.steps_per_detent, e.accel_ms, e.max_accel)) for e in mapping.encoders]
        switches = [_Switch(b.key, b.label, b.line, b.on_press, b.on_long_press, g.debounce_ms, g.long_press_ms)
                    for b in mapping.buttons]
        switches += [_Switch(e.key + ".push", e.label, e.push, e.on_press, e.on_long_press, g.debounce_ms,
                             g.long_press_ms) for e in mapping.encoders if e.push is not None]
        self.switches = switches
        self._by_line: dict[Line, tuple[str, Any]] = {}
        for e, dec in self.encoders:
            self._by_line[e.a] = ("a", (e, dec))
            self._by_line[e.b] = ("b", (e, dec))
        for s in switches:
            self._by_line[s.line] = ("switch", s)
        self.layer = 0
        self._uses_gpio, self._uses_adc = mapping.uses_gpio(), mapping.uses_adc()
        self.gpio: GpioLines | None = None
        self.adc: Mcp3008 | None = None
        self._retry_at = {"gpio": 0, "adc": 0}
        self._failed: dict[str, str] = {}  # part -> the message logged for its current failure
        self._next_adc = clock()
        self._led_level: int | None = None
        self._xruns_seen: int | None = None
        self._blink_until = 0
        self._status: dict[str, Any] = {}
        self._status_at = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0  # Controls updates made by the pots and encoders
        self.errors = 0  # unexpected errors caught in the loop

    # -- lifecycle ------------------------------------------------------------------
    @property
    def controls(self):
        """The controls of the bundle playing now (a live switch may replace them: never kept)."""
        return self.actions.controls

    def start(self) -> "Panel":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wavae-panel", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close("gpio")
        self._close("adc")

    def _run(self) -> None:
        ordinary_priority()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug here must never reach the instrument: log it, keep the panel going
                self.errors += 1
                log.exception("panel: unexpected error; continuing")
                self._stop.wait(1.0)

    # -- hardware, with retries ----------------------------------------------------------
    def _ensure_open(self, now: int) -> None:
        if self._uses_gpio and self.gpio is None and now >= self._retry_at["gpio"]:
            try:
                self.gpio = self.open_gpio()
                self._resync(self.gpio.levels(), now)
                self._recovered("gpio")
            except PanelHardwareError as e:
                self._fail("gpio", e, now)
        if self._uses_adc and self.adc is None and now >= self._retry_at["adc"]:
            try:
                self.adc = Mcp3008(self.open_adc())  # "back" once a reading succeeds: a bus opens even unwired
            except PanelHardwareError as e:
                self._fail("adc", e, now)

    def _fail(self, part: str, e: Exception, now: int) -> None:
        self._close(part)
        self._retry_at[part] = now + self.retry_ns
        msg = str(e)
        if self._failed.get(part) != msg:
            what = "buttons, encoders and LED" if part == "gpio" else "pots"
            log.warning("panel: %s off: %s; the instrument keeps playing, retrying every %.1f s",
                        what, msg, self.retry_ns / 1e9)
        self._failed[part] = msg

    def _recovered(self, part: str) -> None:
        if self._failed.pop(part, None) is not None:
            log.info("panel: %s back", "GPIO" if part == "gpio" else "ADC")

    def _close(self, part: str) -> None:
        dev = self.gpio if part == "gpio" else self.adc
        if dev is not None:
            try:
                dev.close()
            except (OSError, PanelHardwareError):
                pass  # already gone: nothing more to release
        if part == "gpio":
            self.gpio = None
        else:
            self.adc = None

    @property
    def thread_id(self) -> int | None:
        """The panel thread's kernel id while it runs (None when stopped)."""
        return self._thread.native_id if self._thread is not None else None

    @property
    def failures(self) -> dict[str, str]:
        return dict(self._failed)

    # -- one round ------------------------------------------------------------------------
    def tick(self, max_wait_s: float = IDLE_WAIT_S) -> None:
        now = self.clock()
        self._ensure_open(now)
        if self.adc is not None and now >= self._next_adc:
            try:
                self.scan_pots()
                self._recovered("adc")
            except PanelHardwareError as e:
                self._fail("adc", e, now)
            self._next_adc += self.adc_period_ns
            if self._next_adc <= now:  # fell behind (a stall): no burst of catch-up readings
                self._next_adc = now + self.adc_period_ns
        wait = max_wait_s
        if self.adc is not None:
            wait = min(wait, max(0.0, (self._next_adc - self.clock()) / 1e9))
        if self.gpio is not None:
            try:
                edges = self.gpio.read(wait)
            except PanelHardwareError as e:
                self._fail("gpio", e, self.clock())
                edges = []
            for line, level, t in edges:
                self.edge(line, level, t)
        elif wait > 0:
            self._stop.wait(wait)
        if self.switches or self.mapping.led is not None:
            now = self.clock()
            for s in self.switches:
                if s.decoder.poll(now) and s.on_long:
                    self._act(s.on_long)
            self._led(now)

    # -- pots -----------------------------------------------------------------------------
    def scan_pots(self) -> None:
        updates: dict[str, float] = {}
        read = self.adc.read
        controls = self.controls
        for pot in self.pots:  # the hot loop at 200 Hz: nothing but a read and the filter unless a pot moved
            pot.raw = raw = read(pot.channel)
            pos = pot.filter.update(raw)
            if pos is None:
                continue
            layer = self.layer if self.layer < len(pot.takeovers) else 0
            tk = pot.takeovers[layer]
            if not _playing_has(controls, tk.curve.target):
                continue  # a bias.K beyond the latent of the bundle playing now: this knob rests
            value = tk.offer(pos, controls.get(tk.curve.target))
            if value is not None:
                updates[tk.curve.target] = value
        if updates:
            self.actions.update(updates)
            self.writes += 1

    def set_layer(self, layer: int) -> None:
        if layer != self.layer:
            self.layer = layer
            for pot in self.pots:
                if layer < len(pot.takeovers):
                    pot.takeovers[layer].release()

    # -- edges ------------------------------------------------------------------------------
    def edge(self, line: Line, level: int, t_ns: int) -> None:
        kind, obj = self._by_line.get(line, (None, None))
        if kind in ("a", "b"):
            spec, dec = obj
            n = dec.edge(kind, level, t_ns)
            if n:
                self._turn(spec, n)
        elif kind == "switch":
            for ev in obj.decoder.edge(level, t_ns):
                self._switch_event(obj, ev)

    def _resync(self, levels: dict[Line, int], t_ns: int) -> None:
        """Start decoders from the lines' real levels (at open and after a reopen)."""
        for e, dec in self.encoders:
            if e.a in levels and e.b in levels:
                dec.a, dec.b = levels[e.a], levels[e.b]
                dec.state, dec.acc = (dec.a << 1) | dec.b, 0
        for s in self.switches:
            if s.line in levels:
                s.decoder.edge(levels[s.line], t_ns)

    def _turn(self, spec: EncoderSpec, detents: int) -> None:
        if spec.curve is None:  # "preset" / "bundle": one step per click, no acceleration
            step = 1 if detents > 0 else -1
            try:
                if spec.target == "preset":
                    self.actions.step_preset(step)
                else:
                    self.actions.step_bundle(step)
            except Rejected as e:
                self.actions.refuse("panel", "unavailable", f"{spec.key}: {e}")
            return
        c: Curve = spec.curve
        if not _playing_has(self.controls, c.target):
            self.actions.refuse("panel", "unavailable", f"{spec.key}: {c.target} is beyond the latent of the "
                                                        f"bundle playing now ({self.controls.latent_dim} dimensions)")
            return
        pos = c.to_pos(self.controls.get(c.target))
        pos += detents * spec.step  # clockwise raises the value (lowers it with invert = true)
        self.actions.set(c.target, c.to_value(min(1.0, max(0.0, pos))))
        self.writes += 1

    def _switch_event(self, s: _Switch, ev: str) -> None:
        if s.on_press == "shift":
            if ev == "down":
                self.set_layer(1)
            elif ev == "up":
                self.set_layer(0)
            return
        if s.on_press is None:
            return
        if (ev == "down" and s.on_long is None) or (ev == "short" and s.on_long is not None):
            self._act(s.on_press)
        elif ev == "long" and s.on_long is not None:
            self._act(s.on_long)

    def _act(self, action: str) -> None:
        if action == "shift":
            self.set_layer(1 - self.layer)  # a long press on shift latches the layer
            return
        try:
            self.actions.do(action)
        except Rejected as e:
            self.actions.refuse("panel", "unavailable", f"{action}: {e}")

    # -- LED --------------------------------------------------------------------------------
    def _led(self, now: int) -> None:
        led = self.mapping.led
        if led is None or self.gpio is None:
            return
        if now >= self._status_at:
            self._status = self.actions.provider_status()
            self._status_at = now + STATUS_POLL_NS
        st = self._status
        xruns = int(st.get("xruns", 0) or 0)
        if self._xruns_seen is not None and xruns > self._xruns_seen:
            self._blink_until = now + int(XRUN_BLINK_S * 1e9)
        self._xruns_seen = xruns
        if st.get("error"):
            on = (now // 250_000_000) % 2 == 0  # 2 Hz
        elif now < self._blink_until:
            on = (now // 62_500_000) % 2 == 0  # 8 Hz
        else:
            on = st.get("state", "playing") == "playing"
        level = int(on) ^ int(led.active_low)
        if level != self._led_level:
            try:
                self.gpio.set(led.line, level)
            except (OSError, PanelHardwareError) as e:
                self._fail("gpio", PanelHardwareError(f"setting the LED failed: {e}"), now)
                return
            self._led_level = level

    # -- diagnostics (`wavae panel check`) ------------------------------------------------------
    def readings(self) -> dict[str, Any]:
        pots = []
        for pot in self.pots:
            layer = self.layer if self.layer < len(pot.takeovers) else 0
            tk = pot.takeovers[layer]
            pos = pot.filter.position
            pots.append({
                "label": pot.spec.label, "channel": pot.spec.channel, "raw": pot.raw,
                "target": tk.curve.target, "value": None if pos is None else tk.curve.to_value(pos),
                "locked": tk.locked,
            })
        encs = [{"label": e.label, "target": e.target, "count": dec.count, "invalid": dec.invalid}
                for e, dec in self.encoders]
        sws = [{"label": s.label, "key": s.key, "pressed": s.decoder.pressed, "presses": s.decoder.presses}
               for s in self.switches]
        return {"pots": pots, "encoders": encs, "switches": sws, "layer": self.layer, "failures": self.failures}
