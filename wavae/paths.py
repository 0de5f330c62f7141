"""The paths a person types: one check for an input file, one for an output.

Every subcommand that reads a file or writes one goes through these, so the
same mistake gets the same message everywhere: a folder where a file was
meant, a missing file, or an output that is one of the inputs (which would
replace the user's audio with the render).
"""

from __future__ import annotations

import os
from pathlib import Path

from wavae.errors import WavaeError


class PathError(WavaeError, ValueError):
    """A path on the command line or in a config that cannot be used as asked."""


def input_file(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as an existing, readable regular file, or a clear error."""
    p = Path(path)
    if not p.exists():
        raise PathError(f"{what} {p} does not exist")
    if p.is_dir():
        raise PathError(f"{what} {p} is a folder; give a file")
    if not os.access(p, os.R_OK):
        raise PathError(f"{what} {p} is not readable (permissions)")
    return p


def input_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` as an existing folder, or a clear error."""
    p = Path(path)
    if not p.exists():
        raise PathError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise PathError(f"{what} {p} is a file; give a folder")
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same path, or through a link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def output_file(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (),
                what: str = "output") -> Path:
    """``path`` as a file to write: not a folder, not one of ``inputs``, in a
    folder that exists (a typo in a folder name is an error, not a new folder)."""
    p = Path(path)
    if p.is_dir():
        raise PathError(f"{what} {p} is a folder; give a file name")
    for inp in inputs:
        if same_file(inp, p):
            raise PathError(f"{what} {p} is the input {inp}: choose another file, the input is kept")
    parent = p.parent
    if not parent.is_dir():
        problem = "is a file" if parent.exists() else "does not exist"
        raise PathError(f"cannot write {what} {p}: its folder {parent} {problem}; "
                        f"create it or choose another output path")
    return p
