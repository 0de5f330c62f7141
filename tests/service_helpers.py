"""systemd's end of the notify protocol, for the tests and the benchmarks (benchmarks/soak.py).

``NotifySocket`` binds a real ``AF_UNIX`` datagram socket (abstract by default)
whose name goes in ``NOTIFY_SOCKET``, exactly as systemd does for a
``Type=notify`` unit, and records what arrives with arrival times.

Run as a script (``python tests/service_helpers.py run --config D.toml ...``)
it is ``wavae run`` with the panel's ADC replaced at its outermost boundary:
``FilePots``, an MCP3008 whose eight pots all stand where the file named by
``WAVAE_TEST_POTS`` says (one number, 0..1023, read at each conversion: the
test turns the knobs by writing it), a new one each time the panel opens its
bus (at start, and at each restart a reload makes).  Everything above it is
the real code.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path


class NotifySocket:
    """systemd's end of the notify protocol: a bound datagram socket and what arrived, with arrival times."""

    def __init__(self, name: str | None = None):
        self.name = name or f"@wavae-test-{uuid.uuid4().hex}"
        addr = b"\0" + self.name[1:].encode() if self.name.startswith("@") else self.name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, value: str = "1", timeout: float = 60.0, after: int = 0) -> tuple[int, float, dict]:
        """Index, arrival time and fields of the first message from index ``after`` on that has key=value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(after, len(self.messages)):
                t, f = self.messages[i]
                if f.get(key) == value:
                    return i, t, f
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} within {timeout} s; got {[f for _, f in self.messages]}")

    def times(self, key: str) -> list[float]:
        return [t for t, f in self.messages if key in f]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def run_with_fake_pots(argv: list[str]) -> int:
    """``wavae run`` (its own command line) with the panel's pots where ``WAVAE_TEST_POTS`` says."""
    from wavae.device import cli_run
    from wavae.device.live import main_live
    from wavae.device.panel.fakes import FakeMcp3008

    class FilePots(FakeMcp3008):
        def xfer2(self, data: list[int]) -> list[int]:
            self.values = [int(pots.read_text())] * 8
            return super().xfer2(data)

    p = argparse.ArgumentParser(prog="service_helpers.py run")
    cli_run.add_arguments(p)
    args = p.parse_args(argv)
    pots = Path(os.environ["WAVAE_TEST_POTS"])
    return main_live(args, open_adc=FilePots)


if __name__ == "__main__":
    if sys.argv[1:2] != ["run"]:
        sys.exit("usage: WAVAE_TEST_POTS=FILE service_helpers.py run --config DEVICE.toml [wavae run options]")
    sys.exit(run_with_fake_pots(sys.argv[2:]))
