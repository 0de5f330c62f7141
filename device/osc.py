"""OSC in over UDP (python-osc's parser and builder; our own socket loop).

``[osc]`` in the device config: ``host`` (default 127.0.0.1: this machine
only; 0.0.0.0 for every interface) and ``port`` (default 9000).  The address
space is the contract:

=====================================  ===============================================
``/wavae/control/<name> <value>``      set a control: ``/wavae/control/bias.0 1.5``,
                                       ``/wavae/control/freeze 1``, ``/wavae/control/bias``
                                       with one number per latent dimension
``/wavae/preset/load <name>``          load a saved preset (the engine ramps to it)
``/wavae/preset/save <name>``          save every control and the bundle's name
``/wavae/bundle <name>``               switch bundle, live (``wavae.device.switch``); replies
                                       ``/wavae/bundle <json>``: ``{"bundle", "ok", "error"}``
``/wavae/status``                      replies to the sender: ``/wavae/status <json>``
=====================================  ===============================================

The status JSON holds the control values, the bundle, the preset, the uptime,
the refusal counts, and what the instrument's status provider adds (xruns
total and unrecovered, latency, load; see ``wavae.device.actions``).

A malformed packet, an unknown address or control, a value of the wrong
type or out of range is counted (``Actions.rejected``, by reason) and logged,
never applied, and never stops the server.  python-osc's own servers are not
used: their dispatcher drops unparsable packets without telling, and sleeps
on a bundle's future time tag inside the receive loop.  Here a bundle's
messages are applied at once, in order.  The loop runs on its own thread,
blocking in ``recvfrom`` with a short timeout, and only writes controls
through ``Actions``; the socket is bound in ``start`` so a port in use is a
clear error at start-up.  Under a realtime audio loop that thread runs at the
lowest realtime priority (``realtime.gil_sharer_priority``): it holds the GIL
the audio thread needs while it answers a ``/wavae/status`` (the web page asks
once a second), and at an ordinary priority a busy process on the same board
could preempt it there and hold the audio thread off for as long as it runs.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

from wavae.errors import WavaeError

from .actions import Actions, Rejected
from .controls import ControlError
from .realtime import gil_sharer_priority

log = logging.getLogger("wavae.device.osc")

PREFIX = "/wavae/"
MAX_PACKET = 65507


class OscError(WavaeError, OSError):
    """The OSC port cannot be opened (in use, or a host this machine does not have)."""


def import_osc(extra: str = "panel", error: type[WavaeError] = OscError):
    """python-osc's packet and builder modules (an optional dependency), or ``error``
    naming the extra that installs it."""
    try:
        from pythonosc import osc_message_builder, osc_packet
    except ImportError as e:
        raise error(f"python-osc is not installed ({e}): pip install 'wavae-edge[{extra}]'") from None
    return osc_packet, osc_message_builder


class OscServer:
    def __init__(self, actions: Actions, host: str = "127.0.0.1", port: int = 9000):
        self.actions, self.host, self.port = actions, host, port
        self._packet, self._builder = import_osc()
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.received = 0  # messages
        self.applied = 0
        self.replies = 0

    @property
    def thread_id(self) -> int | None:
        """The receiving thread's kernel id while it runs (None when stopped)."""
        return self._thread.native_id if self._thread is not None else None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2] if self.sock is not None else (self.host, self.port)

    def start(self) -> "OscServer":
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OscError(
                f"cannot listen for OSC on {self.host}:{self.port}: {e.strerror}; is another program on that "
                f"port (`ss -ulpn`)? Change [osc] port, or host to an address of this machine"
            ) from None
        sock.settimeout(0.2)
        self.sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wavae-osc", daemon=True)
        self._thread.start()
        log.info("OSC: listening on %s:%d", *self.address)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _run(self) -> None:
        gil_sharer_priority()  # not preempted by other processes while it holds the GIL the audio thread needs
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(MAX_PACKET)
            except socket.timeout:
                continue
            except OSError as e:
                if not self._stop.is_set():
                    log.warning("OSC: receive failed: %s", e)
                    self._stop.wait(0.5)
                continue
            self.handle_packet(data, sender)

    # -- one packet -------------------------------------------------------------------
    def handle_packet(self, data: bytes, sender: Any) -> None:
        try:
            messages = [m.message for m in self._packet.OscPacket(data).messages]
        except self._packet.ParseError as e:
            self.actions.refuse("OSC", "osc.malformed", f"a packet of {len(data)} bytes from {sender[0]}: {e}")
            return
        for msg in messages:
            self.received += 1
            self.handle(msg.address, list(msg.params), sender)

    def handle(self, address: str, args: list[Any], sender: Any) -> None:
        a = self.actions
        where = f"{address} {args!r} from {sender[0]}"
        try:
            if address.startswith(PREFIX + "control/"):
                name = address[len(PREFIX + "control/"):]
                if name != "bias":
                    try:
                        a.controls.spec(name)
                    except ControlError as e:
                        a.refuse("OSC", "osc.unknown_control", f"{where}: {e}")
                        return
                if name == "bias":
                    value: Any = args
                elif len(args) == 1:
                    value = args[0]
                else:
                    a.refuse("OSC", "osc.bad_value", f"{where}: expected exactly one value")
                    return
                try:
                    a.set(name, value)
                except Rejected as e:
                    a.refuse("OSC", "osc.bad_value", f"{where}: {e}")
                    return
            elif address in (PREFIX + "preset/load", PREFIX + "preset/save", PREFIX + "bundle"):
                if len(args) != 1 or not isinstance(args[0], str):
                    a.refuse("OSC", "osc.bad_value", f"{where}: expected one name (a string)")
                    return
                if address.endswith("load"):
                    a.load_preset(args[0])
                elif address.endswith("save"):
                    a.save_preset(args[0])
                else:
                    self.select_bundle(args[0], sender, where)
                    return
            elif address == PREFIX + "status":
                self.reply(sender, address, json.dumps(a.status()))
                return
            else:
                a.refuse("OSC", "osc.unknown_address", f"{where}: the addresses are /wavae/control/<name>, "
                                                       f"/wavae/preset/load, /wavae/preset/save, /wavae/bundle, /wavae/status")
                return
        except Rejected as e:
            a.refuse("OSC", "osc.refused", f"{where}: {e}")
            return
        self.applied += 1

    def select_bundle(self, name: str, sender: Any, where: str) -> None:
        """``/wavae/bundle``: the sender hears whether the switch started (the load itself runs in
        the background: a later failure shows in ``/wavae/status`` under ``bundle_switch``)."""
        a = self.actions
        try:
            a.select_bundle(name)
        except Rejected as e:
            a.refuse("OSC", "osc.refused", f"{where}: {e}")
            self.reply(sender, PREFIX + "bundle", json.dumps({"bundle": name, "ok": False, "error": str(e)}))
            return
        self.applied += 1
        self.reply(sender, PREFIX + "bundle", json.dumps({"bundle": name, "ok": True, "error": None}))

    def reply(self, sender: Any, address: str, text: str) -> None:
        b = self._builder.OscMessageBuilder(address=address)
        b.add_arg(text)
        try:
            self.sock.sendto(b.build().dgram, sender)
            self.replies += 1
        except OSError as e:
            log.warning("OSC: cannot reply to %s: %s", sender, e)
