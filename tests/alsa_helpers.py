"""Real alsa-lib without a sound card: ALSA config files and a private JACK server.

See ../shared/notes/alsa-testing.md.  Two ways to run the live loop here:

- ``file_pcms``: ``type file`` PCMs over ``null``, unpaced and bit-exact; the
  capture side reads a RAW file in exactly the PCM's format, the playback side
  writes one.  There is no end of file: stop after a known frame count.
- ``JackServer`` + ``jack_pcms``: a private ``jackd -d dummy`` server paces the
  streams like hardware; ``type jack`` is wrapped in ``type plug`` (used
  directly it hands back FLOAT_LE when S16_LE was asked for).

An ALSA config is loaded with ``ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:MINE``
(the stock file first keeps its definitions), at the next PCM open.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

STOCK_ALSA_CONF = "/usr/share/alsa/alsa.conf"
RAW_DTYPES = {"S16_LE": "<i2", "S32_LE": "<i4", "FLOAT_LE": "<f4"}


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
    """A private ``jackd --no-realtime -d dummy`` server, stopped on exit whatever happens.

    ``realtime=True`` runs the server's clock thread at SCHED_FIFO 70 (needs
    CAP_SYS_NICE); tests leave it off, the threading measurements turn it on.
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
        rt = ["--realtime", "-P", "70"] if self.realtime else ["--no-realtime"]  # realtime: measurements only
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
