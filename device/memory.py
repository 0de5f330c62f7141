"""The weights' memory on transparent huge pages (Linux).

A streaming step reads every weight of the model once per call, and the larger
models' weights do not fit in the CPU's caches (the `wavae` preset: 54 MB per
512-sample block), so a step is bound by how fast memory streams them.  On
4 KiB pages the hardware prefetcher stops at every page boundary and every
4 KiB needs its own TLB entry; on 2 MiB pages the same bytes stream faster
(docs/benchmarks/speed.md).

Linux backs memory with transparent huge pages where it is asked to
(``madvise(MADV_HUGEPAGE)``), when the system setting
(``/sys/kernel/mm/transparent_hugepage/enabled``) is ``madvise``, the usual
default, or ``always``.  ``MADV_COLLAPSE`` (Linux 6.1) turns memory that is
already filled into huge pages at once rather than whenever the kernel's
background thread gets to it.  onnxruntime gives no handle on its buffers, so
the caller takes ``anonymous_regions()`` before it creates its sessions and
``advise_huge_pages`` advises what grew since: the weights, their packed copies
and the first calls' buffers.  That happens once, at load; only the page size
changes, never the contents.  Where the kernel has no transparent huge pages,
or they are off, nothing is done and ``HugePages.note`` says why.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

THP = Path("/sys/kernel/mm/transparent_hugepage")
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25


@dataclass(frozen=True)
class HugePages:
    """What ``advise_huge_pages`` did: bytes advised, the process's bytes on huge pages
    afterwards (``AnonHugePages``), and a note when it could not (or only partly)."""

    advised_bytes: int
    huge_bytes: int | None
    note: str | None = None

    def describe(self) -> str:
        if not self.advised_bytes:
            return f"huge pages: none ({self.note})" if self.note else "huge pages: none"
        huge = f", {self.huge_bytes / 2**20:.0f} MiB on huge pages" if self.huge_bytes is not None else ""
        note = f" ({self.note})" if self.note else ""
        return f"huge pages: {self.advised_bytes / 2**20:.0f} MiB advised{huge}{note}"


def anonymous_regions(maps: str = "/proc/self/maps") -> dict[int, int]:
    """Start -> end address of this process's private anonymous mappings and heap
    (empty where ``/proc`` is absent)."""
    regions = {}
    try:
        with open(maps) as f:
            lines = f.readlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or not fields[1].startswith("rw") or fields[1][3] != "p":
            continue
        if len(fields) > 5 and fields[5] != "[heap]":
            continue  # a file, a stack, the vdso...
        start, end = (int(x, 16) for x in fields[0].split("-"))
        regions[start] = end
    return regions


def grown_ranges(before: dict[int, int], after: dict[int, int], align: int) -> list[tuple[int, int]]:
    """The ``align``-aligned, whole ``align``-sized address ranges mapped in ``after``
    and not in ``before``: new regions, and the part a region (the heap) grew by."""
    out = []
    for start, end in sorted(after.items()):
        lo = max(start, before[start]) if start in before else start
        lo = -(-lo // align) * align
        hi = end // align * align
        if hi - lo >= align:
            out.append((lo, hi))
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def thp_setting() -> tuple[str | None, int | None]:
    """(the system's transparent huge page mode, the huge page size in bytes); None where absent."""
    enabled = _read(THP / "enabled")
    mode = None
    if enabled:
        mode = next((w[1:-1] for w in enabled.split() if w.startswith("[")), None)
    size = _read(THP / "hpage_pmd_size")
    return mode, int(size) if size and size.isdigit() else None


def anon_huge_bytes(rollup: str = "/proc/self/smaps_rollup") -> int | None:
    """Bytes of this process's anonymous memory on huge pages (``AnonHugePages``)."""
    text = _read(Path(rollup))
    for line in (text or "").splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return None


def libc_madvise():
    """libc's ``madvise`` as ``(addr, length, advice) -> 0 or the errno``."""
    fn = ctypes.CDLL(None, use_errno=True).madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int

    def madvise(addr: int, length: int, advice: int) -> int:
        return 0 if fn(addr, length, advice) == 0 else ctypes.get_errno()

    return madvise


def advise_huge_pages(before: dict[int, int], madvise=None) -> HugePages:
    """Ask for huge pages on the memory mapped since ``before`` (``anonymous_regions()``)
    and collapse it now where the kernel can.  ``madvise`` is ``libc_madvise()``'s
    interface (a fake in tests)."""
    mode, size = thp_setting()
    if mode is None or size is None:
        return HugePages(0, None, "this kernel has no transparent huge pages")
    if mode == "never":
        return HugePages(0, None, f"transparent huge pages are off ({THP / 'enabled'} is never)")
    ranges = grown_ranges(before, anonymous_regions(), size)
    if not ranges:
        return HugePages(0, anon_huge_bytes(), "no new memory of a whole huge page")
    madvise = madvise or libc_madvise()
    advised, notes = 0, set()
    for lo, hi in ranges:
        err = madvise(lo, hi - lo, MADV_HUGEPAGE)
        if err:
            notes.add(f"madvise(MADV_HUGEPAGE) failed: {os.strerror(err)}")
            continue
        advised += hi - lo
        err = madvise(lo, hi - lo, MADV_COLLAPSE)
        if err:
            # EINVAL also where the kernel predates MADV_COLLAPSE (6.1); advised memory is
            # collapsed later by the kernel's background thread either way
            notes.add(f"part not collapsed now ({errno.errorcode.get(err, err)}): the kernel collapses it later")
    return HugePages(advised, anon_huge_bytes(), "; ".join(sorted(notes)) or None)
