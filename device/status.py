"""The instrument's status file, for the technician: ``wavae status`` reads it.

While the live loop runs, the service thread (``wavae.device.service``)
rewrites ``status.json`` in the runtime folder once a second, atomically
(``wavae.fileio``: a reader sees the previous file or the next one, never half
of one):

- the folder is ``$RUNTIME_DIRECTORY`` (systemd sets it from the unit's
  ``RuntimeDirectory=wavae``: ``/run/wavae``); a run from a shell writes none;
- what is in it: process id, state, uptime, model and preset, xruns (total and
  unrecovered), late periods, device losses, latency (as configured, and with
  the I/O share as the loop measured it last), CPU load, RSS, the
  size of the locked mappings (``VmLck``: with ``MCL_ONFAULT`` more than is
  resident), the SoC temperature where ``/sys/class/thermal`` has one, and the
  service's restart count (kept in the runtime folder, which systemd keeps
  across restarts with ``RuntimeDirectoryPreserve=restart``).

``read_status`` refuses a file that is missing, unreadable, from a process that
is gone, or older than ``STALE_AFTER_S``: each says what the technician should
look at next.  Nothing here imports numpy or the engine: ``wavae status`` must
answer on a loaded Pi in well under a second.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger("wavae.device.status")

STATUS_NAME = "status.json"
STARTS_NAME = "starts"
DEFAULT_RUNTIME_DIR = Path("/run/wavae")
STATUS_VERSION = 1
STALE_AFTER_S = 5.0  # the file is rewritten every second; five missed writes mean a stopped or hung service
THERMAL_ROOT = Path("/sys/class/thermal")
# thermal zone types that are the SoC / CPU on the boards we know (Pi: cpu-thermal; Jetson: cpu-thermal,
# soc0-thermal ..; generic ARM: soc_thermal); otherwise the first zone that reads
_SOC_ZONE_HINTS = ("cpu", "soc")


class StatusError(WavaeError, RuntimeError):
    """No usable status file: the instrument is not running, not as a service, or hung."""


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the running service writes its status: ``$RUNTIME_DIRECTORY``, else nowhere.

    Only the service writes a status file: a second instance started from a
    shell (as root, to try something) must not overwrite the service's file or
    count itself as one of its restarts.
    """
    env = os.environ if environ is None else environ
    rd = env.get("RUNTIME_DIRECTORY", "")
    return Path(rd.split(":")[0]) if rd else None  # systemd joins several RuntimeDirectory= entries with ':'


def default_status_path(environ: Mapping[str, str] | None = None) -> Path:
    """The file ``wavae status`` reads by default (also where a service without its env would write)."""
    env = os.environ if environ is None else environ
    rd = env.get("RUNTIME_DIRECTORY", "")
    return (Path(rd.split(":")[0]) if rd else DEFAULT_RUNTIME_DIR) / STATUS_NAME


# ----------------------------------------------------------------------------
# process measurements
# ----------------------------------------------------------------------------
def soc_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """The SoC temperature in °C from the kernel's thermal zones, or None when the board has none."""
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    readings: list[tuple[str, float]] = []
    for z in zones:
        try:
            kind = (z / "type").read_text().strip().lower()
            milli = int((z / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # a zone that reads no value (sensor off, permission) is skipped
        readings.append((kind, milli / 1000.0))
    for kind, celsius in readings:
        if any(h in kind for h in _SOC_ZONE_HINTS):
            return celsius
    return readings[0][1] if readings else None


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_started_at() -> float:
    """When this process started, in Unix time (``/proc/self/stat`` field 22 against ``/proc/uptime``)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()  # not Linux-like /proc: the caller's "now" is the best there is
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


class ProcessProbe:
    """CPU load, RSS and locked memory of this process, and the SoC temperature.

    ``cpu_percent`` is the process's CPU time over the wall time since the
    previous sample, in percent of one core (a process busy on two cores reads 200).
    """

    def __init__(self, thermal_root: Path = THERMAL_ROOT):
        self.thermal_root = thermal_root
        self._t = time.monotonic()
        self._cpu = self._cpu_s()

    @staticmethod
    def _cpu_s() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, Any]:
        now, cpu = time.monotonic(), self._cpu_s()
        dt = now - self._t
        load = 100.0 * (cpu - self._cpu) / dt if dt > 0 else 0.0
        self._t, self._cpu = now, cpu
        rss = _proc_status_kb("VmRSS")
        locked = _proc_status_kb("VmLck")
        temp = soc_temperature(self.thermal_root)
        return {
            "cpu_percent": round(load, 1),
            "rss_mb": round(rss / 1024.0, 1) if rss is not None else None,
            "locked_mb": round(locked / 1024.0, 1) if locked is not None else None,
            "soc_temp_c": round(temp, 1) if temp is not None else None,
        }


# ----------------------------------------------------------------------------
# the file
# ----------------------------------------------------------------------------
def count_start(folder: Path) -> int:
    """Count this start in ``folder/starts`` and return how many starts came before it (the restarts).

    The runtime folder survives service restarts (``RuntimeDirectoryPreserve=restart``)
    and not a stop or a reboot, so this counts the restarts since the service was last started.
    A missing or unreadable counter starts again from zero.
    """
    path = folder / STARTS_NAME
    try:
        before = int(path.read_text().strip())
    except (OSError, ValueError):
        before = 0
    atomic_write_bytes(path, f"{before + 1}\n".encode())
    return before


class StatusWriter:
    """Writes ``status.json`` atomically; ``write`` never raises (the audio matters more than the file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._failed_logged = False
        self.writes = 0

    def write(self, status: dict[str, Any]) -> bool:
        try:
            atomic_write_json(self.path, status)
        except OSError as e:
            if not self._failed_logged:
                self._failed_logged = True
                log.warning(
                    "cannot write the status file %s (%s); `wavae status` will not see this run (logged once)",
                    self.path, e,
                )
            return False
        self.writes += 1
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process (the service user's): it exists
        return True
    return True


def read_status(path: Path, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> dict[str, Any]:
    """Read a status file, refusing one that is missing, unreadable, orphaned or stale (``StatusError``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StatusError(
            f"no status file at {path}: the instrument is not running as a service. "
            f"Check `systemctl status wavae` and `journalctl -u wavae -n 50`"
        ) from None
    except OSError as e:
        raise StatusError(f"cannot read the status file {path}: {e.strerror}; try `sudo wavae status`") from None
    try:
        status = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StatusError(f"the status file {path} is not JSON; it is rewritten every second: try again") from None
    if not isinstance(status, dict) or status.get("version") != STATUS_VERSION:
        raise StatusError(f"the status file {path} is not a version-{STATUS_VERSION} wavae status file")
    pid, written = status.get("pid"), status.get("written_at")
    if not isinstance(pid, int) or not isinstance(written, (int, float)):
        raise StatusError(f"the status file {path} has no pid or written_at")
    if status.get("state") == "stopped":
        raise StatusError(f"the instrument (pid {pid}) has stopped; `journalctl -u wavae -n 50` says why")
    if not _alive(pid):
        raise StatusError(
            f"the instrument that wrote {path} (pid {pid}) is no longer running: "
            f"check `systemctl status wavae` and `journalctl -u wavae -n 50`"
        )
    age = (time.time() if now is None else now) - written
    if age > stale_after_s:
        raise StatusError(
            f"the status file {path} is {age:.0f} s old (rewritten every second): the instrument (pid {pid}) "
            f"is hung or stopping; the watchdog restarts a hung one, see `journalctl -u wavae -n 50`"
        )
    return status


def _fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def format_status(st: dict[str, Any]) -> str:
    """The status as a few aligned lines for a terminal."""
    rows = [
        ("state", f"{st.get('state')} (pid {st.get('pid')}, up {_duration(st.get('uptime_s', 0))}, "
                  f"{st.get('restarts', 0)} restarts)"),
        ("model", f"{st.get('model')} (preset {st.get('preset')}, {st.get('precision')}, {st.get('backend')})"),
        ("config", str(st.get("config"))),
        ("audio", f"{_fmt(st.get('audio_s'), ' s', 0)} played, threading {st.get('threading')}, "
                  f"realtime {'on' if st.get('realtime') else 'off'}"),
        ("latency", f"{_fmt(st.get('latency_ms'), ' ms')} (measured {_fmt(st.get('latency_measured_ms'), ' ms')})"),
        ("xruns", f"{st.get('xruns')} total, {st.get('xruns_unrecovered')} unrecovered; "
                  f"{st.get('late_periods')} late periods; device lost {st.get('device_lost')} times"),
        ("cpu", f"{_fmt(st.get('cpu_percent'), ' %')} of one core"),
        ("memory", f"RSS {_fmt(st.get('rss_mb'), ' MB')}, locked {_fmt(st.get('locked_mb'), ' MB')}"),
        ("soc temp", _fmt(st.get("soc_temp_c"), " °C")),
    ]
    if st.get("last_reload"):
        rows.append(("reload", str(st["last_reload"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
