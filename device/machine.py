"""Facts about the machine and this process: CPU, memory, clocks, versions.

Read from ``/proc`` where Linux has it (a Pi, a Jetson, a desktop) and ``None``
elsewhere, never an error: a report with one figure missing is still a report.
The profiler stamps every report with these, and the benchmarks name the CPU
they ran on with ``cpu_name``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def process_age_s() -> float | None:
    """Seconds since this process started, from ``/proc/self/stat`` (Linux).

    ``starttime`` is in clock ticks since boot (``CLK_TCK``: see
    ``clock_tick_s`` for the resolution) and is compared with
    ``CLOCK_BOOTTIME``.  None where ``/proc`` is absent.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read().decode()
        # the command name (field 2) may hold spaces; fields after it follow ')'
        after = stat[stat.rindex(")") + 2 :].split()
        start_ticks = int(after[19])  # field 22 overall
        hz = os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / hz
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def clock_tick_s() -> float:
    """The resolution of ``process_age_s``: one clock tick (1 / ``CLK_TCK``)."""
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


def memory_mib() -> dict[str, float | None]:
    """Resident set size now (``VmRSS``) and its peak (``VmHWM``), in MiB."""
    out: dict[str, float | None] = {"rss_mib": None, "rss_peak_mib": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["rss_peak_mib"] = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_temperature_c() -> float | None:
    """The hottest thermal zone now, in degrees C (Pi: ``cpu-thermal``; Jetson: ``cpu-thermal``,
    ``gpu-thermal``, ...); None where ``/sys/class/thermal`` has none (a container, a VM)."""
    best = None
    try:
        zones = sorted(os.listdir("/sys/class/thermal"))
    except OSError:
        return None
    for zone in zones:
        if not zone.startswith("thermal_zone"):
            continue
        try:
            with open(f"/sys/class/thermal/{zone}/temp") as f:
                t = int(f.read().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -40.0 < t < 150.0 and (best is None or t > best):
            best = t
    return best


class CpuUsage:
    """Whole-machine CPU use between two calls of ``percent``, from ``/proc/stat``."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def percent(self) -> float | None:
        """Percent of all cores busy since the previous call (None without /proc or on the first tick)."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return 100.0 * (total - idle) / total


def cpu_name() -> str:
    """The CPU (x86), or the board (Raspberry Pi, Jetson), from /proc/cpuinfo."""
    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    # x86: "model name"; Raspberry Pi: "Model" (the board) or "Hardware"; Jetson/arm: "model name" may lack
    for key in ("model name", "model", "hardware", "cpu part"):
        v = info.get(key, "")
        if v and not v.isdigit():
            cpu = v
            break
    return cpu


def machine_info() -> dict[str, Any]:
    """Host, OS, CPU and the versions of what runs the model (a report's ``machine``)."""
    versions: dict[str, str | None] = {}
    for mod in ("numpy", "onnxruntime", "soxr"):
        m = sys.modules.get(mod)  # only what this process loaded: a version never imports a runtime
        versions[mod] = getattr(m, "__version__", None) if m is not None else None
    try:
        wavae_version = version("wavae-edge")
    except PackageNotFoundError:
        wavae_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_available": affinity,
        "python": platform.python_version(),
        "wavae": wavae_version,
        **versions,
    }


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second (a report's ``created``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["CpuUsage", "clock_tick_s", "cpu_name", "cpu_temperature_c", "machine_info", "memory_mib", "process_age_s", "utc_now"]
