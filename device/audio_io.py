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
  silence (it starts on the first write), then the first capture read starts
  capture.  The pre-fill is the playback slack: it absorbs a period that takes
  longer than its share, and is part of the latency (see ``io_latency``).
- xrun (``read()``/``write()`` return ``-EPIPE``; pyalsaaudio has already
  called ``snd_pcm_prepare``): a capture overrun loses the period, which is
  replaced by silence; a playback underrun loses nothing we still hold: the
  pre-fill is written again and then the same period is rewritten.  Each xrun is
  counted and logged; it counts as recovered once the next period has been
  written in full (``IOStats.xruns_unrecovered`` is what never got there).
- Lost device (USB interface unplugged: I/O fails with ENODEV and the like, or
  no audio arrives for ``io_timeout_s``): both PCMs are closed (playback
  dropped, not drained), nothing is processed or output, and both are reopened
  every ``reopen_interval_s``.  Once back, ``on_reopen`` runs (the live loop
  resets the engine state) and audio resumes.  Nothing raises.
- A PCM that cannot be opened at start raises ``AudioDeviceError`` naming the
  PCM and the config key and pointing at ``aplay -L`` / ``arecord -L``.

Sample formats S16_LE, S32_LE and FLOAT_LE are converted to and from float32
into buffers allocated once.  pyalsaaudio's ``read()`` returns a fresh
``bytes`` object per period (it has no read-into); that is the one per-period
allocation left, and it is small.
"""

from __future__ import annotations

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


# ----------------------------------------------------------------------------
# the duplex stream
# ----------------------------------------------------------------------------
Process = Callable[[np.ndarray], np.ndarray]


class AlsaDuplex:
    """A capture and a playback PCM run period by period (see the module docstring)."""

    def __init__(self, audio: AudioConfig, service: ServiceConfig, source: str = "the device config"):
        if alsaaudio is None:
            raise AudioDeviceError(
                "pyalsaaudio is not installed: install it with `pip install pyalsaaudio` "
                "(it needs `apt-get install libasound2-dev gcc`), or `pip install wavae-edge[alsa]`"
            )
        self.audio, self.service, self.source = audio, service, source
        self.period = audio.period_size
        self.cap_conv = Converter(audio.format, self.period, audio.channels_in)
        self.play_conv = Converter(audio.format, self.period, audio.channels_out)
        self._cap_buf = bytearray(self.cap_conv.nbytes)  # partial reads gather here
        self._cap_view = memoryview(self._cap_buf)
        self._zeros_in = np.zeros((self.period, audio.channels_in), np.float32)
        self._prefill = self.play_conv.silence(self.period * audio.prefill_periods)
        self._cap = self._play = None
        self._cap_poll = self._play_poll = None
        self._pending_xruns = 0
        self._stop = threading.Event()
        self.stats = IOStats()
        self.actual: dict[str, dict] = {}  # what the PCMs negotiated (pcm.info())

    # -- opening and closing ------------------------------------------------
    def open(self) -> None:
        """Open both PCMs; raises AudioDeviceError with an actionable message."""
        a = self.audio
        cap = self._open_one(alsaaudio.PCM_CAPTURE, a.capture, a.channels_in, "audio.capture", "--capture", "arecord")
        try:
            play = self._open_one(
                alsaaudio.PCM_PLAYBACK, a.playback, a.channels_out, "audio.playback", "--playback", "aplay"
            )
        except AudioDeviceError:
            cap.close()
            raise
        self._cap, self._play = cap, play
        self._cap_poll = self._poller(cap)
        self._play_poll = self._poller(play)

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
                f'{what} PCM "{name}" ({key} in {self.source}) cannot be opened: {reason}.{hint} '
                f"This machine's {what} PCMs: {listed}. List them with `{tool} -L`, "
                f"then set {key} or pass {flag} NAME."
            ) from None
        info = pcm.info()
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
            pcm.close()
            raise AudioDeviceError(
                f'{what} PCM "{name}" ({key} in {self.source}) does not accept the configured settings: '
                f"it gave {'; '.join(problems)}. Set those keys to what the device supports, or use a "
                f'"plughw:" / "plug" PCM that converts.'
            )
        if info.get("periods") != a.periods:
            log.info("%s PCM %s uses %s periods (asked for %d)", what, name, info.get("periods"), a.periods)
        keys = ("rate", "period_size", "periods", "buffer_size", "format_name", "channels")
        self.actual[what] = {k: info.get(k) for k in keys}
        return pcm

    @staticmethod
    def _poller(pcm) -> select.poll:
        p = select.poll()
        for fd, mask in pcm.polldescriptors():
            p.register(fd, mask)
        return p

    def close(self, drain: bool = True) -> None:
        """Close both PCMs; with ``drain`` the playback queue is played out first."""
        if self._play is not None and drain:
            self._drain()
        self._close_pcms(lost=not drain)

    def _close_pcms(self, lost: bool) -> None:
        cap, play = self._cap, self._play
        self._cap = self._play = self._cap_poll = self._play_poll = None
        for pcm in (cap, play):
            if pcm is None:
                continue
            try:
                if lost and pcm is play:
                    pcm.drop()  # close() drains playback, which never ends on a dead device
                pcm.close()
            except alsaaudio.ALSAAudioError as e:
                log.debug("closing a PCM failed: %s", e)

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
        """Buffering the I/O adds, in frames at the device rate.

        A period is complete before it is read (``capture_period``), and a
        written period plays after the ``playback_prefill`` queued ahead of it.
        """
        return {
            "capture_period": self.period,
            "playback_prefill": self.period * self.audio.prefill_periods,
        }

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

        Device time is frames processed plus, while the device is lost, the wall
        time spent without it; on an unpaced PCM (the ``file`` plugin) it stops
        after exactly ``max_frames`` frames (rounded up to whole periods).
        """
        if self._cap is None:
            self.open()
        st = self.stats
        rate = self.audio.rate
        t0 = time.monotonic()
        try:
            self._write_all(self._prefill, prefill_on_xrun=False)
        except _DeviceLost as e:
            self._lose(e)
        except _Stopped:
            pass
        while not self._stop.is_set():
            if max_frames is not None and st.frames + int(st.lost_s * rate) >= max_frames:
                break
            if self._cap is None:
                self._reopen(on_reopen)
                continue
            try:
                x = self._read_period()
                y = process(x)
                self._write_period(y)
            except _DeviceLost as e:
                self._lose(e)
                continue
            except _Stopped:
                break
            st.periods += 1
            st.frames += self.period
        st.wall_s = time.monotonic() - t0
        return st

    def _read_period(self) -> np.ndarray:
        cap, nbytes = self._cap, self.cap_conv.nbytes
        filled = 0
        deadline = time.monotonic() + self.service.io_timeout_s
        while True:
            try:
                n, data = cap.read()
            except alsaaudio.ALSAAudioError as e:
                raise _DeviceLost(f"capture read failed: {_alsa_message(e)}") from None
            if n == EPIPE:
                self._xrun("capture overrun", capture=True)
                return self._zeros_in  # the lost period is replaced by silence
            if n > 0:
                if filled == 0 and len(data) == nbytes:
                    return self.cap_conv.to_float(data)
                self._cap_view[filled : filled + len(data)] = data
                filled += len(data)
                if filled >= nbytes:
                    return self.cap_conv.to_float(self._cap_buf)
                continue
            self._wait(self._cap_poll, cap, deadline, "capture")

    def _write_period(self, y: np.ndarray) -> None:
        if y.shape != self.play_conv._raw.shape:
            raise AudioDeviceError(
                f"the processing step returned a block of shape {tuple(y.shape)}, expected "
                f"{tuple(self.play_conv._raw.shape)} (period_size x channels_out)"
            )
        raw = self.play_conv.from_float(y)
        self._write_all(memoryview(raw).cast("B"))
        if self._pending_xruns:
            self.stats.xruns_recovered += self._pending_xruns
            self._pending_xruns = 0

    def _write_all(self, buf: bytes | memoryview, prefill_on_xrun: bool = True) -> None:
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
                self._xrun("playback underrun", capture=False)
                if prefill_on_xrun:  # restore the slack, then rewrite this period
                    self._write_all(self._prefill, prefill_on_xrun=False)
                deadline = time.monotonic() + self.service.io_timeout_s
                continue
            if r > 0:
                off += r * fb
                continue
            self._wait(self._play_poll, play, deadline, "playback")

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
        try:
            self._write_all(self._prefill, prefill_on_xrun=False)
        except _DeviceLost as e:
            self._lose(e)
        except _Stopped:
            pass
