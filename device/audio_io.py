"""ALSA duplex audio through pyalsaaudio: one capture and one playback PCM.

``AlsaDuplex.run(process, ...)`` reads one period from the capture PCM, hands it
to ``process`` (float32 ``[period, channels_in]`` -> float32
``[period, channels_out]``; the engine, or the worker hand-off of
``wavae.device.live``) and writes the result to the playback PCM, until asked to
stop.  Everything comes from ``[audio]`` and ``[service]`` of the device config:
PCM names, rate, period size, period count, channels, sample format.

How the PCMs are driven
-----------------------
- Both PCMs are opened non-blocking and waited on with ``poll()`` on their
  descriptors, with a timeout.  A blocking ``read()`` never returns once a
  device is gone (measured with the JACK plugin: it hangs forever when the
  server dies); a timeout turns that into "device lost".  After each wake-up
  ``polldescriptors_revents()`` is called: plugin PCMs (ioplug, e.g. jack)
  need it to clear their wake-up pipe.
- Start-up: the playback PCM is pre-filled with ``prefill_periods`` periods of
  silence (it starts on that write), then the first capture read starts
  capture.  From then on the capture stream runs ``prefill_periods x
  period_size`` frames ahead of the playback stream: that offset is the I/O
  share of the round trip (``io_latency``), and what is left of the pre-fill
  when a captured period is complete, ``(prefill_periods - 1) x period_size``
  frames, is all the time a period may take to process before playback runs
  dry (on a DMA-driven card; the JACK plugin consumes whole periods at its
  cycle start and gives one period more).
- Partial reads: a non-blocking ``read()`` may return less than a period, and
  pyalsaaudio always asks for a whole one, so the next read can return more
  than the period still needs.  Reads gather in a two-period buffer; what
  completes a period is used, the rest starts the next one (nothing is lost).
- xrun (``read()``/``write()`` return ``-EPIPE``): both streams are put back
  in their start-up state, so the latency after an xrun is the latency before
  it.  Both PCMs are dropped (the capture data queued during the stall and the
  period in hand are stale), the pre-fill is written once, and reading goes on:
  the next capture read restarts capture.  One stall is one xrun (a playback
  underrun, or a capture overrun if that is seen first), counted and logged; it
  counts as recovered once the next period has been written in full
  (``IOStats.xruns_unrecovered`` is what never got there).  Without the drop,
  the pre-fill written after an underrun would pile up on the audio still
  queued and the round trip would grow by a period or two for good.
- Drift (the streams move apart without an xrun): the offset between them can
  also change where alsa-lib reports nothing.  Through JACK (or PipeWire) each
  PCM is a client of its own, and a client that misses a cycle under load
  (jackd logs "client ... was not finished") loses that period while the other
  stream goes on; and the two streams start one after the other (the pre-fill
  write starts playback, the next read starts capture), so a cycle that falls
  between them starts them a period apart.  So after every captured period the
  loop compares the frames queued for playback plus those captured and not yet
  processed with what the pre-fill leaves, ``(prefill_periods - 1) x
  period_size``; lateness moves frames from one to the other and leaves the sum
  alone.  A difference of whole periods that persists for ``ALIGN_CONFIRM_PERIODS``
  periods of wall time (a measurement between the two clients' halves of one
  cycle lasts less than a cycle) is corrected: playback short (the slack gone)
  gets the missing periods of silence, playback a period long (the round trip
  grown) loses the captured period in hand.  Counted (``IOStats.realigns``) and
  logged.  That sum plus the period in hand is the capture-to-playback
  distance as measured (``IOStats.io_distance``, ``prefill_periods x
  period_size`` when aligned): the status reports it as the measured latency.  Unpaced PCMs (the ``file`` plugin) report an empty playback queue and
  a full capture buffer, which is never a drift.
- Lost device (USB interface unplugged: I/O fails with ENODEV and the like, or
  no audio arrives for ``io_timeout_s``): both PCMs are closed (playback
  dropped, not drained), nothing is processed or output, and both are reopened
  every ``reopen_interval_s``.  Once back, ``on_reopen`` runs (the live loop
  resets the engine state) and audio resumes.  Nothing raises.
- A PCM that cannot be opened at start raises ``AudioDeviceError`` naming the
  PCM and the config key and pointing at ``aplay -L`` / ``arecord -L``.  Any
  alsa-lib error while opening (``PCM()``, ``info()``, ``polldescriptors()``,
  e.g. a USB device that vanishes half-way) closes what was already opened and
  raises ``AudioDeviceError``; during a reopen that is one more failed attempt.

Sample formats S16_LE, S32_LE and FLOAT_LE are converted to and from float32
into buffers allocated once.  pyalsaaudio's ``read()`` returns a fresh
``bytes`` object per period (it has no read-into); that is the one per-period
allocation left, and it is small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import select
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from wavae.errors import WavaeError

from .config import AudioConfig, ServiceConfig

try:  # pyalsaaudio is an optional extra (an sdist that needs libasound2-dev)
    import alsaaudio
except ImportError:  # reported when a PCM is first opened
    alsaaudio = None  # type: ignore[assignment]

log = logging.getLogger("wavae.device.audio")

EPIPE = -errno.EPIPE
_POLL_SLICE_S = 0.1  # longest single poll(), so a stop request is seen quickly
ALIGN_CONFIRM_PERIODS = 4  # a drift between the streams must persist this long (wall time) to be corrected


class AudioDeviceError(WavaeError, RuntimeError):
    """A PCM cannot be opened, or does not accept the configured settings."""


class _DeviceLost(Exception):
    """I/O failed or stalled mid-run; the loop closes and reopens the PCMs."""


class _Stopped(Exception):
    """A stop was requested while waiting on a PCM."""


# ----------------------------------------------------------------------------
# sample formats
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleFormat:
    name: str
    dtype: np.dtype
    scale: float  # float value 1.0 <-> this integer value (1.0 for float formats)
    lo: float
    hi: float

    @property
    def alsa(self) -> int:
        return getattr(alsaaudio, "PCM_FORMAT_" + self.name)


FORMATS: dict[str, SampleFormat] = {
    "S16_LE": SampleFormat("S16_LE", np.dtype("<i2"), 32768.0, -32768.0, 32767.0),
    # 2147483520 is the largest float32 below 2**31: clipping there cannot overflow
    "S32_LE": SampleFormat("S32_LE", np.dtype("<i4"), 2147483648.0, -2147483648.0, 2147483520.0),
    "FLOAT_LE": SampleFormat("FLOAT_LE", np.dtype("<f4"), 1.0, -np.inf, np.inf),
}


class Converter:
    """Interleaved PCM samples <-> float32 ``[frames, channels]``, in preallocated buffers."""

    def __init__(self, fmt: str, frames: int, channels: int):
        self.fmt = FORMATS[fmt]
        self.frames, self.channels = frames, channels
        self.frame_bytes = self.fmt.dtype.itemsize * channels
        self.nbytes = self.frame_bytes * frames
        self._float = np.zeros((frames, channels), np.float32)  # to_float output
        self._tmp = np.zeros((frames, channels), np.float32)  # from_float scratch
        self._raw = np.zeros((frames, channels), self.fmt.dtype)  # from_float output
        self._inv = np.float32(1.0 / self.fmt.scale)
        self._scale = np.float32(self.fmt.scale)

    def to_float(self, raw: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode one period; returns a buffer that the next call overwrites."""
        src = np.frombuffer(raw, dtype=self.fmt.dtype).reshape(self.frames, self.channels)
        if self.fmt.name == "FLOAT_LE":
            np.copyto(self._float, src)
        else:
            np.multiply(src, self._inv, out=self._float, casting="unsafe")
        return self._float

    def from_float(self, y: np.ndarray) -> np.ndarray:
        """Encode one period (clipped to the format's range); returns a reused buffer."""
        if self.fmt.name == "FLOAT_LE":
            np.copyto(self._raw, y, casting="same_kind")
            return self._raw
        np.multiply(y, self._scale, out=self._tmp, casting="same_kind")
        np.nan_to_num(self._tmp, copy=False, nan=0.0)
        np.clip(self._tmp, self.fmt.lo, self.fmt.hi, out=self._tmp)
        np.rint(self._tmp, out=self._tmp)
        np.copyto(self._raw, self._tmp, casting="unsafe")
        return self._raw

    def silence(self, frames: int) -> bytes:
        return bytes(self.frame_bytes * frames)


# ----------------------------------------------------------------------------
# counters
# ----------------------------------------------------------------------------
@dataclass
class IOStats:
    periods: int = 0  # periods processed and written
    frames: int = 0
    xruns_capture: int = 0
    xruns_playback: int = 0
    xruns_recovered: int = 0
    realigns: int = 0  # drifts between the streams corrected without an xrun (see the module docstring)
    io_distance: int = 0  # capture -> playback distance in frames, as last measured (0 until measured)
    device_lost: int = 0
    reopen_attempts: int = 0  # failed reopen attempts
    reopens: int = 0  # successful reopens
    lost_s: float = 0.0  # time spent without a device
    wall_s: float = 0.0  # time from start to stop
    xrun_frames: list[int] = field(default_factory=list)  # audio position of the first 100 xruns

    @property
    def xruns(self) -> int:
        return self.xruns_capture + self.xruns_playback

    @property
    def xruns_unrecovered(self) -> int:
        return self.xruns - self.xruns_recovered

    def as_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        d["xruns"] = self.xruns
        d["xruns_unrecovered"] = self.xruns_unrecovered
        return d


def _alsa_message(e: Exception) -> str:
    """pyalsaaudio formats errors as "strerror [device]"; keep the strerror."""
    msg = str(e)
    return msg.rsplit(" [", 1)[0] if msg.endswith("]") else msg


_ALSA_LIB_HANDLER = None  # kept alive for as long as alsa-lib may call it


def quiet_alsa_lib() -> None:
    """Route alsa-lib's own error lines ("ALSA lib pcm.c:...") to the debug log.

    alsa-lib prints them on stderr before pyalsaaudio raises, so a person saw
    library internals above our message that says what to do.  Installed once
    per process; harmless where libasound cannot be found."""
    global _ALSA_LIB_HANDLER
    if _ALSA_LIB_HANDLER is not None:
        return
    name = ctypes.util.find_library("asound") or "libasound.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return
    handler_t = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)

    def handler(file, line, function, err, fmt):  # the format's arguments are not available to us
        log.debug("alsa-lib %s:%d (%s): %s", (file or b"?").decode(errors="replace"), line,
                  (function or b"?").decode(errors="replace"), (fmt or b"").decode(errors="replace"))

    _ALSA_LIB_HANDLER = handler_t(handler)
    lib.snd_lib_error_set_handler(_ALSA_LIB_HANDLER)


def _cards() -> list[str]:
    try:
        return list(alsaaudio.cards())
    except alsaaudio.ALSAAudioError:
        return []


def _pcm_list(kind: int) -> list[str]:
    try:
        return list(alsaaudio.pcms(kind))
    except alsaaudio.ALSAAudioError:
        return []


def _close_quietly(pcm, drop: bool = True) -> None:
    """Close a PCM that may be half-open or gone; with ``drop``, queued playback is
    discarded first (pyalsaaudio's close() drains, which never ends on a dead device)."""
    try:
        if drop:
            pcm.drop()
    except alsaaudio.ALSAAudioError as e:
        log.debug("dropping a PCM failed: %s", e)
    try:
        pcm.close()
    except alsaaudio.ALSAAudioError as e:
        log.debug("closing a PCM failed: %s", e)


# ----------------------------------------------------------------------------
# the duplex stream
# ----------------------------------------------------------------------------
Process = Callable[[np.ndarray], np.ndarray]


class AlsaDuplex:
    """A capture and a playback PCM run period by period (see the module docstring)."""

    def __init__(self, audio: AudioConfig, service: ServiceConfig, source: str = "the device config",
                 command_line: frozenset[str] = frozenset()):
        if alsaaudio is None:
            raise AudioDeviceError(
                "pyalsaaudio is not installed: install it with `pip install pyalsaaudio` "
                "(it needs `apt-get install libasound2-dev gcc`), or `pip install wavae-edge[alsa]`"
            )
        self.audio, self.service, self.source = audio, service, source
        self.command_line = command_line  # config keys the command line set (named so in messages)
        quiet_alsa_lib()
        self.period = audio.period_size
        self.cap_conv = Converter(audio.format, self.period, audio.channels_in)
        self.play_conv = Converter(audio.format, self.period, audio.channels_out)
        nbytes = self.cap_conv.nbytes
        # reads gather here: a period in progress plus the excess of the read that completed it
        self._cap_buf = bytearray(2 * nbytes)
        self._cap_view = memoryview(self._cap_buf)
        self._cap_head = self._cap_view[:nbytes]  # the period to decode
        self._cap_fill = 0  # bytes gathered towards the next period
        self._prefill = self.play_conv.silence(self.period * audio.prefill_periods)
        self._cap = self._play = None
        self._cap_poll = self._play_poll = None
        self._pending_xruns = 0
        self._drift = 0  # the misalignment (whole periods) being confirmed, and since when
        self._drift_since = 0.0
        self._stop = threading.Event()
        self.stats = IOStats()
        self.actual: dict[str, dict] = {}  # what the PCMs negotiated (pcm.info())

    # -- opening and closing ------------------------------------------------
    def open(self) -> None:
        """Open both PCMs; raises AudioDeviceError with an actionable message.

        Whatever fails (opening, querying, or the poll descriptors of either
        PCM), the PCMs opened so far are closed before the error is raised.
        """
        a = self.audio
        opened = []
        try:
            cap = self._open_one(
                alsaaudio.PCM_CAPTURE, a.capture, a.channels_in, "audio.capture", "--capture", "arecord"
            )
            opened.append(cap)
            play = self._open_one(
                alsaaudio.PCM_PLAYBACK, a.playback, a.channels_out, "audio.playback", "--playback", "aplay"
            )
            opened.append(play)
            cap_poll = self._poller(cap, "capture", a.capture, "audio.capture")
            play_poll = self._poller(play, "playback", a.playback, "audio.playback")
        except BaseException:
            for pcm in reversed(opened):
                _close_quietly(pcm)
            raise
        self._cap, self._play = cap, play
        self._cap_poll, self._play_poll = cap_poll, play_poll
        self._cap_fill = 0

    def _open_one(self, kind: int, name: str, channels: int, key: str, flag: str, tool: str):
        a = self.audio
        what = "capture" if kind == alsaaudio.PCM_CAPTURE else "playback"
        kwargs = dict(
            type=kind,
            mode=alsaaudio.PCM_NONBLOCK,
            device=name,
            rate=a.rate,
            channels=channels,
            format=FORMATS[a.format].alsa,
            periodsize=a.period_size,
            periods=a.periods,
        )
        try:
            try:
                pcm = alsaaudio.PCM(**kwargs)
            except TypeError:  # pyalsaaudio < 0.11 has no `periods`: ALSA picks the count
                del kwargs["periods"]
                pcm = alsaaudio.PCM(**kwargs)
        except alsaaudio.ALSAAudioError as e:
            reason = _alsa_message(e)
            hint = ""
            if "busy" in reason.lower():
                hint = " Another program is using it (`fuser -v /dev/snd/*` shows which)."
            if not _cards():
                hint += " No sound card is present (`aplay -l` lists none): connect one, or check its driver/overlay."
            known = _pcm_list(kind)
            listed = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
            raise AudioDeviceError(
                f'{what} PCM "{name}" ({self._origin(key)}) cannot be opened: {reason}.{hint} '
                f"This machine's {what} PCMs: {listed}. List them with `{tool} -L`, "
                f"then set {key} or pass {flag} NAME."
            ) from None
        try:
            info = pcm.info()
        except alsaaudio.ALSAAudioError as e:
            _close_quietly(pcm)
            raise AudioDeviceError(
                f'{what} PCM "{name}" ({self._origin(key)}) opened but cannot be queried: {_alsa_message(e)}. '
                f"Was the device unplugged while it opened? Check it with `{tool} -l`."
            ) from None
        problems = []
        if info.get("rate") != a.rate:
            problems.append(f"rate {info.get('rate')} Hz instead of audio.rate = {a.rate}")
        if info.get("period_size") != a.period_size:
            problems.append(f"period size {info.get('period_size')} instead of audio.period_size = {a.period_size}")
        if info.get("channels") != channels:
            ch_key = "audio.channels_in" if kind == alsaaudio.PCM_CAPTURE else "audio.channels_out"
            problems.append(f"{info.get('channels')} channels instead of {ch_key} = {channels}")
        if info.get("format_name") != a.format:
            problems.append(f"format {info.get('format_name')} instead of audio.format = {a.format}")
        if problems:
            _close_quietly(pcm)
            raise AudioDeviceError(
                f'{what} PCM "{name}" ({self._origin(key)}) does not accept the configured settings: '
                f"it gave {'; '.join(problems)}. Set those keys to what the device supports, or use a "
                f'"plughw:" / "plug" PCM that converts.'
            )
        if info.get("periods") != a.periods:
            log.info("%s PCM %s uses %s periods (asked for %d)", what, name, info.get("periods"), a.periods)
        keys = ("rate", "period_size", "periods", "buffer_size", "format_name", "channels")
        self.actual[what] = {k: info.get(k) for k in keys}
        return pcm

    def _origin(self, key: str) -> str:
        """Where a PCM name came from, for messages: the command line or the config file."""
        flag = {"audio.capture": "--capture", "audio.playback": "--playback"}.get(key, key)
        return f"{flag} on the command line" if key in self.command_line else f"{key} in {self.source}"

    def _poller(self, pcm, what: str, name: str, key: str) -> select.poll:
        p = select.poll()
        try:
            for fd, mask in pcm.polldescriptors():
                p.register(fd, mask)
        except alsaaudio.ALSAAudioError as e:
            raise AudioDeviceError(
                f'{what} PCM "{name}" ({self._origin(key)}) opened but gives no poll descriptors: '
                f"{_alsa_message(e)}. Was the device unplugged while it opened?"
            ) from None
        return p

    def close(self, drain: bool = True) -> None:
        """Close both PCMs; with ``drain`` the playback queue is played out first."""
        if self._play is not None and drain:
            self._drain()
        self._close_pcms(lost=not drain)

    def _close_pcms(self, lost: bool) -> None:
        cap, play = self._cap, self._play
        self._cap = self._play = self._cap_poll = self._play_poll = None
        self._cap_fill = 0
        for pcm in (cap, play):
            if pcm is not None:
                _close_quietly(pcm, drop=lost)

    def _drain(self) -> None:
        """Wait until the playback queue has played out (the PCMs are non-blocking)."""
        info = self.actual.get("playback", {})
        buffer = info.get("buffer_size") or self.audio.periods * self.period
        deadline = time.monotonic() + buffer / self.audio.rate + 0.5
        while time.monotonic() < deadline:
            try:
                avail = self._play.avail()
            except alsaaudio.ALSAAudioError:
                return
            if avail < 0 or avail >= buffer:
                return
            time.sleep(min(0.01, self.period / self.audio.rate))

    # -- latency --------------------------------------------------------------
    def io_latency(self) -> dict[str, int]:
        """What the I/O adds to the round trip, in frames at the device rate.

        Both streams start together, playback with ``prefill_periods`` periods
        queued, so a captured frame is played ``prefill_periods x period_size``
        frames later (``playback_prefill``) plus whatever the processing delays
        the signal by; the capture period is inside that offset, not on top of
        it.  ``process_budget`` is the pre-fill left when a captured period is
        complete, ``(prefill_periods - 1) x period_size``: the longest a period
        may take to process before playback runs dry on a DMA-driven card.
        """
        prefill = self.audio.prefill_periods
        return {
            "playback_prefill": self.period * prefill,
            "process_budget": self.period * (prefill - 1),
        }

    def playback_queued(self) -> int:
        """Frames written to the playback PCM and not played yet (``buffer_size - avail()``).

        Called from ``process``, it is what is queued ahead of the period about to
        be written: ``(prefill_periods - 1) x period_size`` in steady state.
        """
        buffer = self.actual["playback"]["buffer_size"]
        try:
            return buffer - self._play.avail()
        except alsaaudio.ALSAAudioError as e:
            raise _DeviceLost(f"playback avail failed: {_alsa_message(e)}") from None

    # -- the loop -------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run`` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(
        self,
        process: Process,
        *,
        max_frames: int | None = None,
        on_reopen: Callable[[], None] | None = None,
    ) -> IOStats:
        """Run period by period until ``stop()`` or ``max_frames`` frames of device time.

        Device time is frames written (a period an xrun made stale is not) plus,
        while the device is lost, the wall time spent without it; on an unpaced
        PCM (the ``file`` plugin) it stops after exactly ``max_frames`` frames
        (rounded up to whole periods).
        """
        if self._cap is None:
            self.open()
        st = self.stats
        rate = self.audio.rate
        t0 = time.monotonic()
        self._start()
        while not self._stop.is_set():
            if max_frames is not None and st.frames + int(st.lost_s * rate) >= max_frames:
                break
            if self._cap is None:
                self._reopen(on_reopen)
                continue
            try:
                x = self._read_period()
                if self._realign():
                    continue  # that period was dropped: playback had one too many queued
                y = process(x)
                written = self._write_period(y)
            except _DeviceLost as e:
                self._lose(e)
                continue
            except _Stopped:
                break
            if written:
                st.periods += 1
                st.frames += self.period
        st.wall_s = time.monotonic() - t0
        return st

    def _start(self) -> None:
        """Write the pre-fill into freshly opened PCMs (device loss and a stop are handled here)."""
        try:
            self._prefill_playback()
        except _DeviceLost as e:
            self._lose(e)
        except _Stopped:
            pass

    def _prefill_playback(self) -> None:
        """Queue the pre-fill on a prepared playback PCM; it starts playing on this write."""
        self._drift = 0
        for _ in range(10):
            if self._write_all(self._prefill):
                return
            # only possible when the pre-fill is written in parts and stalls between them
            self._xrun("playback underrun during the pre-fill", capture=False)
            self._drop_both()
        raise _DeviceLost("playback underruns every time the pre-fill is written")

    def _drop_both(self) -> None:
        try:
            self._cap.drop()
            self._play.drop()
        except alsaaudio.ALSAAudioError as e:
            raise _DeviceLost(f"stopping the streams after an xrun failed: {_alsa_message(e)}") from None
        self._cap_fill = 0

    def _resync(self, what: str, capture: bool) -> None:
        """After an xrun: both streams back in their start-up state (see the module docstring).

        Dropping discards the capture data queued during the stall and what is
        left in the playback queue; pyalsaaudio prepares a dropped PCM on its
        next read/write, so the pre-fill restarts playback and the next read
        restarts capture, with the start-up offset between them.
        """
        self._xrun(what, capture)
        self._drop_both()
        self._prefill_playback()

    def _misalignment(self) -> int:
        """Whole periods the streams have moved from their start-up offset (see the module docstring).

        Positive: playback holds more than the pre-fill leaves (the round trip
        grew); negative: playback plus what is captured and not yet processed
        falls short of it (the slack shrank).  0 when aligned, or when a PCM is
        in an xrun (the next read or write resyncs).  Called after a whole
        period has been read, before it is processed.
        """
        try:
            play_avail = self._play.avail()
            cap_avail = self._cap.avail()
        except alsaaudio.ALSAAudioError as e:
            raise _DeviceLost(f"avail failed: {_alsa_message(e)}") from None
        if play_avail < 0 or cap_avail < 0:
            return 0
        target = (self.audio.prefill_periods - 1) * self.period
        queued = self.actual["playback"]["buffer_size"] - play_avail
        captured = cap_avail + self._cap_fill // self.cap_conv.frame_bytes
        # the period in hand was captured `period + captured` frames ago and plays after `queued` more
        self.stats.io_distance = queued + captured + self.period
        if queued > target:
            excess = queued - target
        else:
            excess = min(0, queued + captured - target)
        return round(excess / self.period)

    def _realign(self) -> bool:
        """Correct a drift between the streams once it has persisted; True when the period in hand is dropped."""
        m = self._misalignment()
        now = time.monotonic()
        if m != self._drift:
            self._drift, self._drift_since = m, now
            return False
        if m == 0 or now - self._drift_since < ALIGN_CONFIRM_PERIODS * self.period / self.audio.rate:
            return False
        self._drift = 0
        st = self.stats
        st.realigns += 1
        if st.realigns <= 10 or st.realigns % 100 == 0:
            log.warning(
                "the capture and playback streams drifted %+d period(s) apart after %.2f s of audio; realigned "
                "(%d so far)", m, st.frames / self.audio.rate, st.realigns,
            )
        if m > 0:
            return True
        silence = memoryview(self._prefill)[: -m * self.play_conv.frame_bytes * self.period]
        if self._write_all(silence):
            return False
        self._resync("playback underrun", capture=False)
        return True  # captured before the restart: stale

    def _read_period(self) -> np.ndarray:
        cap, nbytes, view = self._cap, self.cap_conv.nbytes, self._cap_view
        deadline = time.monotonic() + self.service.io_timeout_s
        while True:
            try:
                n, data = cap.read()
            except alsaaudio.ALSAAudioError as e:
                raise _DeviceLost(f"capture read failed: {_alsa_message(e)}") from None
            if n == EPIPE:
                self._resync("capture overrun", capture=True)
                deadline = time.monotonic() + self.service.io_timeout_s
                continue
            if n > 0:
                size, fill = len(data), self._cap_fill
                if fill == 0 and size == nbytes:
                    return self.cap_conv.to_float(data)
                if fill + size > len(view):  # pyalsaaudio never reads more than a period
                    raise _DeviceLost(f"capture read returned {size} bytes, more than a period ({nbytes})")
                view[fill : fill + size] = data
                fill += size
                if fill < nbytes:
                    self._cap_fill = fill
                    continue
                x = self.cap_conv.to_float(self._cap_head)
                rest = fill - nbytes  # the excess starts the next period
                if rest:
                    view[:rest] = view[nbytes:fill]
                self._cap_fill = rest
                return x
            self._wait(self._cap_poll, cap, deadline, "capture")

    def _write_period(self, y: np.ndarray) -> bool:
        """Write one processed period; False when an xrun discarded it instead."""
        if y.shape != self.play_conv._raw.shape:
            raise AudioDeviceError(
                f"the processing step returned a block of shape {tuple(y.shape)}, expected "
                f"{tuple(self.play_conv._raw.shape)} (period_size x channels_out)"
            )
        raw = self.play_conv.from_float(y)
        if not self._write_all(memoryview(raw).cast("B")):
            self._resync("playback underrun", capture=False)
            return False  # the period came from audio captured before the stall: stale
        if self._pending_xruns:
            self.stats.xruns_recovered += self._pending_xruns
            self._pending_xruns = 0
        return True

    def _write_all(self, buf: bytes | memoryview) -> bool:
        """Write all of ``buf``; False as soon as the playback underruns (the rest is not written)."""
        play, fb = self._play, self.play_conv.frame_bytes
        view = memoryview(buf)
        off = 0
        deadline = time.monotonic() + self.service.io_timeout_s
        while off < len(view):
            try:
                r = play.write(view[off:])
            except alsaaudio.ALSAAudioError as e:
                raise _DeviceLost(f"playback write failed: {_alsa_message(e)}") from None
            if r == EPIPE:
                return False
            if r > 0:
                off += r * fb
                continue
            self._wait(self._play_poll, play, deadline, "playback")
        return True

    def _wait(self, poller: select.poll, pcm, deadline: float, what: str) -> None:
        if self._stop.is_set():
            raise _Stopped
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeviceLost(f"no {what} progress for {self.service.io_timeout_s:g} s")
        events = poller.poll(1000.0 * min(left, _POLL_SLICE_S))
        if events:
            try:
                pcm.polldescriptors_revents(events)
            except alsaaudio.ALSAAudioError as e:
                raise _DeviceLost(f"{what} poll failed: {_alsa_message(e)}") from None

    def _xrun(self, what: str, capture: bool) -> None:
        st = self.stats
        if capture:
            st.xruns_capture += 1
        else:
            st.xruns_playback += 1
        self._pending_xruns += 1
        if len(st.xrun_frames) < 100:
            st.xrun_frames.append(st.frames)
        n = st.xruns
        if n <= 10 or n % 100 == 0:
            log.warning(
                "xrun %d: %s after %.2f s of audio; recovering%s",
                n, what, st.frames / self.audio.rate, " (further xruns logged every 100th)" if n == 10 else "",
            )

    def _lose(self, e: Exception) -> None:
        self.stats.device_lost += 1
        log.error(
            "audio device lost (%s); outputting nothing and reopening every %g s",
            e, self.service.reopen_interval_s,
        )
        self._pending_xruns = 0
        self._close_pcms(lost=True)
        self._lost_at = time.monotonic()

    def _reopen(self, on_reopen: Callable[[], None] | None) -> None:
        st = self.stats
        t = time.monotonic()
        self._stop.wait(self.service.reopen_interval_s)
        st.lost_s += time.monotonic() - t
        if self._stop.is_set():
            return
        try:
            self.open()
        except AudioDeviceError as e:
            st.reopen_attempts += 1
            if st.reopen_attempts == 1 or st.reopen_attempts % 30 == 0:
                log.warning("reopen attempt %d failed: %s", st.reopen_attempts, e)
            return
        st.reopens += 1
        log.warning("audio device back after %.1f s; resuming", time.monotonic() - self._lost_at)
        if on_reopen is not None:
            on_reopen()
        self._start()
