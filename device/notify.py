"""systemd's notify protocol, and a watchdog fed only by the audio loop's progress.

``Type=notify`` services tell systemd how they are doing by sending datagrams
of ``KEY=VALUE`` lines to the socket named in ``NOTIFY_SOCKET`` (sd_notify(3);
a stable interface, a dozen lines over ``AF_UNIX``/``SOCK_DGRAM``, so no
libsystemd binding is needed).  A leading ``@`` names a socket in the abstract
namespace.  Without ``NOTIFY_SOCKET`` (a shell, a test, another init) every
call is a no-op, so the instrument runs the same with or without systemd.

What the instrument sends (``wavae.device.service`` decides when):

- ``READY=1`` once the first model block has been played, not before: a unit
  that is "active" makes sound.
- ``STATUS=...`` every few seconds: model, preset, xruns, latency (shown by
  ``systemctl status``).
- ``WATCHDOG=1`` (``Watchdog``): at half of ``WATCHDOG_USEC``, and only when
  the audio loop's progress counter moved since the previous ping, so a hung
  loop stops the pings and systemd restarts the service.
- ``RELOADING=1`` ... ``READY=1`` around a SIGHUP reload; ``STOPPING=1`` on
  shutdown.

Nothing here runs on the audio path: the loop increments its counters, an
ordinary thread reads them and sends.  A send that fails (systemd restarted,
socket gone) is logged once and otherwise ignored: the audio must not stop
because its supervisor cannot be told about it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger("wavae.device.notify")


def _address(name: str) -> str | bytes:
    """``NOTIFY_SOCKET`` -> a socket address; ``@name`` is ``\\0name`` in the abstract namespace."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """sd_notify over ``NOTIFY_SOCKET`` (``socket=None`` reads the environment)."""

    def __init__(self, socket_name: str | None = None, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        name = socket_name if socket_name is not None else env.get("NOTIFY_SOCKET", "")
        self.name = name or None
        self._sock: socket.socket | None = None
        self._failed_logged = False
        self.sent = 0
        if self.name is not None:
            if not (self.name.startswith("/") or self.name.startswith("@")):
                log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying systemd", self.name)
                self.name = None
            else:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True when it went out (False when disabled or failed)."""
        if self._sock is None:
            return False
        msg = "\n".join(f.replace("\n", " ") for f in fields)  # one line per field
        try:
            self._sock.sendto(msg.encode(), _address(self.name))
        except OSError as e:
            if not self._failed_logged:
                self._failed_logged = True
                log.warning("cannot notify systemd at %s (%s); going on without it (logged once)", self.name, e)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones ignore it
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog checks (half of ``WATCHDOG_USEC``), or None when no watchdog is asked for.

    ``WATCHDOG_PID``, when set, must be this process: a child started by the
    service must not feed its parent's watchdog.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds: no watchdog pings", usec)
        return None
    if value <= 0:
        return None
    return value / 2e6


class Watchdog:
    """``WATCHDOG=1`` every ``interval_s``, but only when ``progress()`` changed since the last ping.

    ``progress`` reads a counter the audio loop increments (periods written,
    device reopen attempts); ``poll(now)`` is called by the service thread as
    often as it likes.  A loop stuck anywhere (a hung backend, a deadlock, a
    stall longer than the watchdog) leaves the counter still: the pings stop
    and systemd restarts the service after ``WatchdogSec``.
    """

    def __init__(self, notifier: Notifier, interval_s: float, progress: Callable[[], int]):
        if not interval_s > 0:
            raise ValueError(f"watchdog interval must be positive, got {interval_s!r}")
        self.notifier, self.interval_s, self.progress = notifier, interval_s, progress
        self._last = progress()
        self._due = time.monotonic() + interval_s
        self.pings = 0
        self.missed = 0  # checks at which the loop had made no progress
        self._stuck_logged = False

    def poll(self, now: float | None = None) -> bool:
        """Ping if due and the loop moved; True when a ping went out."""
        now = time.monotonic() if now is None else now
        if now < self._due:
            return False
        self._due = now + self.interval_s
        value = self.progress()
        if value == self._last:
            self.missed += 1
            if not self._stuck_logged:
                self._stuck_logged = True
                log.error("the audio loop made no progress for %.1f s: no watchdog ping (systemd restarts the "
                          "service if this goes on)", self.interval_s)
            return False
        self._last = value
        self._stuck_logged = False
        self.pings += 1
        return self.notifier.watchdog()
