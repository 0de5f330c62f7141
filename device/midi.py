"""MIDI in (mido + python-rtmidi): CCs to controls through the panel mapping file, program change to presets.

``[midi]`` in the device config: ``port`` (part of the input port's name; ""
takes the first), ``api`` ("alsa", the ALSA sequencer on the device; "jack"
under a JACK server) and ``virtual`` (open our own port named ``port`` for
other programs to connect to).  The CC assignments live in the mapping file
(``[[midi_cc]]``, ``[midi_program]``), so a knob and a fader share one
vocabulary:

- a continuous target maps 0..127 through its range, curve and invert;
- a toggle (``freeze``, ``generative``, ``loudness_source``) is on at 64 and above;
- an action (``preset.next`` ...) fires when the value rises through 64;
- program change N loads preset N (sorted by name, from 0) or selects bundle N.

rtmidi calls ``handle`` on its own thread; handlers only go through
``Actions``.  A port that is missing (controller unplugged, no ALSA
sequencer) is logged once and looked for again every ``retry_s``; a port that
disappears is noticed the same way.  Unmapped CCs are counted, not logged:
controllers send many.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from wavae.errors import WavaeError

from .actions import Actions, Rejected
from .panel.mapping import ACTIONS, MidiCCSpec
from .realtime import ordinary_priority

log = logging.getLogger("wavae.device.midi")

BACKENDS = {"alsa": "mido.backends.rtmidi/LINUX_ALSA", "jack": "mido.backends.rtmidi/UNIX_JACK"}


class MidiError(WavaeError, OSError):
    """The MIDI backend or port cannot be opened."""


def midi_backend(api: str):
    try:
        import mido
        import rtmidi  # noqa: F401  (mido's backend needs it; say so here, not deep inside mido)
    except ImportError as e:
        raise MidiError(f"MIDI needs mido and python-rtmidi ({e}): pip install 'wavae-edge[panel]'") from None
    return mido.Backend(BACKENDS[api], load=True)


class MidiInput:
    def __init__(self, actions: Actions, ccs: tuple[MidiCCSpec, ...] = (), program_selects: str = "preset",
                 port: str = "", api: str = "alsa", virtual: bool = False, retry_s: float = 2.0):
        self.actions, self.port_hint, self.api, self.virtual = actions, port, api, virtual
        self.program_selects = program_selects
        self.retry_s = retry_s
        self._ccs: dict[tuple[int, int | None], MidiCCSpec] = {(c.cc, c.channel): c for c in ccs}
        self._last: dict[tuple[int, int], int] = {}  # (channel, cc) -> last value, for actions
        self.port = None
        self.port_name: str | None = None
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        self.applied = 0
        self.unmapped = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "MidiInput":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wavae-midi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except (OSError, RuntimeError) as e:  # rtmidi errors derive from RuntimeError
                log.debug("MIDI: closing %s: %s", self.port_name, e)
            self.port = None

    def _run(self) -> None:
        ordinary_priority()  # before rtmidi starts its own thread from this one
        while not self._stop.is_set():
            if self.port is None:
                try:
                    self.open()
                except MidiError as e:
                    if self._failed != str(e):
                        log.warning("MIDI in off: %s; the instrument keeps playing, looking again every %.1f s",
                                    e, self.retry_s)
                    self._failed = str(e)
            elif not self.virtual and not self._still_there():
                log.warning("MIDI: port %s went away; looking for it again", self.port_name)
                self._failed = f"port {self.port_name} went away"
                self._close()
            self._stop.wait(self.retry_s)

    def _still_there(self) -> bool:
        try:
            return self.port_name in self._backend.get_input_names()
        except (OSError, RuntimeError):
            return False

    def open(self) -> None:
        """Open the port (called by the thread; tests may call it directly)."""
        try:
            self._backend = backend = midi_backend(self.api)
            if self.virtual:
                name = self.port_hint or "wavae"
                self.port = backend.open_input(name, virtual=True, callback=self.handle)
            else:
                names = backend.get_input_names()
                match = [n for n in names if self.port_hint.lower() in n.lower()]
                if not match:
                    have = ", ".join(names) if names else "none"
                    raise MidiError(f"no MIDI input port matching {self.port_hint!r} (ports: {have})")
                name = match[0]
                self.port = backend.open_input(name, callback=self.handle)
        except (OSError, RuntimeError, SystemError) as e:  # rtmidi: RuntimeError subclasses; no seq: SystemError
            raise MidiError(f"cannot open MIDI input on the {self.api} API: {e}") from None
        self.port_name = getattr(self.port, "name", name)
        if self._failed is not None:
            log.info("MIDI: back")
        self._failed = None
        log.info("MIDI: listening on %s (%s)", self.port_name, self.api)

    # -- messages (rtmidi's thread) ----------------------------------------------------------
    def handle(self, msg: Any) -> None:
        self.received += 1
        try:
            if msg.type == "control_change":
                self._cc(msg.channel + 1, msg.control, msg.value)
            elif msg.type == "program_change":
                if self.program_selects == "preset":
                    self.actions.preset_by_number(msg.program)
                else:
                    self.actions.bundle_by_number(msg.program)
                self.applied += 1
        except Rejected as e:
            self.actions.refuse("MIDI", "midi.refused", f"{msg}: {e}")

    def _cc(self, channel: int, cc: int, value: int) -> None:
        spec = self._ccs.get((cc, channel)) or self._ccs.get((cc, None))
        last = self._last.get((channel, cc))
        self._last[(channel, cc)] = value
        if spec is None:
            self.unmapped += 1
            return
        t = spec.target
        if spec.curve is not None:
            self.actions.set(t, spec.curve.to_value(value / 127.0))
        elif t in ACTIONS:
            if value >= 64 and (last is None or last < 64):
                self.actions.do(t)
            else:
                return
        elif t == "loudness_source":
            self.actions.set(t, "manual" if value >= 64 else "input")
        else:
            self.actions.set(t, value >= 64)
        self.applied += 1
