"""Presets: a named set of every control value plus the bundle's name, one JSON file each.

The folder is ``[presets] dir`` in the device config (a systemd
``StateDirectory=``, e.g. ``/var/lib/wavae/presets``).  A preset file::

    {"format": "wavae-preset", "version": 1, "name": "drone", "bundle": "strings-int8",
     "controls": {"bias": [1.5, 0.0, ...], "scale": 1.0, "feedback_freq": 800.0, ...}}

Saving goes through ``wavae.fileio.atomic_write_json`` (a temporary file,
fsync, rename over the old one, fsync of the folder): a power cut while saving
leaves the old preset or the new one, never half of either.  Loading sets all
controls in one ``Controls.update`` (the audio path sees all or none of them);
the engine's per-frame smoothing turns the jump into a ramp.

A preset that cannot be read (not JSON, wrong format, an unknown control, a
value out of range) is reported and skipped, never a crash: ``scan()`` at
start-up moves such a file aside as ``NAME.json.corrupt`` so the next start
does not trip on it again; a file that goes bad later is refused at load time
with a ``PresetError``.  A preset made on a bundle with another latent size
keeps what fits: the bias list is cut or padded with zeros, and the caller is
told (``Preset.fitted``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_json

from .controls import ControlError, Controls, fit_bias

log = logging.getLogger("wavae.device.presets")

FORMAT, VERSION = "wavae-preset", 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PresetError(WavaeError, ValueError):
    """A preset name is invalid, a preset does not exist, or its file is corrupt."""


@dataclass(frozen=True)
class Preset:
    name: str
    bundle: str | None
    values: dict[str, Any]  # control name -> value, checked against the controls it was read for
    fitted: bool = False  # the bias list was cut or padded to this bundle's latent size


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".json"):
        raise PresetError(
            f"preset name {name!r} is not allowed: use 1 to 64 letters, digits, '_', '-' or '.', "
            f"starting with a letter or digit"
        )
    return name


def control_values(controls: Controls) -> dict[str, Any]:
    """Every control's value now, by name (``bias`` as one list), from one snapshot."""
    snap = controls.snapshot
    values: dict[str, Any] = {"bias": list(snap.bias)}
    for name in controls.names():
        if name != "bias" and not name.startswith("bias."):
            values[name] = getattr(snap, name)
    return values


class PresetStore:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def path(self, name: str) -> Path:
        return self.dir / f"{check_name(name)}.json"

    def ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PresetError(
                f"cannot create the preset folder {self.dir}: {e.strerror}; set [presets] dir to a writable "
                f"folder (the service's StateDirectory)"
            ) from None

    def names(self) -> list[str]:
        """Preset names, sorted (the order of next/prev and of MIDI program numbers)."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if NAME_RE.match(p.stem))

    def scan(self, controls: Controls) -> list[str]:
        """Check every preset; move unreadable ones aside as ``*.corrupt`` (logged). Returns the good names."""
        good = []
        for name in self.names():
            try:
                self.load(name, controls)
            except PresetError as e:
                moved = self._move_aside(self.path(name))
                log.error("preset %s skipped: %s; moved to %s", name, e, moved)
                continue
            good.append(name)
        return good

    def _move_aside(self, path: Path) -> Path:
        target = path.with_name(path.name + ".corrupt")
        k = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{k}.corrupt")
            k += 1
        os.replace(path, target)
        return target

    def load(self, name: str, controls: Controls) -> Preset:
        path = self.path(name)
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise PresetError(f"no preset named {name!r} in {self.dir}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PresetError(f"preset file {path} cannot be read: {e}") from None
        return parse_preset(obj, controls, source=str(path), name=name)

    def save(self, name: str, controls: Controls, bundle: str | None) -> Path:
        path = self.path(name)
        self.ensure_dir()
        doc = {"format": FORMAT, "version": VERSION, "name": name, "bundle": bundle,
               "controls": control_values(controls)}
        try:
            atomic_write_json(path, doc)
        except OSError as e:
            raise PresetError(f"cannot save preset {name!r} to {path}: {e.strerror or e}") from None
        return path


    def rename(self, name: str, new: str) -> Path:
        """Give preset ``name`` the name ``new`` (its file renamed, its ``name`` field rewritten)."""
        src, dst = self.path(name), self.path(new)
        if not src.is_file():
            raise PresetError(f"no preset named {name!r} in {self.dir}")
        if dst.exists():
            raise PresetError(f"a preset named {new!r} exists already; delete it first or choose another name")
        try:
            doc = json.loads(src.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PresetError(f"preset file {src} cannot be read: {e}") from None
        if isinstance(doc, dict):
            doc["name"] = new
        try:
            atomic_write_json(dst, doc)  # the new file whole first, then the old one goes
            src.unlink()
        except OSError as e:
            raise PresetError(f"cannot rename preset {name!r} to {new!r} in {self.dir}: {e.strerror or e}") from None
        return dst

    def delete(self, name: str) -> None:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise PresetError(f"no preset named {name!r} in {self.dir}") from None
        except OSError as e:
            raise PresetError(f"cannot delete preset {name!r} ({path}): {e.strerror or e}") from None


def parse_preset(obj: Any, controls: Controls, source: str, name: str) -> Preset:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise PresetError(f"{source} is not a wavae preset (no \"format\": \"{FORMAT}\")")
    if obj.get("version") != VERSION:
        raise PresetError(f"{source}: preset version {obj.get('version')!r} is not supported (this build reads {VERSION})")
    values = obj.get("controls")
    bundle = obj.get("bundle")
    if not isinstance(values, dict) or not (bundle is None or isinstance(bundle, str)):
        raise PresetError(f"{source}: expected \"controls\": {{name: value}} and \"bundle\": a name or null")
    values = dict(values)
    fitted = False
    bias = values.get("bias")
    if isinstance(bias, list) and len(bias) != controls.latent_dim:
        values["bias"] = list(fit_bias(bias, controls.latent_dim))
        fitted = True
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = controls.check(key, value)
        except ControlError as e:
            raise PresetError(f"{source}: {e}") from None
    return Preset(name, bundle, checked, fitted)
