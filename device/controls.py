"""Live controls: one thread-safe setter API, read by the audio path as a snapshot.

Writers (GPIO knobs, OSC, MIDI, a control script) call ``Controls.set(name,
value)``; each call validates, builds a new immutable ``ControlSnapshot`` and
swaps the ``Controls.snapshot`` reference.  The audio path reads that
reference once per model block: a single attribute load, atomic under the GIL,
never waiting on the writers' lock (which only serialises writers among
themselves).  The engine smooths every continuous control per latent frame,
so a knob jump becomes a ramp, not a click.

Controls (latent values are in PCA space, in units of each dimension's
training std, dimension 0 the most varied):

=================  =========  ===============  ===========================================
name               default    range            meaning
=================  =========  ===============  ===========================================
bias.K             0          -10 .. 10        added to latent dimension K (the knobs)
scale              1          0 .. 4           multiplies the encoded latent
noise              0          0 .. 4           randomize: adds noise * z_std * N(0, 1)
loudness_source    input      input | manual   where the decoder's loudness comes from
loudness           0.5        0 .. 1           the manual loudness (flattened scale)
freeze             off        on | off         hold the encoder's latent and loudness
generative         off        on | off         no input: latent = bias (+ noise), manual loudness
feedback_gain      0          0 .. 2           output -> band-pass -> this gain -> next input
feedback_freq      1000       20 .. 20000 Hz   band-pass centre (clamped to 0.45 x model rate)
feedback_q         2          0.1 .. 50        band-pass quality (bandwidth = f / Q)
output_gain        1          0 .. 4           before the output soft limiter
smoothing          0.05       0 .. 2 s         time constant of the per-latent-frame smoothing
=================  =========  ===============  ===========================================

A control script (``ControlScript``, file mode and tests) is JSON::

    {"events": [{"t": 0.0, "control": "feedback_gain", "value": 0.3},
                {"t": 1.5, "control": "bias.0", "value": 2.0},
                {"t": 3.0, "control": "freeze", "value": true}]}

``t`` is in seconds of audio processed, not wall-clock time: an event applies
from the start of the period that contains ``t``, so a file render and a live
ALSA run of the same script are identical.

Another bundle (a live switch, a preset saved on another bundle) may have
another latent size: ``fit_bias`` is the one rule for carrying a bias list
over, the dimensions beyond the new size dropped and the new ones at 0
(latent dimensions are in PCA order, so dimension K means "the Kth most varied
direction" in either bundle).  Every other control has the same range in every
bundle and carries over as it is; ``Controls.adopt`` takes a whole snapshot so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from wavae.errors import WavaeError
from wavae.paths import PathError, input_file


class ControlError(WavaeError, ValueError):
    """An unknown control name or a value outside its range."""


LOUDNESS_SOURCES = ("input", "manual")
BIAS_LIMIT = 10.0

# name -> (kind, default, low, high)
_SPECS: dict[str, tuple[str, Any, float | None, float | None]] = {
    "scale": ("float", 1.0, 0.0, 4.0),
    "noise": ("float", 0.0, 0.0, 4.0),
    "loudness_source": ("choice", "input", None, None),
    "loudness": ("float", 0.5, 0.0, 1.0),
    "freeze": ("bool", False, None, None),
    "generative": ("bool", False, None, None),
    "feedback_gain": ("float", 0.0, 0.0, 2.0),
    "feedback_freq": ("float", 1000.0, 20.0, 20000.0),
    "feedback_q": ("float", 2.0, 0.1, 50.0),
    "output_gain": ("float", 1.0, 0.0, 4.0),
    "smoothing": ("float", 0.05, 0.0, 2.0),
}


class ControlSpec(NamedTuple):
    """What a control accepts: ``kind`` is "float", "bool" or "choice" (low/high None unless float)."""

    kind: str
    default: Any
    low: float | None
    high: float | None


@dataclass(frozen=True)
class ControlSnapshot:
    """Every control's value at one instant; never mutated (a new one replaces it)."""

    bias: tuple[float, ...]
    scale: float = 1.0
    noise: float = 0.0
    loudness_source: str = "input"
    loudness: float = 0.5
    freeze: bool = False
    generative: bool = False
    feedback_gain: float = 0.0
    feedback_freq: float = 1000.0
    feedback_q: float = 2.0
    output_gain: float = 1.0
    smoothing: float = 0.05
    version: int = 0


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
        return value.lower() in ("on", "true")
    raise ControlError(f"control {name!r} is on/off: give true/false, 1/0 or \"on\"/\"off\", not {value!r}")


def _as_float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"control {name!r} takes a number between {lo:g} and {hi:g}, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ControlError(f"control {name!r} = {value!r} is outside its range {lo:g} .. {hi:g}")
    return v


def fit_bias(bias: tuple[float, ...] | list[float], latent_dim: int) -> tuple[float, ...]:
    """``bias`` for a latent of ``latent_dim`` dimensions: cut, or padded with zeros."""
    bias = tuple(bias)
    return (bias + (0.0,) * latent_dim)[:latent_dim]


class Controls:
    """The control surface of one engine (``latent_dim`` bias knobs plus the rest)."""

    def __init__(self, latent_dim: int):
        if latent_dim <= 0:
            raise ControlError(f"latent_dim must be positive, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self._lock = threading.Lock()
        self.snapshot: ControlSnapshot = ControlSnapshot(bias=(0.0,) * self.latent_dim)

    # names -------------------------------------------------------------------
    def names(self) -> list[str]:
        return [f"bias.{k}" for k in range(self.latent_dim)] + ["bias"] + list(_SPECS)

    def _unknown(self, name: Any) -> ControlError:
        return ControlError(
            f"unknown control {name!r}; known controls: bias.0 .. bias.{self.latent_dim - 1}, bias (a list), "
            + ", ".join(_SPECS)
        )

    def spec(self, name: str) -> ControlSpec:
        """Kind, default and range of one control (``bias.K`` included); unknown names raise."""
        if isinstance(name, str) and name.startswith("bias."):
            self.check(name, 0.0)
            return ControlSpec("float", 0.0, -BIAS_LIMIT, BIAS_LIMIT)
        if not isinstance(name, str) or name not in _SPECS:
            raise self._unknown(name)
        return ControlSpec(*_SPECS[name])

    def check(self, name: str, value: Any) -> Any:
        """Validate ``name = value`` without applying it; returns the normalised value."""
        if not isinstance(name, str):
            raise self._unknown(name)
        if name == "bias":
            if not isinstance(value, (list, tuple)) or len(value) != self.latent_dim:
                raise ControlError(f"control 'bias' takes a list of {self.latent_dim} numbers, not {value!r}")
            return tuple(_as_float(f"bias.{k}", v, -BIAS_LIMIT, BIAS_LIMIT) for k, v in enumerate(value))
        if name.startswith("bias."):
            k = name[5:]
            if not k.isdigit() or int(k) >= self.latent_dim:
                raise ControlError(
                    f"unknown control {name!r}: this bundle's latent has dimensions 0 .. {self.latent_dim - 1}"
                )
            return _as_float(name, value, -BIAS_LIMIT, BIAS_LIMIT)
        if name not in _SPECS:
            raise self._unknown(name)
        kind, _, lo, hi = _SPECS[name]
        if kind == "float":
            return _as_float(name, value, lo, hi)
        if kind == "bool":
            return _as_bool(name, value)
        # choice: loudness_source
        if isinstance(value, str) and value in LOUDNESS_SOURCES:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
            return LOUDNESS_SOURCES[int(value)]
        raise ControlError(f"control 'loudness_source' is one of {LOUDNESS_SOURCES} (or 0/1), not {value!r}")

    # setters -----------------------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        self.update({name: value})

    def set_bias(self, dim: int, value: float) -> None:
        self.update({f"bias.{int(dim)}": value})

    def update(self, values: dict[str, Any]) -> None:
        """Set several controls at once: the audio path sees all or none of them."""
        checked = [(name, self.check(name, v)) for name, v in values.items()]
        with self._lock:
            snap = self.snapshot
            bias = list(snap.bias)
            fields: dict[str, Any] = {}
            for name, v in checked:
                if name == "bias":
                    bias = list(v)
                elif name.startswith("bias."):
                    bias[int(name[5:])] = v
                else:
                    fields[name] = v
            self.snapshot = dataclasses.replace(snap, bias=tuple(bias), version=snap.version + 1, **fields)

    def adopt(self, snap: ControlSnapshot) -> tuple[float, ...]:
        """Take every value of ``snap`` (another bundle's controls), its bias fitted by ``fit_bias``.

        Returns the bias values that were dropped (non-zero ones beyond this latent), for the log."""
        bias = fit_bias(snap.bias, self.latent_dim)
        dropped = tuple(v for v in snap.bias[self.latent_dim:] if v != 0.0)
        with self._lock:
            self.snapshot = dataclasses.replace(snap, bias=bias, version=self.snapshot.version + 1)
        return dropped

    def reset(self) -> None:
        with self._lock:
            self.snapshot = ControlSnapshot(bias=(0.0,) * self.latent_dim, version=self.snapshot.version + 1)

    def get(self, name: str) -> Any:
        snap = self.snapshot
        if name == "bias":
            return snap.bias
        if name.startswith("bias."):
            self.check(name, 0.0)
            return snap.bias[int(name[5:])]
        if name not in _SPECS:
            raise self._unknown(name)
        return getattr(snap, name)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings (``wavae run --set``) -> ``{name: value}``, for ``Controls.update``.

    A value is read as JSON (``0.4``, ``true``, ``[1, 2]``), else kept as the
    bare word (``manual``, ``on``); ``Controls.check`` judges it, not this.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ControlError(f"--set takes NAME=VALUE, got {item!r}")
        name, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word such as manual / on
        out[name.strip()] = value
    return out


@dataclass(frozen=True)
class ControlEvent:
    t: float
    control: str
    value: Any


class ControlScript:
    """A time -> control -> value timeline, applied by audio frames processed."""

    def __init__(self, events: list[ControlEvent], source: str = "<script>"):
        self.events = sorted(events, key=lambda e: e.t)  # stable: same-time events keep file order
        self.source = source
        self._next = 0

    @classmethod
    def load(cls, path: str | Path, controls: Controls) -> "ControlScript":
        path = Path(path)
        try:
            input_file(path, "control script")
        except PathError as e:  # missing, a folder, unreadable: said the one way paths are said
            raise ControlError(str(e)) from None
        try:
            obj = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ControlError(f"control script {path} is not valid JSON: {e}") from e
        return cls.from_obj(obj, controls, source=str(path))

    @classmethod
    def from_obj(cls, obj: Any, controls: Controls, source: str = "<script>") -> "ControlScript":
        if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
            raise ControlError(
                f"control script {source} must be an object with an \"events\" list: "
                '{"events": [{"t": 0.0, "control": "bias.0", "value": 1.0}, ...]}'
            )
        extra = set(obj) - {"events", "comment"}
        if extra:
            raise ControlError(f"control script {source}: unknown top-level key(s) {sorted(extra)}; expected \"events\"")
        events = []
        for i, ev in enumerate(obj["events"]):
            where = f"control script {source}, event {i}"
            if not isinstance(ev, dict) or set(ev) - {"t", "control", "value"} or not {"t", "control", "value"} <= set(ev):
                raise ControlError(f"{where}: each event is {{\"t\": seconds, \"control\": name, \"value\": v}}, got {ev!r}")
            t = ev["t"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
                raise ControlError(f"{where}: \"t\" must be a number of seconds >= 0, not {t!r}")
            try:
                value = controls.check(ev["control"], ev["value"])
            except ControlError as e:
                raise ControlError(f"{where}: {e}") from None
            events.append(ControlEvent(float(t), ev["control"], value))
        return cls(events, source)

    def rewind(self) -> None:
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self.events)

    def apply(self, controls: Controls, frame: int, period: int, rate: int) -> int:
        """Apply the events due by the end of the period starting at audio frame ``frame``
        (those with ``t * rate < frame + period``); returns how many were applied."""
        n = 0
        end = frame + period
        while self._next < len(self.events) and self.events[self._next].t * rate < end:
            ev = self.events[self._next]
            controls.set(ev.control, ev.value)
            self._next += 1
            n += 1
        return n
