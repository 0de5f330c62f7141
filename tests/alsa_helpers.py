"""Real alsa-lib without a sound card: ALSA config files and a private JACK server.

See ../shared/notes/alsa-testing.md.  Two ways to run the live loop here:

- ``file_pcms``: ``type file`` PCMs over ``null``, unpaced and bit-exact; the
  capture side reads a RAW file in exactly the PCM's format, the playback side
  writes one.  There is no end of file: stop after a known frame count.
- ``JackServer`` + ``jack_pcms``: a private ``jackd -d dummy`` server paces the
  streams like hardware; ``type jack`` is wrapped in ``type plug`` (used
  directly it hands back FLOAT_LE when S16_LE was asked for).
  ``jack_loopback_pcms`` wires the playback port into the capture port, so
  what the loop writes comes back in what it reads: the distance between the
  two streams (the I/O round trip) can be measured, in frames.

A third, for faults alsa-lib cannot be made to produce here: ``FakeAlsa``, a
stand-in for the ``alsaaudio`` module (the outermost boundary: PCM objects with
pyalsaaudio's methods) whose PCMs can hand back short reads or raise
``ALSAAudioError`` from a chosen call of a chosen PCM.

An ALSA config is loaded with ``ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:MINE``
(the stock file first keeps its definitions), at the next PCM open.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

STOCK_ALSA_CONF = "/usr/share/alsa/alsa.conf"
RAW_DTYPES = {"S16_LE": "<i2", "S32_LE": "<i4", "FLOAT_LE": "<f4"}
JACK_PRIORITY = 70  # SCHED_FIFO priority of a realtime test server's clock thread
LOOP_PRIORITY = JACK_PRIORITY - 10  # the audio loop's SCHED_FIFO priority, below the server's clients


def write_text_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def alsa_env(conf: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which alsa-lib also reads ``conf``."""
    env = dict(os.environ if base is None else base)
    env["ALSA_CONFIG_PATH"] = f"{STOCK_ALSA_CONF}:{Path(conf).resolve()}"
    return env


def file_pcms(conf: Path, infile: Path, outfile: Path, capture: str = "test_cap", playback: str = "test_play") -> Path:
    """An ALSA config with a capture PCM reading ``infile`` and a playback PCM writing ``outfile``."""
    text = f"""
pcm.{capture} {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{Path(infile).resolve()}"
    format "raw"
}}
pcm.{playback} {{
    type file
    slave.pcm "null"
    file "{Path(outfile).resolve()}"
    format "raw"
    perm 0644
}}
"""
    return write_text_atomic(Path(conf), text)


def write_raw(path: Path, audio: np.ndarray, fmt: str) -> Path:
    """float audio ``[frames]`` or ``[frames, channels]`` -> interleaved RAW samples in ``fmt``."""
    x = np.asarray(audio, np.float64)
    if fmt == "FLOAT_LE":
        raw = x.astype("<f4")
    else:
        scale = 32768.0 if fmt == "S16_LE" else 2147483648.0
        info = np.iinfo(RAW_DTYPES[fmt])
        raw = np.clip(np.rint(x * scale), info.min, info.max).astype(RAW_DTYPES[fmt])
    tmp = path.with_name(path.name + ".tmp")
    raw.tofile(tmp)
    os.replace(tmp, path)
    return path


def read_raw(path: Path, fmt: str, channels: int = 1) -> np.ndarray:
    """RAW samples -> float32 ``[frames, channels]`` (integer formats scaled to [-1, 1))."""
    raw = np.fromfile(path, dtype=RAW_DTYPES[fmt])
    if fmt == "FLOAT_LE":
        x = raw.astype(np.float32)
    else:
        x = (raw / (32768.0 if fmt == "S16_LE" else 2147483648.0)).astype(np.float32)
    return x.reshape(-1, channels)


def jack_pcms(conf: Path, name: str = "jplug") -> Path:
    """An ALSA config with a duplex PCM ``name`` on the default JACK server's system ports."""
    text = f"""
pcm.{name}_raw_c {{ type jack capture_ports {{ 0 "system:capture_1" }} }}
pcm.{name}_raw_p {{ type jack playback_ports {{ 0 "system:playback_1" }} }}
pcm.{name} {{
    type asym
    capture.pcm {{ type plug slave.pcm "{name}_raw_c" }}
    playback.pcm {{ type plug slave.pcm "{name}_raw_p" }}
}}
"""
    return write_text_atomic(Path(conf), text)


def jack_config(threading_mode: str = "inline", realtime: bool = False, rate: int = 48000, period: int = 256,
                pcm: str = "jplug") -> str:
    """The ``[audio]`` and ``[service]`` sections of a device config that plays through ``jack_pcms``'s
    duplex PCM ``pcm``: three periods of ``period`` frames, two pre-filled, S16_LE, and the audio loop at
    ``LOOP_PRIORITY`` when ``realtime`` (below the server's clients), else at normal priority."""
    return f"""
[audio]
capture = "{pcm}"
playback = "{pcm}"
rate = {rate}
period_size = {period}
periods = 3
prefill_periods = 2
format = "S16_LE"
threading = "{threading_mode}"

[service]
log_level = "info"
realtime_priority = {LOOP_PRIORITY if realtime else 0}
"""


def jack_loopback_pcms(conf: Path, name: str = "jloop") -> Path:
    """A duplex PCM ``name`` whose playback port feeds its own capture port.

    The capture client (opened first) listens to ``system:capture_1`` (silence)
    and, once the playback client exists, to the playback client's port, which
    the playback client connects when it opens.  JACK runs the playback client
    first in each cycle (it feeds the other), so a frame written at playback
    stream position p is read at capture stream position p: the distance
    between the streams, with nothing added.
    """
    text = f"""
pcm.{name}_raw_c {{ type jack name "{name}_cap" capture_ports {{ 0 "system:capture_1" }} }}
pcm.{name}_raw_p {{ type jack name "{name}_play" playback_ports {{ 0 "{name}_cap:in_000" }} }}
pcm.{name} {{
    type asym
    capture.pcm {{ type plug slave.pcm "{name}_raw_c" }}
    playback.pcm {{ type plug slave.pcm "{name}_raw_p" }}
}}
"""
    return write_text_atomic(Path(conf), text)


def realtime_allowed() -> bool:
    """Whether this process may use SCHED_FIFO (CAP_SYS_NICE, or an rtprio limit); probed, then undone."""
    try:
        previous = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        return False
    os.sched_setscheduler(0, *previous)
    return True


@contextlib.contextmanager
def realtime_thread(priority: int, enabled: bool = True):
    """Run the calling thread at SCHED_FIFO ``priority`` inside the block (when ``enabled``)."""
    if not enabled:
        yield
        return
    previous = (os.sched_getscheduler(0), os.sched_getparam(0))
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    try:
        yield
    finally:
        os.sched_setscheduler(0, *previous)


def jackd_available() -> str | None:
    """None when a JACK dummy server can be started here, otherwise why not."""
    if shutil.which("jackd") is None:
        return "jackd is not installed (apt-get install -y --no-install-recommends jackd2 libasound2-plugins)"
    if not Path("/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_jack.so").exists() and not list(
        Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_jack.so")
    ):
        return "the ALSA jack plugin is not installed (apt-get install -y libasound2-plugins)"
    return None


class JackServer:
    """A private ``jackd -d dummy`` server, stopped on exit whatever happens.

    ``realtime=True`` runs the server's clock thread at SCHED_FIFO 70 (needs
    CAP_SYS_NICE; see ``realtime_allowed``), and libjack runs its clients'
    process threads just below it; otherwise the server runs ``--no-realtime``.
    """

    def __init__(
        self, log_dir: Path, rate: int = 48000, period: int = 256, name: str | None = None, realtime: bool = False
    ):
        self.name = name or f"wavae-test-{uuid.uuid4().hex[:8]}"
        self.rate, self.period, self.realtime = rate, period, realtime
        self.log_path = Path(log_dir) / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Client environment: this server, and never autostart another one."""
        env = dict(os.environ if base is None else base)
        env.update(
            JACK_DEFAULT_SERVER=self.name,
            JACK_NO_START_SERVER="1",
            JACK_NO_AUDIO_RESERVATION="1",
        )
        return env

    def start(self, timeout: float = 10.0) -> "JackServer":
        env = self.env()
        self._log = open(self.log_path, "wb")
        rt = ["--realtime", "-P", str(JACK_PRIORITY)] if self.realtime else ["--no-realtime"]
        self.proc = subprocess.Popen(
            ["jackd", *rt, "-n", self.name, "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            r = subprocess.run(["jack_lsp", "-s", self.name], env=env, capture_output=True, text=True, timeout=5)
            if r.returncode == 0 and "system:playback_1" in r.stdout:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jackd {self.name} did not come up within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "JackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------
# a stand-in for the alsaaudio module
# ----------------------------------------------------------------------------
class FakeALSAAudioError(Exception):
    """What pyalsaaudio raises: "strerror [device]"."""


class FakePCM:
    """One PCM with pyalsaaudio's methods (read, write, info, polldescriptors, ...).

    ``FakeAlsa.fail[(what, n, method)] = "message"`` makes call ``method`` of the
    ``n``-th PCM of kind ``what`` ("capture"/"playback", counted from 0) raise
    ``ALSAAudioError``; a ``(what, n, "read")`` entry holding ``(k, message)``
    raises on the ``k``-th read (from 0) only.  Capture data comes from
    ``FakeAlsa.reader(pcm) -> (frames, bytes)``; playback data is kept in ``written``.

    ``avail()``: unpaced (the default), like the ``file`` plugin: the capture
    buffer always full, everything written already played.  Paced
    (``FakeAlsa(paced=True)``): one clock, advanced by the frames each capture
    read returns; the playback stream plays at that clock plus ``FakeAlsa.shift``
    frames (a positive shift: playback ran on while capture lost a cycle).
    """

    def __init__(self, alsa: "FakeAlsa", type: int, mode: int, device: str, rate: int, channels: int,
                 format: int, periodsize: int, periods: int = 3):
        self.alsa = alsa
        self.what = "capture" if type == FakeAlsa.PCM_CAPTURE else "playback"
        self.n = sum(1 for p in alsa.created if p.what == self.what)
        self.name = f"{self.what}{self.n}"
        self.device, self.rate, self.channels, self.format = device, rate, channels, format
        self.periodsize, self.periods = periodsize, periods
        self.framesize = 2 * channels  # S16_LE
        self.reads = 0
        self.written = bytearray()
        self.closed = False
        self.dropped_before_close = False
        self._dropped = False
        self._r, self._w = os.pipe()
        os.write(self._w, b"x")  # the read end always polls readable, the write end writable
        try:
            self._maybe_fail("PCM")
        except FakeALSAAudioError:
            os.close(self._r)
            os.close(self._w)
            raise
        alsa.created.append(self)
        alsa.log.append(("open", self.name))

    def _maybe_fail(self, method: str) -> None:
        err = self.alsa.fail.get((self.what, self.n, method))
        if err is None:
            return
        if isinstance(err, tuple):
            k, err = err
            if self.reads != k:
                return
        self.alsa.log.append((method + " fails", self.name))
        raise FakeALSAAudioError(f"{err} [{self.device}]")

    def info(self) -> dict:
        self._maybe_fail("info")
        return {"rate": self.rate, "period_size": self.periodsize, "periods": self.periods,
                "buffer_size": self.periods * self.periodsize, "format_name": "S16_LE", "channels": self.channels}

    def polldescriptors(self) -> list[tuple[int, int]]:
        self._maybe_fail("polldescriptors")
        return [(self._r, select.POLLIN)] if self.what == "capture" else [(self._w, select.POLLOUT)]

    def polldescriptors_revents(self, events) -> int:
        return 0

    def read(self) -> tuple[int, bytes]:
        self._maybe_fail("read")
        self.reads += 1
        n, data = self.alsa.reader(self)
        self.alsa.frames += max(n, 0)
        return n, data

    def write(self, data) -> int:
        self._maybe_fail("write")
        data = bytes(data)
        self.written.extend(data)
        return len(data) // self.framesize

    def avail(self) -> int:
        buffer = self.periods * self.periodsize
        if not self.alsa.paced:
            return buffer
        if self.what == "capture":
            return 0  # every read takes what the clock has produced
        played = max(0, self.alsa.frames + self.alsa.shift)
        return buffer - min(buffer, max(0, len(self.written) // self.framesize - played))

    def drop(self) -> int:
        self._dropped = True
        return 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.dropped_before_close = self._dropped
            self.alsa.log.append(("close", self.name))
            os.close(self._r)
            os.close(self._w)


class FakeAlsa:
    """Stands in for the ``alsaaudio`` module: ``monkeypatch.setattr(audio_io, "alsaaudio", FakeAlsa(...))``.

    Only S16_LE; every PCM opened is in ``created``, and ``log`` records opens,
    injected failures and closes in order.  ``paced``, ``frames`` and ``shift``:
    see ``FakePCM``.
    """

    PCM_PLAYBACK, PCM_CAPTURE, PCM_NONBLOCK = 0, 1, 1
    PCM_FORMAT_S16_LE = 2
    ALSAAudioError = FakeALSAAudioError

    def __init__(self, reader=None, fail: dict | None = None, paced: bool = False):
        self.paced = paced
        self.frames = 0  # frames captured so far: the paced clock
        self.shift = 0
        self.created: list[FakePCM] = []
        self.log: list[tuple[str, str]] = []
        self.fail = dict(fail or {})
        self.reader = reader or (lambda pcm: (pcm.periodsize, bytes(pcm.framesize * pcm.periodsize)))

    def PCM(self, **kwargs) -> FakePCM:
        return FakePCM(self, **kwargs)

    def cards(self) -> list[str]:
        return ["Fake"]

    def pcms(self, kind: int = 0) -> list[str]:
        return ["fake"]

    def pcm(self, name: str) -> FakePCM:
        return next(p for p in self.created if p.name == name)


# ----------------------------------------------------------------------------
# the instrument live under a JACK server, with its OSC door open
# ----------------------------------------------------------------------------
def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jack_live_config(path: Path, bundle: Path, osc_port: int, realtime: bool, extra: str = "",
                     rate: int = 48000, period: int = 256) -> Path:
    """A device config playing ``bundle`` through ``jack_pcms``' ``jplug``, inline, with ``[osc]`` on."""
    return write_text_atomic(Path(path), f"""
[bundle]
path = "{bundle}"
{jack_config("inline", realtime, rate, period)}
[controls]
feedback_gain = 0.3
[osc]
port = {osc_port}
{extra}
""")


class LiveInstrument:
    """``wavae run --config CONFIG`` (no ``--seconds``) under ``jack``, until ``stop()`` sends SIGTERM.

    ``start()`` returns once the loop logs " live: "; ``ask(address, *args)``
    sends one OSC message to the instrument and returns the JSON of its first
    reply on the same address (``/wavae/status`` and the like); ``send`` sends
    without waiting.  ``stop()`` returns the run's JSON summary and checks it
    exited 0 with no traceback.
    """

    def __init__(self, config: Path, jack: JackServer, osc_port: int, asound: Path, python: str):
        self.config, self.jack, self.osc_port, self.asound, self.python = config, jack, osc_port, asound, python
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 60.0) -> "LiveInstrument":
        import socket
        import threading

        env = alsa_env(jack_pcms(self.asound), self.jack.env())
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen([self.python, "-m", "wavae.cli", "run", "--config", str(self.config)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = threading.Event()

        def read_stderr():
            for line in self.proc.stderr:
                self.lines.append(line)
                if " live: " in line:
                    started.set()

        self._reader = threading.Thread(target=read_stderr, daemon=True)
        self._reader.start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5.0)
        if not started.wait(timeout):
            self.kill()
            raise AssertionError("the live loop never started:\n" + "".join(self.lines)[-3000:])
        return self

    def send(self, address: str, *args) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        b = OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        self.sock.sendto(b.build().dgram, ("127.0.0.1", self.osc_port))

    def ask(self, address: str, *args) -> dict:
        import json

        from pythonosc.osc_message import OscMessage

        self.send(address, *args)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data, _ = self.sock.recvfrom(65536)
            msg = OscMessage(data)
            if msg.address == address:
                return json.loads(msg.params[0])
        raise AssertionError(f"no {address} reply from the instrument")

    def status(self) -> dict:
        return self.ask("/wavae/status")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> dict:
        import json

        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)  # stdout holds the one summary line: it cannot fill the pipe
            stdout = self.proc.stdout.read()
        finally:
            self.kill()
            self.sock.close()
        self._reader.join(timeout=5)
        stderr = "".join(self.lines)
        assert self.proc.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def foreign_realtime_processes() -> list[str]:
    """``pid:name`` of every process outside this one's tree with a SCHED_FIFO/RR thread (kernel threads aside).

    Other sessions' realtime audio on the same cores can make a live test's
    audio late whatever the code under test does: a failing timing assertion
    names them."""
    def stat(path: str) -> list[str] | None:
        try:
            text = Path(path).read_text()
        except OSError:
            return None
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        return [name, *rest.split()]

    ours, found = {os.getpid()}, []
    procs = {int(p.name): stat(f"/proc/{p.name}/stat") for p in Path("/proc").iterdir() if p.name.isdigit()}
    parent = {pid: int(s[2]) for pid, s in procs.items() if s}

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid in ours:
                return True
            pid = parent.get(pid, 0)
        return False

    for pid, s in procs.items():
        if not s or int(s[7]) & 0x00200000 or mine(pid):  # PF_KTHREAD: the kernel's own threads
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        if any((t := stat(f"/proc/{pid}/task/{tid}/stat")) and int(t[39]) in (1, 2) for tid in tasks):
            found.append(f"{pid}:{s[0]}")
    return sorted(found)
