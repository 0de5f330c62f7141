"""Atomic file writes and checksums, shared by desktop and device (torch-free).

Every file wavae writes goes through ``atomic_path``: the data lands in a
temporary file beside the target, is fsynced, given ordinary permissions and
renamed over the target, and the folder is fsynced, so a power cut leaves
either the old file or the new one, never half of either, and a file reported
saved stays saved.

Temporaries are named ``.NAME.PID.xxxx.tmp`` (``.old`` for a directory moved
aside).  A process killed outright (``kill -9``, a power cut) leaves them
behind; the next write to the same target removes those whose process is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: setting it later would race other threads


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by a process that no longer runs.

    Only names of our own pattern (``.NAME.PID.*.tmp`` / ``.old``) whose PID is
    dead are touched: a write in progress in another process is left alone.
    Returns what was removed.
    """
    path = Path(path)
    head = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(head) or not name.endswith((".tmp", ".old")):
            continue
        pid = name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # not ours to remove after all (permissions): leave it
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The caller writes the temporary file by name (soundfile, torch.save, ...).
    mkstemp's 0600 is widened to the usual umask permissions, so a service
    user can read what a desktop user wrote.
    """
    path = Path(path)
    clean_stale_temps(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself must reach the disk before we say "saved"
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def temp_dir_beside(out: str | os.PathLike) -> Path:
    """A fresh temporary directory beside ``out`` (readable as a bundle is
    meant to be: 0755), to be finished and moved into place by ``replace_dir``.
    Stale temporaries of the same target are removed first."""
    out = Path(out)
    clean_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=_temp_prefix(out), suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished directory ``tmp`` to ``out``.  An existing ``out`` is
    moved aside first and deleted only once the new one is in place; if the
    rename fails, it is put back.  Callers check that ``out`` is theirs to replace."""
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=_temp_prefix(out), suffix=".old"))
        os.rmdir(old)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
