"""The web page's line to the running instrument: OSC over UDP (python-osc's builder and parser).

The instrument listens on its ``[osc]`` port; its address space is the
contract (``wavae.device.osc`` on the instrument's side)::

    /wavae/control/<name> <value>     /wavae/control/bias <v0> <v1> ...
    /wavae/preset/load <name>         /wavae/preset/save <name>
    /wavae/bundle <name>
    /wavae/status                     -> reply to the sender: /wavae/status <json>

One UDP socket on the web server's event loop both sends and receives, so the
instrument's replies come back to it.  ``latest`` holds the last status and
when it came; the page is told "not answering" once no reply has come for
``STALE_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from typing import Any, Callable

from wavae.errors import WavaeError

from ..osc import PREFIX, import_osc

log = logging.getLogger("wavae.device.web")

STALE_S = 3.0


class OscLinkError(WavaeError, OSError):
    """The OSC socket cannot be opened, or python-osc is missing."""


def _osc():
    """(builder, packet) modules of python-osc, through the instrument's own import."""
    packet, builder = import_osc("web", OscLinkError)
    return builder, packet


def build(address: str, args: list[Any]) -> bytes:
    """One OSC message; floats as float32, ints as int32, strings, booleans as T/F."""
    builder_mod, _ = _osc()
    b = builder_mod.OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def parse(data: bytes) -> list[tuple[str, list[Any]]]:
    """The messages of an OSC packet (bundles flattened) as ``(address, args)``."""
    _, packet_mod = _osc()
    return [(m.message.address, list(m.message.params)) for m in packet_mod.OscPacket(data).messages]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, link: "OscLink"):
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link._received(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: nobody listens (yet)
        self.link.errors += 1


class OscLink:
    def __init__(self, host: str, port: int, on_status: Callable[[dict[str, Any]], None] | None = None):
        self.target = (host, port)
        self.on_status = on_status
        self.transport: asyncio.DatagramTransport | None = None
        self.latest: dict[str, Any] | None = None
        self.latest_at = 0.0
        self.sent = 0
        self.errors = 0
        _osc()  # a missing python-osc is an error at start-up, not at the first knob

    async def open(self) -> "OscLink":
        loop = asyncio.get_running_loop()
        local = "::1" if ":" in self.target[0] else "127.0.0.1"
        if self.target[0] not in ("127.0.0.1", "::1"):
            local = "::" if ":" in self.target[0] else "0.0.0.0"
        try:
            self.transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(local, 0))
        except OSError as e:
            raise OscLinkError(f"cannot open a UDP socket for OSC: {e.strerror}") from None
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def send(self, address: str, *args: Any) -> None:
        if self.transport is None:
            raise OscLinkError("the OSC link is closed")
        self.transport.sendto(build(address, list(args)), self.target)
        self.sent += 1

    def set_control(self, name: str, value: Any) -> None:
        if isinstance(value, list):
            self.send(PREFIX + "control/" + name, *[float(v) for v in value])
        else:
            self.send(PREFIX + "control/" + name, value)

    def ask_status(self) -> None:
        self.send(PREFIX + "status")

    @property
    def answering(self) -> bool:
        return self.latest is not None and time.monotonic() - self.latest_at < STALE_S

    def _received(self, data: bytes, addr: Any) -> None:
        try:
            messages = parse(data)
        except (_osc()[1].ParseError, ValueError, IndexError, struct.error) as e:  # a bad packet: dropped, counted
            self.errors += 1
            log.debug("web: unparsable OSC packet from %s: %s", addr, e)
            return
        for address, args in messages:
            if address == PREFIX + "status" and args and isinstance(args[0], str):
                try:
                    status = json.loads(args[0])
                except json.JSONDecodeError:
                    self.errors += 1
                    continue
                if isinstance(status, dict):
                    self.latest, self.latest_at = status, time.monotonic()
                    if self.on_status is not None:
                        self.on_status(status)
