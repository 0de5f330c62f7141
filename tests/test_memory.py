"""The weights' memory on transparent huge pages (wavae.device.memory); sysfs and
madvise are faked at the kernel boundary where a test needs a given kernel."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from wavae.device import memory
from wavae.device.backends import make_backend
from wavae.device.bundle import load_bundle
from wavae.device.memory import MADV_COLLAPSE, MADV_HUGEPAGE, advise_huge_pages, anonymous_regions, grown_ranges

MiB = 2**20


def test_grown_ranges_are_new_regions_and_growth_in_whole_aligned_pages():
    before = {0x1000_0000: 0x1010_0000}  # a heap of 1 MiB
    after = {0x1000_0000: 0x1000_0000 + 7 * MiB + 5,  # the heap grew by ~6 MiB
             0x4000_0000 + 4096: 0x4000_0000 + 5 * MiB,  # a new, unaligned mapping
             0x5000_0000: 0x5000_0000 + MiB}  # new but smaller than a huge page
    got = grown_ranges(before, after, 2 * MiB)
    assert got == [(0x1000_0000 + 2 * MiB, 0x1000_0000 + 6 * MiB), (0x4000_0000 + 2 * MiB, 0x4000_0000 + 4 * MiB)]
    assert all(lo % (2 * MiB) == 0 and (hi - lo) % (2 * MiB) == 0 for lo, hi in got)


def test_anonymous_regions_see_a_new_large_allocation():
    before = anonymous_regions()
    if not before:
        pytest.skip("no /proc/self/maps on this system")
    block = np.ones(64 * MiB // 8)  # touched, so mapped
    grown = grown_ranges(before, anonymous_regions(), 2 * MiB)
    assert sum(hi - lo for lo, hi in grown) >= 32 * MiB
    del block


def _fake_sysfs(tmp_path, monkeypatch, mode: str) -> None:
    (tmp_path / "enabled").write_text(" ".join(f"[{m}]" if m == mode else m for m in ("always", "madvise", "never")))
    (tmp_path / "hpage_pmd_size").write_text(str(2 * MiB))
    monkeypatch.setattr(memory, "THP", tmp_path)


def test_advice_and_collapse_cover_the_new_memory_and_an_old_kernel_is_named(tmp_path, monkeypatch):
    if not anonymous_regions():
        pytest.skip("no /proc/self/maps on this system")
    _fake_sysfs(tmp_path, monkeypatch, "madvise")
    calls = []

    def madvise(addr, length, advice):  # a kernel before 6.1: no MADV_COLLAPSE
        calls.append((addr, length, advice))
        return errno.EINVAL if advice == MADV_COLLAPSE else 0

    before = anonymous_regions()
    block = np.ones(64 * MiB // 8)
    got = advise_huge_pages(before, madvise)
    advised = [(a, n) for a, n, adv in calls if adv == MADV_HUGEPAGE]
    assert got.advised_bytes == sum(n for _, n in advised) >= 32 * MiB
    assert {(a, n) for a, n, adv in calls if adv == MADV_COLLAPSE} == set(advised)
    assert "EINVAL" in got.note and "later" in got.note and "MiB advised" in got.describe()
    del block


def test_nothing_is_advised_where_huge_pages_are_off(tmp_path, monkeypatch):
    _fake_sysfs(tmp_path, monkeypatch, "never")

    def madvise(addr, length, advice):
        raise AssertionError("madvise called although transparent huge pages are off")

    got = advise_huge_pages({}, madvise)
    assert got.advised_bytes == 0 and "off" in got.note and got.describe().startswith("huge pages: none")
    monkeypatch.setattr(memory, "THP", tmp_path / "absent")
    assert "no transparent huge pages" in advise_huge_pages({}, madvise).note


def test_backend_on_huge_pages_computes_the_same_and_says_so(tiny_bundle):
    b = load_bundle(tiny_bundle)
    plain = make_backend(b, "onnxruntime", huge_pages=False)
    huge = make_backend(b, "onnxruntime")
    assert "huge pages" in huge.describe() and "huge pages" not in plain.describe()
    assert huge.huge_pages is not None and plain.huge_pages is None
    x = (0.2 * np.random.default_rng(0).standard_normal(4 * b.block)).astype(np.float32)
    outs = []
    for be in (plain, huge):
        state = be.init_state("encoder")
        ys = []
        for i in range(4):
            out, state = be.process("encoder", {"audio": x[i * b.block : (i + 1) * b.block]}, state)
            ys.append(out["z_mean"].copy())
        outs.append(np.concatenate(ys, -1))
    np.testing.assert_array_equal(outs[0], outs[1])
