"""The models wavae-edge ships: ``models/`` in the repository, the package ``wavae.models`` once installed.

``default_bundle()`` is what the instrument plays when no bundle is named:
``wavae run`` without ``--bundle``, and a device config without ``[bundle]``
``path``/``paths`` (so a fresh install boots to sound).  It is the fp32 bundle
of the default model: its int8 bundle (the form the Pi's ARM CPU and TensorRT
run best) is shipped too, but misses issue 13's "within 1 dB of fp32" by far on
this model (models/pi/MODEL_CARD.md), so it is not what plays unasked.  Each
model folder holds ``NAME-fp32/`` and ``NAME-int8/`` bundles, named so that a
status or a switch list says which model plays (``wavae ship`` writes them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from wavae.errors import WavaeError

DEFAULT_MODEL = "pi"
DEFAULT_PRECISION = "fp32"  # the int8 bundle misses its 1 dB target on this model (MODEL_CARD.md)


def models_dir() -> Path | None:
    """The folder of the shipped models, or None when this install has none."""
    spec = importlib.util.find_spec("wavae.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def shipped_bundle(model: str = DEFAULT_MODEL, precision: str = DEFAULT_PRECISION) -> Path:
    """Where the shipped bundle of ``model`` at ``precision`` lives (it may be missing)."""
    root = models_dir() or Path("models")
    return root / model / f"{model}-{precision}"


def default_bundle() -> Path | None:
    """The bundle played when none is named, or None when it is not installed."""
    path = shipped_bundle()
    return path if (path / "manifest.json").is_file() else None


def bundle_or_default(path: str | Path | None) -> Path:
    """``path`` when a bundle was named, else the shipped default; a clear error when neither."""
    if path:
        return Path(path)
    default = default_bundle()
    if default is None:
        raise WavaeError(f"no --bundle given, and the shipped default model ({shipped_bundle()}) is not "
                         f"installed: name a bundle written by `wavae export`")
    return default
