"""The panel mapping file: which physical control drives which control name.

One TOML file per panel build (examples in ``device/configs/panels/``), named
by ``[panel] mapping`` in the device config.  The same file maps MIDI CCs, so a
knob and a fader on a MIDI controller share one vocabulary::

    [gpio]                       # the chip is found by label or by line name, never by number
    chip = ["pinctrl-rp1"]       # labels tried in order; left out: the chip that has every line name
    bias = "pull_up"             # pull_up | pull_down | disabled | as_is (Jetson: fit external pull-ups)
    debounce_ms = 5              # kernel debounce of buttons and encoder pushes (never encoder A/B)
    long_press_ms = 600

    [adc]                        # an MCP3008 on /dev/spidev<bus>.<device>
    spi_bus = 0
    spi_device = 0
    speed_hz = 1000000
    ema_alpha = 0.25             # pot smoothing per reading
    hysteresis = 6               # deadband in ADC steps (of 1023)
    takeover = "soft"            # soft: a pot acts only once it crosses the stored value; jump: at once

    [[pot]]
    channel = 0
    target = "bias.0"
    range = [-3.0, 3.0]          # left out: the control's whole range
    curve = "linear"             # linear | log (log needs a positive range: frequency, Q)
    invert = false
    shift = { target = "bias.4" }   # the layer while a `shift` button is held (same keys)

    [[encoder]]
    a = "GPIO17"                 # line names (or offsets) on the chip
    b = "GPIO27"
    target = "feedback_freq"     # a continuous control, or "preset" / "bundle" to step through them
    range = [40.0, 8000.0]
    curve = "log"
    step = 0.02                  # fraction of the range per detent
    steps_per_detent = 4         # quadrature transitions per click (4 on most, 2 or 1 on some)
    accel_ms = 40                # clicks closer than this multiply the step ...
    max_accel = 5                # ... up to this factor
    push = "GPIO22"              # the push switch's line
    on_press = "freeze"          # a toggle or an action
    on_long_press = "preset.save"

    [[button]]
    line = "GPIO5"
    on_press = "preset.next"
    on_long_press = "preset.prev"

    [led]
    line = "GPIO16"
    active_low = false

    [[midi_cc]]
    cc = 1
    channel = 1                  # 1..16; left out: any channel
    target = "bias.0"            # continuous (range/curve/invert as a pot), a toggle (>= 64 is on)
                                 # or an action (fires when the value rises through 64)
    [midi_program]
    selects = "preset"           # program change N selects preset N (sorted by name) or bundle N

Targets (continuous): ``bias.K``, ``scale``, ``noise``, ``loudness``,
``feedback_gain``, ``feedback_freq``, ``feedback_q``, ``output_gain``,
``smoothing``.  Toggles: ``freeze``, ``generative``, ``loudness_source``
(input <-> manual).  Actions: ``preset.next``, ``preset.prev``, ``preset.save``,
``bundle.next``, ``bundle.prev``, ``shift`` (held: the pots' second layer).

Everything is checked when the file is read: an unknown key, control or
action, a range outside the control's, a log curve through zero, a line used
twice, is a ``PanelMappingError`` naming the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavae.errors import WavaeError

from ..controls import ControlError, Controls

TOGGLES = ("freeze", "generative", "loudness_source")
ACTIONS = ("preset.next", "preset.prev", "preset.save", "bundle.next", "bundle.prev", "shift")
STEPPERS = ("preset", "bundle")  # encoder targets that step through a list
CURVES = ("linear", "log")
BIASES = ("pull_up", "pull_down", "disabled", "as_is")
TAKEOVERS = ("soft", "jump")
PROGRAM_SELECTS = ("preset", "bundle")
ADC_CHANNELS = 8  # MCP3008
ADC_MAX = 1023


class PanelMappingError(WavaeError, ValueError):
    """The panel mapping file is missing, not TOML, or names an unknown control, action or line."""


@dataclass(frozen=True)
class Curve:
    """A control's range and response: ``to_value`` maps a position 0..1 to a value, ``to_pos`` back."""

    target: str
    low: float
    high: float
    curve: str = "linear"
    invert: bool = False

    def to_value(self, pos: float) -> float:
        p = min(1.0, max(0.0, pos))
        if self.invert:
            p = 1.0 - p
        if self.curve == "log":
            v = self.low * (self.high / self.low) ** p
        else:
            v = self.low + p * (self.high - self.low)
        return min(max(v, min(self.low, self.high)), max(self.low, self.high))

    def to_pos(self, value: float) -> float:
        """The position (0..1, clipped) at which ``to_value`` gives ``value``."""
        if self.curve == "log":
            v = min(max(value, min(self.low, self.high)), max(self.low, self.high))
            p = math.log(v / self.low) / math.log(self.high / self.low)
        else:
            p = (value - self.low) / (self.high - self.low)
        p = min(1.0, max(0.0, p))
        return 1.0 - p if self.invert else p


@dataclass(frozen=True)
class GpioSpec:
    chip: tuple[str, ...] = ()
    bias: str = "pull_up"
    debounce_ms: float = 5.0
    long_press_ms: float = 600.0


@dataclass(frozen=True)
class AdcSpec:
    spi_bus: int = 0
    spi_device: int = 0
    speed_hz: int = 1_000_000
    ema_alpha: float = 0.25
    hysteresis: float = 6.0
    takeover: str = "soft"


@dataclass(frozen=True)
class PotSpec:
    key: str  # "pot[0]": where it is in the file, for messages
    label: str
    channel: int
    layers: tuple[Curve, ...]  # layer 0, and layer 1 (shift) when mapped


@dataclass(frozen=True)
class EncoderSpec:
    key: str
    label: str
    a: str | int
    b: str | int
    target: str  # a continuous control or "preset"/"bundle"
    curve: Curve | None  # None for the steppers
    step: float = 0.02
    steps_per_detent: int = 4
    accel_ms: float = 40.0
    max_accel: int = 5
    push: str | int | None = None
    on_press: str | None = None
    on_long_press: str | None = None


@dataclass(frozen=True)
class ButtonSpec:
    key: str
    label: str
    line: str | int
    on_press: str | None = None
    on_long_press: str | None = None


@dataclass(frozen=True)
class LedSpec:
    line: str | int
    active_low: bool = False


@dataclass(frozen=True)
class MidiCCSpec:
    key: str
    cc: int
    channel: int | None  # 1..16, None = any
    target: str
    curve: Curve | None  # continuous targets only


@dataclass(frozen=True)
class PanelMapping:
    source: str
    gpio: GpioSpec = field(default_factory=GpioSpec)
    adc: AdcSpec = field(default_factory=AdcSpec)
    pots: tuple[PotSpec, ...] = ()
    encoders: tuple[EncoderSpec, ...] = ()
    buttons: tuple[ButtonSpec, ...] = ()
    led: LedSpec | None = None
    midi_cc: tuple[MidiCCSpec, ...] = ()
    program_selects: str = "preset"

    def input_lines(self) -> list[str | int]:
        """Every GPIO input line, encoders' A/B first (they get no debounce)."""
        lines: list[str | int] = []
        for e in self.encoders:
            lines += [e.a, e.b]
        for e in self.encoders:
            if e.push is not None:
                lines.append(e.push)
        lines += [b.line for b in self.buttons]
        return lines

    def debounced_lines(self) -> set[str | int]:
        return {e.push for e in self.encoders if e.push is not None} | {b.line for b in self.buttons}

    def uses_gpio(self) -> bool:
        return bool(self.encoders or self.buttons or self.led)

    def uses_adc(self) -> bool:
        return bool(self.pots)


# ----------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------
class _Reader:
    """Checks one table's keys and values; every error names the file and the key."""

    def __init__(self, source: str, controls: Controls):
        self.source, self.controls = source, controls

    def error(self, key: str, msg: str) -> PanelMappingError:
        return PanelMappingError(f"{self.source}: {key}: {msg}")

    def table(self, key: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        extra = [k for k in value if k not in allowed]
        if extra:
            raise self.error(f"{key}.{extra[0]}", f"unknown key; allowed keys: {', '.join(allowed)}")
        return value

    def tables(self, key: str, value: Any, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {value!r}")
        return [self.table(f"{key}[{i}]", v, allowed) for i, v in enumerate(value)]

    def number(self, key: str, value: Any, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not lo <= value <= hi:
            raise self.error(key, f"expected a number between {lo:g} and {hi:g}, got {value!r}")
        return float(value)

    def integer(self, key: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.error(key, f"expected an integer between {lo} and {hi}, got {value!r}")
        return value

    def detent(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or value not in (1, 2, 4):
            raise self.error(key, f"expected 1, 2 or 4 (quadrature steps per click), got {value!r}")
        return int(value)

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, value: Any, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def line(self, key: str, value: Any) -> str | int:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1024:
            return value
        raise self.error(key, f"expected a GPIO line name such as \"GPIO17\" or \"PAC.06\" (or an offset), got {value!r}")

    def label(self, key: str, t: dict[str, Any], default: str) -> str:
        v = t.get("label", default)
        if not isinstance(v, str):
            raise self.error(f"{key}.label", f"expected a string, got {v!r}")
        return v

    def continuous(self, key: str, target: Any) -> str:
        try:
            spec = self.controls.spec(target)
        except ControlError as e:
            raise self.error(key, str(e)) from None
        if spec.kind != "float":
            raise self.error(key, f"{target!r} is a toggle, not a continuous control: map it to a button, "
                                  f"an encoder push or a MIDI CC")
        return target

    def action(self, key: str, value: Any) -> str:
        if value in TOGGLES or value in ACTIONS:
            return value
        raise self.error(key, f"unknown action {value!r}; expected a toggle ({', '.join(TOGGLES)}) "
                              f"or an action ({', '.join(ACTIONS)})")

    def curve(self, key: str, t: dict[str, Any], target: str) -> Curve:
        spec = self.controls.spec(target)
        lo, hi = spec.low, spec.high
        rng = t.get("range", [lo, hi])
        if not (isinstance(rng, list) and len(rng) == 2):
            raise self.error(f"{key}.range", f"expected [low, high], got {rng!r}")
        a = self.number(f"{key}.range", rng[0], lo, hi)
        b = self.number(f"{key}.range", rng[1], lo, hi)
        if a == b:
            raise self.error(f"{key}.range", f"low and high are equal ({a:g}); give two different values")
        curve = self.choice(f"{key}.curve", t.get("curve", "linear"), CURVES)
        if curve == "log" and min(a, b) <= 0:
            raise self.error(f"{key}.curve", f"a log curve needs a range above zero, got [{a:g}, {b:g}]")
        invert = self.boolean(f"{key}.invert", t.get("invert", False))
        return Curve(target, a, b, curve, invert)


CURVE_KEYS = ("target", "range", "curve", "invert")


def parse_mapping(data: dict[str, Any], latent_dim: int, source: str = "<mapping>") -> PanelMapping:
    """Validate a parsed mapping document against a bundle's ``latent_dim`` (for ``bias.K``)."""
    r = _Reader(source, Controls(latent_dim))
    top = r.table("mapping", data, ("gpio", "adc", "pot", "encoder", "button", "led", "midi_cc", "midi_program"))

    g = r.table("gpio", top.get("gpio", {}), ("chip", "bias", "debounce_ms", "long_press_ms"))
    chip = g.get("chip", [])
    if isinstance(chip, str):
        chip = [chip]
    if not isinstance(chip, list) or not all(isinstance(c, str) and c for c in chip):
        raise r.error("gpio.chip", f"expected a chip label or a list of labels (e.g. \"pinctrl-rp1\"), got {chip!r}")
    gpio = GpioSpec(
        chip=tuple(chip),
        bias=r.choice("gpio.bias", g.get("bias", "pull_up"), BIASES),
        debounce_ms=r.number("gpio.debounce_ms", g.get("debounce_ms", 5.0), 0.0, 100.0),
        long_press_ms=r.number("gpio.long_press_ms", g.get("long_press_ms", 600.0), 100.0, 10000.0),
    )

    a = r.table("adc", top.get("adc", {}), ("spi_bus", "spi_device", "speed_hz", "ema_alpha", "hysteresis", "takeover"))
    adc = AdcSpec(
        spi_bus=r.integer("adc.spi_bus", a.get("spi_bus", 0), 0, 16),
        spi_device=r.integer("adc.spi_device", a.get("spi_device", 0), 0, 16),
        speed_hz=r.integer("adc.speed_hz", a.get("speed_hz", 1_000_000), 10_000, 3_600_000),
        ema_alpha=r.number("adc.ema_alpha", a.get("ema_alpha", 0.25), 0.01, 1.0),
        hysteresis=r.number("adc.hysteresis", a.get("hysteresis", 6.0), 0.0, 100.0),
        takeover=r.choice("adc.takeover", a.get("takeover", "soft"), TAKEOVERS),
    )

    pots = []
    channels: dict[int, str] = {}
    for i, t in enumerate(r.tables("pot", top.get("pot", []), ("label", "channel", "shift") + CURVE_KEYS)):
        key = f"pot[{i}]"
        ch = r.integer(f"{key}.channel", t.get("channel"), 0, ADC_CHANNELS - 1)
        if ch in channels:
            raise r.error(f"{key}.channel", f"ADC channel {ch} is already used by {channels[ch]}")
        channels[ch] = key
        if "target" not in t:
            raise r.error(f"{key}.target", "missing: which control this pot drives, e.g. target = \"bias.0\"")
        layers = [r.curve(key, t, r.continuous(f"{key}.target", t["target"]))]
        if "shift" in t:
            s = r.table(f"{key}.shift", t["shift"], CURVE_KEYS)
            if "target" not in s:
                raise r.error(f"{key}.shift.target", "missing: the control this pot drives while shift is held")
            layers.append(r.curve(f"{key}.shift", s, r.continuous(f"{key}.shift.target", s["target"])))
        pots.append(PotSpec(key, r.label(key, t, f"pot{ch}"), ch, tuple(layers)))

    used: dict[str | int, str] = {}

    def claim(key: str, value: Any) -> str | int:
        line = r.line(key, value)
        if line in used:
            raise r.error(key, f"line {line!r} is already used by {used[line]}")
        used[line] = key
        return line

    def optional_action(key: str, t: dict[str, Any], name: str) -> str | None:
        return r.action(f"{key}.{name}", t[name]) if name in t else None

    encoders = []
    enc_keys = ("label", "a", "b", "target", "range", "curve", "invert", "step", "steps_per_detent", "accel_ms",
                "max_accel", "push", "on_press", "on_long_press")
    for i, t in enumerate(r.tables("encoder", top.get("encoder", []), enc_keys)):
        key = f"encoder[{i}]"
        for need in ("a", "b", "target"):
            if need not in t:
                raise r.error(f"{key}.{need}", "missing")
        target = t["target"]
        curve = None if target in STEPPERS else r.curve(key, t, r.continuous(f"{key}.target", target))
        push = claim(f"{key}.push", t["push"]) if "push" in t else None
        if push is None and ("on_press" in t or "on_long_press" in t):
            raise r.error(f"{key}.push", "on_press / on_long_press need the push switch's line: push = \"GPIO22\"")
        encoders.append(EncoderSpec(
            key=key, label=r.label(key, t, f"enc{i}"),
            a=claim(f"{key}.a", t["a"]), b=claim(f"{key}.b", t["b"]),
            target=target, curve=curve,
            step=r.number(f"{key}.step", t.get("step", 0.02), 1e-4, 1.0),
            steps_per_detent=r.detent(f"{key}.steps_per_detent", t.get("steps_per_detent", 4)),
            accel_ms=r.number(f"{key}.accel_ms", t.get("accel_ms", 40.0), 0.0, 1000.0),
            max_accel=r.integer(f"{key}.max_accel", t.get("max_accel", 5), 1, 50),
            push=push,
            on_press=optional_action(key, t, "on_press"),
            on_long_press=optional_action(key, t, "on_long_press"),
        ))

    buttons = []
    for i, t in enumerate(r.tables("button", top.get("button", []), ("label", "line", "on_press", "on_long_press"))):
        key = f"button[{i}]"
        if "line" not in t:
            raise r.error(f"{key}.line", "missing")
        if "on_press" not in t and "on_long_press" not in t:
            raise r.error(f"{key}.on_press", "missing: what the button does (a toggle or an action)")
        buttons.append(ButtonSpec(key, r.label(key, t, f"button{i}"), claim(f"{key}.line", t["line"]),
                                  optional_action(key, t, "on_press"), optional_action(key, t, "on_long_press")))
    if any(p.layers[1:] for p in pots) and not any(
        "shift" in (x.on_press, x.on_long_press) for x in [*buttons, *encoders]
    ):
        raise r.error("pot.shift", "pots have a shift layer but no button or encoder push has on_press = \"shift\"")

    led = None
    if "led" in top:
        t = r.table("led", top["led"], ("line", "active_low"))
        if "line" not in t:
            raise r.error("led.line", "missing")
        led = LedSpec(claim("led.line", t["line"]), r.boolean("led.active_low", t.get("active_low", False)))

    ccs = []
    for i, t in enumerate(r.tables("midi_cc", top.get("midi_cc", []), ("cc", "channel") + CURVE_KEYS)):
        key = f"midi_cc[{i}]"
        if "target" not in t:
            raise r.error(f"{key}.target", "missing")
        target = t["target"]
        if target in TOGGLES or target in ACTIONS:
            if target == "shift":
                raise r.error(f"{key}.target", "shift is a panel button, not a MIDI target")
            extra = [k for k in ("range", "curve", "invert") if k in t]
            if extra:
                raise r.error(f"{key}.{extra[0]}", f"{target!r} is a toggle or an action: it has no {extra[0]}")
            curve = None
        else:
            curve = r.curve(key, t, r.continuous(f"{key}.target", target))
        ch = r.integer(f"{key}.channel", t["channel"], 1, 16) if "channel" in t else None
        ccs.append(MidiCCSpec(key, r.integer(f"{key}.cc", t.get("cc"), 0, 127), ch, target, curve))
    seen: dict[tuple[int, int | None], str] = {}
    for c in ccs:
        if (c.cc, c.channel) in seen:
            raise r.error(f"{c.key}.cc", f"CC {c.cc} is already mapped by {seen[(c.cc, c.channel)]}")
        seen[(c.cc, c.channel)] = c.key

    p = r.table("midi_program", top.get("midi_program", {}), ("selects",))
    selects = r.choice("midi_program.selects", p.get("selects", "preset"), PROGRAM_SELECTS)
    return PanelMapping(source, gpio, adc, tuple(pots), tuple(encoders), tuple(buttons), led, tuple(ccs), selects)


def load_mapping(path: str | Path, latent_dim: int) -> PanelMapping:
    """Read and validate a mapping file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PanelMappingError(
            f"panel mapping {path} does not exist; start from an example in "
            f"{Path(__file__).resolve().parents[1] / 'configs' / 'panels'}"
        ) from None
    except OSError as e:
        raise PanelMappingError(f"panel mapping {path} cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PanelMappingError(f"{path}: not valid TOML: {e}") from None
    return parse_mapping(data, latent_dim, source=str(path))


def example_mappings() -> list[Path]:
    """The panel mappings shipped with the package (Pi 4, Pi 5, Jetson Orin Nano)."""
    return sorted((Path(__file__).resolve().parents[1] / "configs" / "panels").glob("*.toml"))
