"""The device config: one TOML file, read with tomllib into frozen dataclasses.

``wavae run --config device.toml`` reads it; ``--bundle``, ``--capture``,
``--playback``, ``--threads`` and ``--backend`` override it the way ``aplay -D``
overrides ``~/.asoundrc``.  Annotated examples live in ``device/configs/``.

    [bundle]    path, paths, crossfade_ms, backend, threads
    [audio]     capture, playback, rate, period_size, periods, prefill_periods,
                channels_in, channels_out, format, threading
    [controls]  the initial latent controls and the feedback loop
    [service]   reopen_interval_s, io_timeout_s, log_level, realtime_priority
    [debug]     stall_ms, stall_at_s, stall_every_s, slow_ms, slow_every (fault injection, tests)
    [panel]     mapping, adc_hz, retry_s            (knobs on GPIO/SPI; off when absent)
    [osc]       host, port                          (OSC over UDP; off when absent)
    [midi]      port, api, virtual                  (MIDI in; off when absent)
    [presets]   dir, load                           (saved presets; off when absent)
    [web]       host, port, lan, token, state_dir, upload_mb  (`wavae web`, a process of its own)

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

from .capabilities import BACKENDS, DEVICE_RATES
from .controls import BIAS_LIMIT, ControlError, Controls
from .shipped import default_bundle


class DeviceConfigError(WavaeError, ValueError):
    """The device config file is missing, not TOML, or has a bad key or value."""


FORMATS = ("S16_LE", "S32_LE", "FLOAT_LE")
THREADING = ("inline", "worker")
MAX_LATENT_DIM = 512  # longest bias list accepted before the bundle is known
LOG_LEVELS = ("debug", "info", "warning", "error")
MIDI_APIS = ("alsa", "jack")


@dataclass(frozen=True)
class BundleConfig:
    """The bundle played at start and, for live switching, the others it can switch to.

    A bundle is named by its folder's name (``/opt/wavae/bundles/strings-int8``
    is ``strings-int8``): the name ``/wavae/bundle``, presets and the status use.
    ``paths`` lists every bundle the instrument may switch between, in the order
    ``bundle.next`` steps through them; ``path`` (or ``--bundle``) is the one
    played at start, the first of ``paths`` when it is left out (the shipped
    default model when both are), and added in front of the list when it is not in it.  ``names()`` and ``switchable()``
    give the resolved list.
    """

    path: Path | None = None  # relative paths are relative to the config file
    paths: tuple[Path, ...] = ()  # the bundles to switch between live (empty: no switching)
    crossfade_ms: float = 100.0  # a live switch fades from the old bundle to the new one over this long
    backend: str = "onnxruntime"
    threads: int = 1

    def start(self) -> Path | None:
        """The bundle played at start: ``path``, else the first of ``paths``, else the shipped
        default model (``wavae.device.shipped``; None when it is not installed)."""
        if self.path is not None:
            return self.path
        return self.paths[0] if self.paths else default_bundle()

    def switchable(self) -> tuple[Path, ...]:
        """Every bundle of this instrument, the start one included, in stepping order."""
        first = self.start()
        if first is None:
            return ()
        return self.paths if first in self.paths else (first, *self.paths)

    def names(self) -> dict[str, Path]:
        """Bundle name (its folder's name) -> path, in stepping order."""
        return {p.name: p for p in self.switchable()}


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

    def for_latent(self, latent_dim: int, source: str = "<config>") -> dict[str, Any]:
        """The values for a bundle with ``latent_dim`` latent dimensions, ``bias`` padded with zeros.

        ``source`` names the config file in the message when the list is longer than the latent.
        """
        values = self.as_dict()
        bias = values.get("bias")
        if bias is not None:
            if len(bias) > latent_dim:
                raise DeviceConfigError(
                    f"{source}: controls.bias: this bundle's latent has {latent_dim} dimensions, "
                    f"the list has {len(bias)} values"
                )
            values["bias"] = list(bias) + [0.0] * (latent_dim - len(bias))
        return values


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
    stall_every_s: float = 0.0  # ... and again every this much audio after that (0 = once; the soak's faults)
    slow_ms: float = 0.0  # an extra delay of this length ...
    slow_every: int = 0  # ... in every Nth period (0 = never)


@dataclass(frozen=True)
class PanelConfig:
    """Pots, encoders, buttons and LED on GPIO/SPI (``wavae.device.panel``)."""

    mapping: Path | None = None  # the mapping file; relative = next to this config
    adc_hz: float = 200.0  # pot readings per second
    retry_s: float = 2.0  # a missing GPIO chip or SPI bus is retried this often


@dataclass(frozen=True)
class OscConfig:
    """OSC in over UDP (``wavae.device.osc``)."""

    host: str = "127.0.0.1"  # "0.0.0.0" listens on every interface
    port: int = 9000


@dataclass(frozen=True)
class MidiConfig:
    """MIDI in (``wavae.device.midi``); CCs are mapped in the panel mapping file."""

    port: str = ""  # part of the input port's name ("" = the first port found)
    api: str = "alsa"  # "alsa" on the device; "jack" under a JACK server
    virtual: bool = False  # open our own port named `port` for others to connect to


@dataclass(frozen=True)
class PresetsConfig:
    """Saved presets (``wavae.device.presets``)."""

    dir: Path | None = None  # a writable folder (the service's StateDirectory); relative = next to this config
    load: str | None = None  # a preset loaded at start (after [controls])


MIN_TOKEN = 16  # characters of a LAN token: guessing one over HTTP is hopeless


@dataclass(frozen=True)
class WebConfig:
    """``wavae web``: the page served by the device (``wavae.device.web``), a process of its own.

    It binds to loopback unless ``lan = true`` and a ``token`` of at least
    ``MIN_TOKEN`` characters are both set; on the LAN every request must carry
    the token.  It reaches the instrument at ``[osc]`` and manages the
    presets in ``[presets] dir``.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    lan: bool = False
    token: str = ""
    state_dir: Path | None = None  # uploads and renders (default: $STATE_DIRECTORY, else ~/.local/state/wavae)
    upload_mb: float = 20.0  # largest sound the playground takes


@dataclass(frozen=True)
class DeviceConfig:
    bundle: BundleConfig = field(default_factory=BundleConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    panel: PanelConfig | None = None  # the optional inputs: None = off
    osc: OscConfig | None = None
    midi: MidiConfig | None = None
    presets: PresetsConfig | None = None
    web: WebConfig = field(default_factory=WebConfig)
    source: str = "<defaults>"  # where it was read from, for messages
    command_line: frozenset[str] = frozenset()  # keys set by command-line overrides, e.g. "audio.capture"


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


def _int_in(options: tuple[int, ...]) -> Checker:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v not in options:
            raise _Bad("an integer, one of " + ", ".join(map(str, options)))
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


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


def _token(v: Any) -> str:
    if not isinstance(v, str) or (v and (len(v) < MIN_TOKEN or not v.isprintable() or " " in v or ";" in v)):
        raise _Bad(f"a string of at least {MIN_TOKEN} characters without spaces (e.g. from `openssl rand -hex 16`)")
    return v


def _host(v: Any) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(_string(v)))
    except ValueError:
        raise _Bad('an IP address such as "127.0.0.1" (this machine only) or "0.0.0.0" (every interface)') from None


def _string_or_empty(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad("a string")
    return v


def _path_list(v: Any) -> tuple[Path, ...]:
    if not isinstance(v, list) or not v:
        raise _Bad('a non-empty list of bundle folders, e.g. ["bundles/strings-int8", "bundles/voice-int8"]')
    return tuple(_path(x) for x in v)


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
        {"path": _path, "paths": _path_list, "crossfade_ms": _float(1.0, 5000.0), "backend": _choice(BACKENDS),
         "threads": _int(1, 64)},
    ),
    "audio": (
        AudioConfig,
        {
            "capture": _string,
            "playback": _string,
            "rate": _int_in(DEVICE_RATES),  # what the engine serves, so a config it refuses fails here
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
    "panel": (
        PanelConfig,
        {"mapping": _path, "adc_hz": _float(10.0, 1000.0), "retry_s": _float(0.1, 60.0)},
    ),
    "osc": (OscConfig, {"host": _host, "port": _int(1, 65535)}),
    "midi": (MidiConfig, {"port": _string_or_empty, "api": _choice(MIDI_APIS), "virtual": _bool}),
    "presets": (PresetsConfig, {"dir": _path, "load": _string}),
    "web": (
        WebConfig,
        {"host": _host, "port": _int(1, 65535), "lan": _bool, "token": _token, "state_dir": _path,
         "upload_mb": _float(0.1, 500.0)},
    ),
    "debug": (
        DebugConfig,
        {
            "stall_ms": _float(0.0, 10000.0),
            "stall_at_s": _float(0.0, 1e6),
            "stall_every_s": _float(0.0, 1e6),
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
    if base_dir is not None:  # relative paths are relative to the config file
        for section, key in (("bundle", "path"), ("panel", "mapping"), ("presets", "dir"),
                             ("web", "state_dir")):
            sub = getattr(cfg, section)
            value = getattr(sub, key) if sub is not None else None
            if value is not None and not value.is_absolute():
                cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{key: base_dir / value})})
        paths = tuple(p if p.is_absolute() else base_dir / p for p in cfg.bundle.paths)
        cfg = dataclasses.replace(cfg, bundle=dataclasses.replace(cfg.bundle, paths=paths))
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


def _check_bundle_names(b: BundleConfig, source: str) -> None:
    """Two bundles of one instrument may not share a folder name: the name is how they are selected."""
    seen: dict[str, Path] = {}
    for p in b.switchable():
        other = seen.setdefault(p.name, p)
        if other != p:
            raise DeviceConfigError(
                f"{source}: bundle.paths: {other} and {p} are both named {p.name!r}; a bundle is selected by its "
                f"folder's name (/wavae/bundle NAME, presets): rename one folder"
            )


def _check_consistency(cfg: DeviceConfig) -> None:
    _check_bundle_names(cfg.bundle, cfg.source)
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
    if cfg.panel is not None and cfg.panel.mapping is None:
        raise DeviceConfigError(
            f"{cfg.source}: panel.mapping: missing: [panel] needs the mapping file, e.g. "
            f'mapping = "panels/pi5.toml" (examples in {Path(__file__).parent / "configs" / "panels"})'
        )
    if cfg.presets is not None and cfg.presets.dir is None:
        raise DeviceConfigError(
            f'{cfg.source}: presets.dir: missing: [presets] needs a writable folder, e.g. dir = "/var/lib/wavae/presets"'
        )
    check_web_binding(cfg.web.host, cfg.web, cfg.source)
    d = cfg.debug
    if d.stall_every_s > 0 and d.stall_ms <= 0:
        raise DeviceConfigError(
            f"{cfg.source}: debug.stall_every_s: repeats the stall of stall_ms, which is 0: set stall_ms too"
        )
    if (d.slow_ms > 0) != (d.slow_every > 0):
        raise DeviceConfigError(
            f"{cfg.source}: debug.slow_every: slow_ms and slow_every go together "
            f"(got slow_ms = {d.slow_ms:g}, slow_every = {d.slow_every})"
        )


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, "localhost")."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_web_binding(host: str, web: WebConfig, source: str) -> None:
    """Refuse a LAN address for ``wavae web`` unless ``[web] lan = true`` and a token are set."""
    if is_loopback(host):
        return
    if not web.lan or not web.token:
        raise DeviceConfigError(
            f"{source}: web.host: {host} would put the instrument's page on the network; that needs "
            f"`lan = true` and a `token` (at least {MIN_TOKEN} characters, e.g. `openssl rand -hex 16`) in [web]. "
            f'Keep host = "127.0.0.1" to serve this machine only'
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
    _check_bundle_names(b, "--bundle" if bundle is not None else cfg.source)
    given = {"bundle.path": bundle, "bundle.threads": threads, "bundle.backend": backend,
             "audio.capture": capture, "audio.playback": playback}
    command_line = cfg.command_line | {k for k, v in given.items() if v is not None}
    return dataclasses.replace(cfg, bundle=b, audio=a, command_line=frozenset(command_line))


def _checked(flag: str, value: Any, check: Checker) -> Any:
    try:
        return check(value)
    except _Bad as bad:
        raise DeviceConfigError(f"{flag}: expected {bad.expected}, got {_show(value)}") from None


def example_configs() -> list[Path]:
    """The annotated example configs shipped with the package."""
    return sorted((Path(__file__).parent / "configs").glob("*.toml"))
