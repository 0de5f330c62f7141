"""The device config: one TOML file, read with tomllib into frozen dataclasses.

``wavae run --config device.toml`` reads it; ``--bundle``, ``--capture``,
``--playback``, ``--threads`` and ``--backend`` override it the way ``aplay -D``
overrides ``~/.asoundrc``.  Annotated examples live in ``device/configs/``.

    [bundle]    path, backend, threads
    [audio]     capture, playback, rate, period_size, periods, prefill_periods,
                channels_in, channels_out, format, threading
    [controls]  the initial latent controls and the feedback loop
    [service]   reopen_interval_s, io_timeout_s, log_level, realtime_priority
    [debug]     stall_ms, stall_at_s, slow_ms, slow_every (fault injection, tests)

Validation names the key and says what is expected::

    device.toml: audio.period_size: expected an integer between 16 and 8192, got "abc"

and an unknown key is an error that names it and lists the allowed keys, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wavae.errors import WavaeError

from .controls import BIAS_LIMIT, ControlError, Controls


class DeviceConfigError(WavaeError, ValueError):
    """The device config file is missing, not TOML, or has a bad key or value."""


BACKENDS = ("onnxruntime", "tensorrt")
FORMATS = ("S16_LE", "S32_LE", "FLOAT_LE")
THREADING = ("inline", "worker")
MAX_LATENT_DIM = 512  # longest bias list accepted before the bundle is known
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class BundleConfig:
    path: Path | None = None  # relative paths are relative to the config file
    backend: str = "onnxruntime"
    threads: int = 1


@dataclass(frozen=True)
class AudioConfig:
    capture: str = "default"
    playback: str = "default"
    rate: int = 48000
    period_size: int = 256  # frames per read/write and per engine call
    periods: int = 3  # periods in each ALSA ring buffer
    prefill_periods: int = 2  # periods of silence written to playback before starting (>= 2; see live.py)
    channels_in: int = 1
    channels_out: int = 1
    format: str = "S16_LE"
    threading: str = "inline"  # "inline" or "worker" (see wavae.device.live)


@dataclass(frozen=True)
class ControlsConfig:
    """Initial control values, by the names of ``wavae.device.controls``.

    Only the keys present in the file are kept (in file order); the rest keep
    the engine's defaults.  ``bias`` is a list from PCA dimension 0; a shorter
    list leaves the remaining dimensions at 0.
    """

    values: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass(frozen=True)
class ServiceConfig:
    reopen_interval_s: float = 1.0  # a lost device is reopened this often
    io_timeout_s: float = 1.0  # no audio for this long means the device is lost
    log_level: str = "info"
    realtime_priority: int = 0  # SCHED_FIFO for the audio thread, and mlockall (0 = off; needs LimitRTPRIO/LimitMEMLOCK)


@dataclass(frozen=True)
class DebugConfig:
    """Fault injection for tests and measurements; all off by default."""

    stall_ms: float = 0.0  # one stall of this length in the processing path ...
    stall_at_s: float = 0.0  # ... once this much audio has been processed
    slow_ms: float = 0.0  # an extra delay of this length ...
    slow_every: int = 0  # ... in every Nth period (0 = never)


@dataclass(frozen=True)
class DeviceConfig:
    bundle: BundleConfig = field(default_factory=BundleConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    source: str = "<defaults>"  # where it was read from, for messages


# ----------------------------------------------------------------------------
# value checkers: each returns the converted value or raises _Bad(expected)
# ----------------------------------------------------------------------------
class _Bad(Exception):
    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


Checker = Callable[[Any], Any]


def _int(lo: int, hi: int) -> Checker:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(f"an integer between {lo} and {hi}")
        return v

    return check


def _float(lo: float, hi: float) -> Checker:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"a number between {lo:g} and {hi:g}")
        v = float(v)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise _Bad(f"a number between {lo:g} and {hi:g}")
        return v

    return check


def _choice(options: tuple[str, ...]) -> Checker:
    def check(v: Any) -> str:
        if v not in options:
            raise _Bad("one of " + ", ".join(f'"{o}"' for o in options))
        return v

    return check


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string")
    return v


def _path(v: Any) -> Path:
    return Path(_string(v)).expanduser()


def _float_list(lo: float, hi: float, max_len: int) -> Checker:
    item = _float(lo, hi)

    def check(v: Any) -> tuple[float, ...]:
        expected = f"a list of at most {max_len} numbers between {lo:g} and {hi:g}"
        if not isinstance(v, list) or len(v) > max_len:
            raise _Bad(expected)
        try:
            return tuple(item(x) for x in v)
        except _Bad:
            raise _Bad(expected) from None

    return check


# section -> (dataclass, {key: checker}); the keys are the dataclass fields
_SCHEMA: dict[str, tuple[type, dict[str, Checker]]] = {
    "bundle": (
        BundleConfig,
        {"path": _path, "backend": _choice(BACKENDS), "threads": _int(1, 64)},
    ),
    "audio": (
        AudioConfig,
        {
            "capture": _string,
            "playback": _string,
            "rate": _int(8000, 192000),
            "period_size": _int(16, 8192),
            "periods": _int(2, 32),
            "prefill_periods": _int(1, 32),
            "channels_in": _int(1, 2),
            "channels_out": _int(1, 2),
            "format": _choice(FORMATS),
            "threading": _choice(THREADING),
        },
    ),
    "controls": (ControlsConfig, {}),  # checked by _controls() against wavae.device.controls
    "service": (
        ServiceConfig,
        {
            "reopen_interval_s": _float(0.05, 60.0),
            "io_timeout_s": _float(0.05, 60.0),
            "log_level": _choice(LOG_LEVELS),
            "realtime_priority": _int(0, 99),
        },
    ),
    "debug": (
        DebugConfig,
        {
            "stall_ms": _float(0.0, 10000.0),
            "stall_at_s": _float(0.0, 1e6),
            "slow_ms": _float(0.0, 10000.0),
            "slow_every": _int(0, 1_000_000),
        },
    ),
}


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a table"
    return repr(v)


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> DeviceConfig:
    """Validate a parsed TOML document into a ``DeviceConfig``.

    ``base_dir`` anchors a relative ``bundle.path`` (normally the config file's folder).
    """
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _SCHEMA:
            raise DeviceConfigError(
                f"{source}: [{name}]: unknown section; allowed sections: {', '.join(_SCHEMA)}"
            )
        if not isinstance(table, dict):
            raise DeviceConfigError(f"{source}: {name}: expected a [{name}] table, got {_show(table)}")
        if name == "controls":
            sections[name] = _controls(table, source)
            continue
        cls, checkers = _SCHEMA[name]
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in checkers:
                raise DeviceConfigError(
                    f"{source}: {name}.{key}: unknown key; allowed keys in [{name}]: {', '.join(checkers)}"
                )
            try:
                values[key] = checkers[key](value)
            except _Bad as bad:
                raise DeviceConfigError(
                    f"{source}: {name}.{key}: expected {bad.expected}, got {_show(value)}"
                ) from None
        sections[name] = cls(**values)
    cfg = DeviceConfig(**sections, source=source)
    if cfg.bundle.path is not None and base_dir is not None and not cfg.bundle.path.is_absolute():
        cfg = dataclasses.replace(cfg, bundle=dataclasses.replace(cfg.bundle, path=base_dir / cfg.bundle.path))
    _check_consistency(cfg)
    return cfg


def _controls(table: dict[str, Any], source: str) -> ControlsConfig:
    """[controls]: the keys and ranges are those of the live control API."""
    probe = Controls(MAX_LATENT_DIM)
    allowed = ["bias"] + [n for n in probe.names() if not n.startswith("bias")]
    values = []
    for key, value in table.items():
        if key not in allowed:
            raise DeviceConfigError(
                f"{source}: controls.{key}: unknown key; allowed keys in [controls]: {', '.join(allowed)}"
            )
        if key == "bias":
            try:
                value = _float_list(-BIAS_LIMIT, BIAS_LIMIT, MAX_LATENT_DIM)(value)
            except _Bad as bad:
                raise DeviceConfigError(
                    f"{source}: controls.bias: expected {bad.expected}, got {_show(value)}"
                ) from None
        else:
            try:
                value = probe.check(key, value)
            except ControlError as e:
                raise DeviceConfigError(f"{source}: controls.{key}: {e}") from None
        values.append((key, value))
    return ControlsConfig(tuple(values))


def _check_consistency(cfg: DeviceConfig) -> None:
    a = cfg.audio
    if a.prefill_periods < 2:
        raise DeviceConfigError(
            f"{cfg.source}: audio.prefill_periods: expected at least 2, got {a.prefill_periods}: with one period "
            f"of pre-fill, playback has nothing left queued when a captured period is complete, so no time "
            f"remains to process it and playback underruns whenever processing takes any time. Each pre-fill "
            f"period adds one period of latency and one of processing slack"
        )
    if a.prefill_periods > a.periods:
        raise DeviceConfigError(
            f"{cfg.source}: audio.prefill_periods: expected at most audio.periods ({a.periods}), "
            f"got {a.prefill_periods}"
        )
    d = cfg.debug
    if (d.slow_ms > 0) != (d.slow_every > 0):
        raise DeviceConfigError(
            f"{cfg.source}: debug.slow_every: slow_ms and slow_every go together "
            f"(got slow_ms = {d.slow_ms:g}, slow_every = {d.slow_every})"
        )


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device config file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DeviceConfigError(
            f"device config {path} does not exist; start from an example in {Path(__file__).parent / 'configs'}"
        ) from None
    except OSError as e:
        raise DeviceConfigError(f"device config {path} cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DeviceConfigError(f"{path}: not a UTF-8 text file; a device config is TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise DeviceConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, source=str(path), base_dir=path.resolve().parent)


def with_overrides(
    cfg: DeviceConfig,
    *,
    bundle: str | Path | None = None,
    capture: str | None = None,
    playback: str | None = None,
    threads: int | None = None,
    backend: str | None = None,
) -> DeviceConfig:
    """Command-line overrides win over the file (None leaves a value alone)."""
    b, a = cfg.bundle, cfg.audio
    if bundle is not None:
        b = dataclasses.replace(b, path=Path(bundle).expanduser())
    if threads is not None:
        b = dataclasses.replace(b, threads=_checked("--threads", threads, _int(1, 64)))
    if backend is not None:
        b = dataclasses.replace(b, backend=_checked("--backend", backend, _choice(BACKENDS)))
    if capture is not None:
        a = dataclasses.replace(a, capture=_checked("--capture", capture, _string))
    if playback is not None:
        a = dataclasses.replace(a, playback=_checked("--playback", playback, _string))
    return dataclasses.replace(cfg, bundle=b, audio=a)


def _checked(flag: str, value: Any, check: Checker) -> Any:
    try:
        return check(value)
    except _Bad as bad:
        raise DeviceConfigError(f"{flag}: expected {bad.expected}, got {_show(value)}") from None


def example_configs() -> list[Path]:
    """The annotated example configs shipped with the package."""
    return sorted((Path(__file__).parent / "configs").glob("*.toml"))
