"""Soak: the real live loop for N minutes, paced by JACK's dummy backend, with traffic and faults.

    .venv/bin/python benchmarks/soak.py --minutes 60 [--bundle B [--bundle B2]] [--threading worker|inline]
                                         [--out docs/benchmarks]

The instrument is ``wavae run --config`` as systemd starts it (``NOTIFY_SOCKET``,
``RUNTIME_DIRECTORY``, ``WATCHDOG_USEC``), in a process of its own: this file's
``instrument`` subcommand, which parses the ``wavae run`` command line and
calls ``main_live`` with one difference, the panel's outermost hardware
boundary: ``FakeGpioLines`` and ``FakeMcp3008`` (``wavae.device.panel.fakes``)
stand for the gpiod line request and the SPI bus, and a scripted hand on its
own thread sweeps the pots, turns the FREQ encoder and presses SHIFT.
Everything above them (decoders, filters, takeover, mapping, actions,
controls, engine, ALSA) is the real code, with the shipped Pi 4 mapping.  The
audio goes through real alsa-lib into a private ``jackd -d dummy`` server
(``tests/alsa_helpers.py``), at realtime priority where this machine allows it,
as the service runs.

Traffic (from this process): OSC over UDP to the ``[osc]`` port at
``osc_rate`` messages a second (controls), a preset load every
``preset_every_s`` (``/wavae/preset/load``, presets saved over OSC at the
start), a bundle switch every ``switch_every_s`` (``/wavae/bundle``; counted as
refused when the status still names the old bundle ``SWITCH_WAIT_S`` later).  Faults:
phases of competing CPU load (one busy process per core), and a stall of
``stall_ms`` in the processing step every ``stall_every_s`` (``[debug]`` of the
device config).

Once a second: the status file (``wavae.device.status``: xruns, late periods,
realigns, NaN resets, the latency as configured and as the loop measures it)
and the instrument's RSS and CPU time from ``/proc``.  The measured latency is
the engine's and the worker's delay (fixed by construction) plus the
capture-to-playback distance the loop measures every period from the ALSA
queues (``IOStats.io_distance``, checked against a loopback click in
tests/test_alsa_jack.py).  After every recovery (an xrun, a realign, late
periods, a lost device) the median of the measured latency from 3 to 15 s
later is compared with its median over the first 10 s.

Writes ``soak.json``, ``soak.md`` and ``soak.png`` (RSS and xruns over time)
into ``--out``.  Targets over 60 minutes: 0 unrecovered xruns, RSS growth
(from the end of the warm-up minute to the end) < 1 MB, the latency back to
its start-up value after every recovery.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the JACK server and systemd's notify end, shared with the tests

from alsa_helpers import JackServer, alsa_env, jack_config, jack_pcms, jackd_available, realtime_allowed  # noqa: E402
from service_helpers import NotifySocket  # noqa: E402

CACHE = Path(os.environ.get("WAVAE_BENCH_CACHE", Path(tempfile.gettempdir()) / "wavae-bench-soak"))
SWITCH_WAIT_S = 10.0  # a live switch that has not shown in the status this long after the request is refused
SWITCH_SETTLE_S = 5.0  # after a switch shows in the status, the crossfade ends and the old bundle is dropped
PANEL_MAPPING = ROOT / "device" / "configs" / "panels" / "pi4.toml"
RATE, PERIOD = 48000, 256
RSS_TARGET_MB = 1.0
SETTLE_S, SETTLE_UNTIL_S = 3.0, 15.0  # the latency after a recovery: the median of this window after it
START_WINDOW_S = 10.0  # the start-up latency: the median over this long after READY=1
WATCHDOG_USEC = 20_000_000


@dataclass
class Plan:
    """What the soak does and when (seconds of wall time from READY=1)."""

    minutes: float = 10.0
    threading: str = "worker"  # the shipped configs' choice
    osc_rate: float = 50.0  # control messages a second
    panel_hz: float = 10.0  # rounds of the scripted hand a second (pots every round, the encoder every 5th)
    preset_every_s: float = 30.0
    switch_every_s: float = 300.0
    stall_ms: float = 150.0
    stall_first_s: float = 90.0
    stall_every_s: float = 180.0
    load_first_s: float = 120.0
    load_every_s: float = 240.0
    load_for_s: float = 60.0
    warmup_s: float = 60.0  # RSS growth is measured from here (or the first switch cycle, rss_baseline_s) to the end
    realtime: bool | None = None  # None: where this machine allows it

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def loaded(self, t: float) -> bool:
        if t < self.load_first_s or self.load_every_s <= 0:
            return False
        return (t - self.load_first_s) % self.load_every_s < self.load_for_s


# ----------------------------------------------------------------------------- bundles
def tiny_bundles(cache: Path = CACHE, steps: int = 40) -> list[Path]:
    """Two bundles of one briefly trained ``tiny`` run: int8 (played first) and fp32 (the switch target).

    Made once with the CLI a person types (``wavae train``, ``wavae export``) and cached.
    """
    wavae = [sys.executable, "-m", "wavae.cli"]
    run = cache / "tiny-run"
    out = [cache / "tiny-int8", cache / "tiny-fp32"]
    if all((b / "manifest.json").is_file() for b in out):
        return out
    cache.mkdir(parents=True, exist_ok=True)
    if not (run / "checkpoint.pt").is_file() and not any(run.glob("*.pt")):
        import soundfile as sf

        from wavae.signals import harmonic_notes

        data = cache / "data"
        data.mkdir(exist_ok=True)
        for i in range(4):
            sf.write(data / f"notes{i}.wav", harmonic_notes(3.0, 16000, seed=i), 16000)
        subprocess.run(wavae + ["train", "--preset", "tiny", "--data", str(data), "--out", str(run),
                                "--steps", str(steps)], check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    for bundle, precision in zip(out, ("int8", "fp32")):
        if not (bundle / "manifest.json").is_file():
            subprocess.run(wavae + ["export", str(run), "--out", str(bundle), "--precision", precision, "--force"],
                           check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out


# ----------------------------------------------------------------------------- the instrument's process
def instrument_config(path: Path, bundle: Path, *, threading_mode: str, realtime: bool, osc_port: int | None = None,
                      presets: Path | None = None, panel: bool = False, debug: dict[str, float] | None = None,
                      switchable: tuple[Path, ...] = ()) -> Path:
    """A device config like the shipped pi4-usb.toml, on the JACK PCM ``jplug`` (see ``service_env``);
    ``switchable``: the bundles a live switch may choose (``[bundle] paths``)."""
    paths = f"paths = [{', '.join(json.dumps(str(b)) for b in switchable)}]\n" if switchable else ""
    text = f"""
[bundle]
path = "{bundle}"
{paths}threads = 1
{jack_config(threading_mode, realtime, RATE, PERIOD)}"""
    if panel:
        text += f'\n[panel]\nmapping = "{PANEL_MAPPING}"\nadc_hz = 200\n'
    if osc_port is not None:
        text += f'\n[osc]\nhost = "127.0.0.1"\nport = {osc_port}\n'
    if presets is not None:
        text += f'\n[presets]\ndir = "{presets}"\n'
    if debug:
        text += "\n[debug]\n" + "".join(f"{k} = {v}\n" for k, v in debug.items())
    path.write_text(text)
    return path


def service_env(folder: Path, jack: JackServer, notify: NotifySocket | None, watchdog_usec: int | None = None) -> dict:
    """The environment systemd would give the unit, with alsa-lib pointed at the JACK server."""
    env = alsa_env(jack_pcms(folder / "asound.conf"), jack.env())
    run_dir = folder / "run"
    run_dir.mkdir(exist_ok=True)
    env.update(OMP_NUM_THREADS="1", RUNTIME_DIRECTORY=str(run_dir), PYTHONUNBUFFERED="1")
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.name
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


class PanelHand:
    """A scripted hand on the panel's fakes: pots K1-K4 and VOLUME swept slowly, the FREQ encoder
    turned one detent every fifth round (back and forth), SHIFT pressed every 50th round."""

    POTS = {0: 23.0, 1: 31.0, 2: 37.0, 3: 41.0, 7: 53.0}  # channel -> sweep period, s

    def __init__(self, lines, adc, hz: float):
        self.lines, self.adc, self.hz = lines, adc, hz
        self.rounds = self.detents = self.presses = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-panel-hand", daemon=True)

    def start(self) -> "PanelHand":
        self._thread.start()
        return self

    def _run(self) -> None:
        from wavae.device.panel.fakes import press, turn

        t0 = time.monotonic()
        while not self._stop.wait(1.0 / self.hz):
            t = time.monotonic() - t0
            k = self.rounds = self.rounds + 1
            for ch, period in self.POTS.items():
                depth = 200 if ch == 7 else 450  # VOLUME stays near the middle (output_gain about 0.6 .. 1.4)
                self.adc.values[ch] = int(512 + depth * math.sin(2 * math.pi * t / period))
            now = time.monotonic_ns()
            try:
                if k % 5 == 0:
                    self.lines.push(turn("GPIO17", "GPIO27", 1 if (k // 100) % 2 == 0 else -1, now, 20_000_000))
                    self.detents += 1
                if k % 50 == 0:
                    self.lines.push(press("GPIO5", now, 150_000_000, bounce=2))
                    self.presses += 1
            except OSError:  # the instrument stopped and its panel closed the lines: the hand is done
                return

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"rounds": self.rounds, "detents": self.detents, "presses": self.presses}


def instrument_main(argv: list[str]) -> int:
    """``wavae run`` with the panel's hardware replaced by the fakes and a scripted hand (see the docstring)."""
    from wavae.device import cli_run
    from wavae.device.bundle import load_bundle
    from wavae.device.config import load_config
    from wavae.device.live import main_live
    from wavae.device.panel.fakes import FakeGpioLines, FakeMcp3008
    from wavae.device.panel.mapping import load_mapping

    p = argparse.ArgumentParser(prog="soak.py instrument")
    cli_run.add_arguments(p)
    p.add_argument("--panel-hz", type=float, default=10.0)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    hand = None
    gpio = adc = None
    if cfg.panel is not None:
        mapping = load_mapping(cfg.panel.mapping, load_bundle(cfg.bundle.path).latent_dim)
        lines = FakeGpioLines(mapping.input_lines(), [mapping.led.line] if mapping.led else [])
        mcp = FakeMcp3008([512] * 8, noise=2)
        gpio, adc = (lambda: lines), (lambda: mcp)
        hand = PanelHand(lines, mcp, args.panel_hz).start()
    try:
        rc = main_live(args, open_gpio=gpio, open_adc=adc)
    finally:
        if hand is not None:
            print(json.dumps({"event": "soak_panel", **hand.stop()}), flush=True)
    return rc


# ----------------------------------------------------------------------------- traffic and faults
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OscLink:
    """OSC to the instrument (python-osc's builder and parser over a plain UDP socket)."""

    def __init__(self, port: int):
        from pythonosc.osc_message import OscMessage
        from pythonosc.osc_message_builder import OscMessageBuilder

        self._builder, self._message = OscMessageBuilder, OscMessage
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._lock = threading.Lock()  # the traffic thread and the main thread share the socket
        self.sent = 0

    def send(self, address: str, *args: Any) -> None:
        b = self._builder(address=address)
        for a in args:
            b.add_arg(a)
        with self._lock:
            self.sock.sendto(b.build().dgram, self.address)
            self.sent += 1

    def status(self, timeout: float = 2.0) -> dict | None:
        """``/wavae/status``: the reply's JSON, or None when none came (the instrument busy or gone).

        Asked from a socket of its own, so the traffic thread never waits for the reply."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(self._builder(address="/wavae/status").build().dgram, self.address)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                return None
        return json.loads(self._message(data).params[0])

    def close(self) -> None:
        self.sock.close()


class OscTraffic:
    """``rate`` control messages a second, in a fixed cycle over a few controls, paced by deadlines."""

    CYCLE = [("bias.0", -2.0, 2.0), ("bias.1", -2.0, 2.0), ("noise", 0.0, 0.5), ("bias.2", -2.0, 2.0),
             ("scale", 0.6, 1.4), ("feedback_gain", 0.0, 0.4), ("bias.3", -2.0, 2.0), ("loudness", 0.3, 0.7)]

    def __init__(self, link: OscLink, rate: float):
        self.link, self.rate = link, rate
        self.sent = 0
        self.late = 0  # messages sent more than one interval behind their deadline (this process starved)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-osc", daemon=True)

    def start(self) -> "OscTraffic":
        self._thread.start()
        return self

    def _run(self) -> None:
        dt = 1.0 / self.rate
        t_next = time.monotonic()
        k = 0
        while not self._stop.is_set():
            name, lo, hi = self.CYCLE[k % len(self.CYCLE)]
            phase = 0.5 + 0.5 * math.sin(k * 0.01 + len(name))
            self.link.send(f"/wavae/control/{name}", float(lo + (hi - lo) * phase))
            self.sent += 1
            k += 1
            t_next += dt
            wait = t_next - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            elif wait < -dt:
                self.late += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class CpuLoad:
    """One busy process per core (ordinary priority), started and stopped by phase."""

    def __init__(self, n: int | None = None):
        self.n = n or os.cpu_count() or 2
        self.procs: list[subprocess.Popen] = []

    @property
    def on(self) -> bool:
        return bool(self.procs)

    def set(self, on: bool) -> None:
        if on and not self.procs:
            self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        elif not on and self.procs:
            for p in self.procs:
                p.kill()
            for p in self.procs:
                p.wait(timeout=10)
            self.procs = []


# ----------------------------------------------------------------------------- sampling
def proc_sample(pid: int) -> dict[str, float] | None:
    """RSS (kB) and CPU time (s) of a process from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_kb": rss, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def read_status_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


COUNTERS = ("xruns", "xruns_unrecovered", "late_periods", "realigns", "device_lost", "nan_resets")


def per_minute(samples: list[dict], events: list[dict], minutes: int) -> list[dict]:
    """The 1 s samples and the traffic events folded into one row per minute."""
    rows = []
    prev_counts = {k: 0 for k in COUNTERS}
    prev_cpu = samples[0]["cpu_s"] if samples else 0.0
    prev_t = samples[0]["t"] if samples else 0.0
    for m in range(minutes):
        lo, hi = 60.0 * m, 60.0 * (m + 1)
        win = [s for s in samples if lo <= s["t"] < hi]
        if not win:
            break
        last = win[-1]
        counts = {k: last.get(k) or 0 for k in COUNTERS}
        lat = [s["latency_measured_ms"] for s in win if s.get("latency_measured_ms") is not None]
        cpu = 100.0 * (last["cpu_s"] - prev_cpu) / max(1e-9, last["t"] - prev_t)
        ev = [e for e in events if lo <= e["t"] < hi]
        rows.append({
            "minute": m + 1,
            "cpu_load_phase_s": sum(1 for s in win if s["loaded"]),
            **{f"{k}_total": counts[k] for k in COUNTERS},
            **{f"{k}_new": counts[k] - prev_counts[k] for k in COUNTERS},
            "stalls": sum(1 for e in ev if e["kind"] == "stall"),
            "rss_mb": round(last["rss_kb"] / 1024.0, 3),
            "cpu_percent": round(cpu, 1),
            "latency_measured_ms": {"min": min(lat), "median": statistics.median(lat), "max": max(lat)} if lat else None,
            "osc_sent": sum(e.get("n", 0) for e in ev if e["kind"] == "osc"),
            "preset_loads": sum(1 for e in ev if e["kind"] == "preset"),
            "bundle_switches": sum(1 for e in ev if e["kind"] == "switch"),
            "bundle_refused": sum(1 for e in ev if e["kind"] == "switch" and e.get("refused")),
        })
        prev_counts, prev_cpu, prev_t = counts, last["cpu_s"], last["t"]
    return rows


def recoveries(samples: list[dict], start_ms: float | None) -> list[dict]:
    """Every rise of xruns, realigns, late periods or device losses, and the measured latency after it."""
    out = []
    for a, b in zip(samples, samples[1:]):
        what = [k for k in ("xruns", "realigns", "late_periods", "device_lost") if (b.get(k) or 0) > (a.get(k) or 0)]
        if not what:
            continue
        after = [s["latency_measured_ms"] for s in samples
                 if b["t"] + SETTLE_S <= s["t"] <= b["t"] + SETTLE_UNTIL_S and s.get("latency_measured_ms") is not None]
        med = statistics.median(after) if after else None
        out.append({"t": round(b["t"], 1), "what": what, "latency_after_ms": med,
                    "back_to_start": None if med is None or start_ms is None else abs(med - start_ms) < 1e-6})
    return out


# ----------------------------------------------------------------------------- the run
@dataclass
class Result:
    plan: dict
    machine: dict
    bundles: list[str]
    ready_after_s: float | None = None
    minutes: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    recoveries: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    panel: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    exit_code: int | None = None
    log_tail: str = ""


def machine() -> dict:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_avg_1min_at_start": load,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run_soak(plan: Plan, bundles: list[Path], workdir: Path, log=print) -> Result:
    """Run the soak; ``workdir`` holds the config, presets, status file and the instrument's log."""
    why = jackd_available()
    if why is not None:
        raise RuntimeError(why)
    realtime = realtime_allowed() if plan.realtime is None else plan.realtime
    workdir.mkdir(parents=True, exist_ok=True)
    result = Result(plan={**asdict(plan), "realtime": realtime}, machine=machine(), bundles=[str(b) for b in bundles])
    port = free_udp_port()
    presets = workdir / "presets"
    debug = {"stall_ms": plan.stall_ms, "stall_at_s": plan.stall_first_s, "stall_every_s": plan.stall_every_s} \
        if plan.stall_ms > 0 else None
    cfg = instrument_config(workdir / "device.toml", bundles[0], threading_mode=plan.threading, realtime=realtime,
                            osc_port=port, presets=presets, panel=True, debug=debug,
                            switchable=tuple(bundles) if len(bundles) > 1 else ())
    jack = JackServer(workdir, rate=RATE, period=PERIOD, realtime=realtime)
    notify = NotifySocket()
    load = CpuLoad()
    traffic = None
    proc = None
    stdout_path, stderr_path = workdir / "instrument.out", workdir / "instrument.log"
    try:
        jack.start()
        env = service_env(workdir, jack, notify, WATCHDOG_USEC)
        cmd = [sys.executable, str(Path(__file__).resolve()), "instrument", "--config", str(cfg),
               "--panel-hz", str(plan.panel_hz)]
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        t_spawn = time.monotonic()
        _, t_ready, _ = notify.wait_for("READY", timeout=120)
        result.ready_after_s = round(t_ready - t_spawn, 3)
        log(f"soak: READY=1 after {result.ready_after_s} s; running {plan.minutes:g} min "
            f"({plan.threading}, realtime {'on' if realtime else 'off'})")
        link = OscLink(port)
        status_path = workdir / "run" / "status.json"
        # presets to switch between, saved through OSC as a person would
        names = []
        for i, (gain, scale) in enumerate(((0.0, 1.0), (0.3, 0.8), (0.15, 1.2))):
            link.send("/wavae/control/feedback_gain", gain)
            link.send("/wavae/control/scale", scale)
            link.send("/wavae/preset/save", f"soak-{i}")
            names.append(f"soak-{i}")
        traffic = OscTraffic(link, plan.osc_rate).start()
        t0 = t_ready
        next_preset, next_switch = plan.preset_every_s, plan.switch_every_s
        next_stall = plan.stall_first_s if plan.stall_ms > 0 else math.inf
        k_preset, switch_target = 0, 1
        pending_switch: tuple[str, float] | None = None  # (bundle asked for, when)
        osc_before = 0
        next_sample, next_log = 0.0, 60.0
        while True:
            t = time.monotonic() - t0
            if t >= plan.seconds or proc.poll() is not None:
                break
            load.set(plan.loaded(t))
            if t >= next_preset:
                next_preset += plan.preset_every_s
                link.send("/wavae/preset/load", names[k_preset % len(names)])
                result.events.append({"t": round(t, 2), "kind": "preset", "name": names[k_preset % len(names)]})
                k_preset += 1
            if t >= next_switch and len(bundles) > 1:
                next_switch += plan.switch_every_s
                target = bundles[switch_target].name
                link.send("/wavae/bundle", target)
                pending_switch = (target, t)
            if pending_switch is not None and t >= pending_switch[1] + 0.5:
                # the new bundle loads in the background, then crossfades in: watched for SWITCH_WAIT_S
                target, sent_at = pending_switch
                st = link.status()
                switched = st is not None and st.get("bundle") == target
                if switched or t >= sent_at + SWITCH_WAIT_S:
                    result.events.append({"t": round(sent_at, 2), "kind": "switch", "to": target,
                                          "refused": not switched, "after_s": round(t - sent_at, 2),
                                          "status_bundle": None if st is None else st.get("bundle")})
                    pending_switch = None
                    if switched:
                        switch_target = (switch_target + 1) % len(bundles)
            if t >= next_stall:
                result.events.append({"t": round(t, 2), "kind": "stall", "ms": plan.stall_ms})
                next_stall += plan.stall_every_s if plan.stall_every_s > 0 else math.inf
            if t >= next_sample:
                next_sample += 1.0
                ps = proc_sample(proc.pid)
                st = read_status_file(status_path) or {}
                if ps is not None:
                    result.samples.append({"t": round(t, 2), "loaded": load.on, **ps,
                                           **{k: st.get(k) for k in COUNTERS},
                                           "latency_ms": st.get("latency_ms"),
                                           "latency_measured_ms": st.get("latency_measured_ms")})
                    sent = traffic.sent
                    result.events.append({"t": round(t, 2), "kind": "osc", "n": sent - osc_before})
                    osc_before = sent
                if t >= next_log and result.samples:
                    next_log += 60.0
                    s = result.samples[-1]
                    log(f"soak: {t / 60:.0f} min: xruns {s['xruns']} ({s['xruns_unrecovered']} unrecovered), "
                        f"late {s['late_periods']}, RSS {s['rss_kb'] / 1024:.1f} MB, "
                        f"latency {s['latency_measured_ms']} ms")
            time.sleep(max(0.0, min(0.2, next_sample - (time.monotonic() - t0))))
        final = link.status()
        result.totals["final_osc_status"] = final
        traffic.stop()
        result.totals["osc_sent"] = traffic.sent
        result.totals["osc_late"] = traffic.late
        link.close()
    finally:
        if traffic is not None:
            traffic.stop()
        load.set(False)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            result.exit_code = proc.returncode
        notify.close()
        jack.stop()
    for line in stdout_path.read_text().splitlines() if stdout_path.exists() else []:
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("event") == "live_summary":
                result.summary = obj
            elif obj.get("event") == "soak_panel":
                result.panel = obj
    result.log_tail = stderr_path.read_text()[-4000:] if stderr_path.exists() else ""
    finish(result, plan)
    return result


def rss_baseline_s(events: list[dict], plan: Plan) -> float:
    """Where RSS growth is measured from: the end of the warm-up, or later, once the first switch
    cycle (to the other bundle and back) has settled.  Until then the process legitimately reaches
    its high-water mark: two bundles' sessions during a crossfade, the allocator's arenas; after it,
    each switch reuses that memory (one instrument built 12 times in one process plateaus after the
    second), so any growth from there on is a leak."""
    done = [e for e in events if e.get("kind") == "switch" and not e.get("refused")]
    if len(done) < 2:
        return plan.warmup_s
    return max(plan.warmup_s, done[1]["t"] + done[1].get("after_s", 0.0) + SWITCH_SETTLE_S)


def finish(result: Result, plan: Plan) -> None:
    """Per-minute rows, recoveries, totals and the targets from the samples."""
    s = result.samples
    result.minutes = per_minute(s, result.events, math.ceil(plan.minutes))
    start = [x["latency_measured_ms"] for x in s if x["t"] <= START_WINDOW_S and x.get("latency_measured_ms")]
    start_ms = statistics.median(start) if start else None
    result.recoveries = recoveries(s, start_ms)
    rss_from = rss_baseline_s(result.events, plan)
    base = [x for x in s if x["t"] >= rss_from]
    rss_growth = (base[-1]["rss_kb"] - base[0]["rss_kb"]) / 1024.0 if len(base) > 1 else None
    summ = result.summary
    unrecovered = summ.get("xruns_unrecovered", s[-1]["xruns_unrecovered"] if s else None)
    checked = [r for r in result.recoveries if r["back_to_start"] is not None]
    result.totals.update({
        "seconds": s[-1]["t"] if s else 0.0,
        "latency_start_ms": start_ms,
        "latency_configured_ms": s[-1]["latency_ms"] if s else None,
        "rss_start_mb": round(base[0]["rss_kb"] / 1024.0, 3) if base else None,
        "rss_end_mb": round(base[-1]["rss_kb"] / 1024.0, 3) if base else None,
        "rss_growth_mb": round(rss_growth, 3) if rss_growth is not None else None,
        "rss_from_s": rss_from,
        "xruns": summ.get("xruns"), "xruns_unrecovered": unrecovered,
        "late_periods": summ.get("late_periods"), "realigns": summ.get("realigns"),
        "nan_resets": (summ.get("engine_stats") or {}).get("nan_resets"),
        "stalls_injected": summ.get("stalls_injected"),
        "preset_loads": sum(1 for e in result.events if e["kind"] == "preset"),
        "bundle_switches": sum(1 for e in result.events if e["kind"] == "switch"),
        "bundle_refused": sum(1 for e in result.events if e["kind"] == "switch" and e["refused"]),
        "recoveries": len(result.recoveries),
        "recoveries_checked": len(checked),
        "recoveries_back_to_start": sum(1 for r in checked if r["back_to_start"]),
    })
    result.targets = {
        "no_unrecovered_xrun": unrecovered == 0,
        "rss_growth_below_1mb": rss_growth is not None and rss_growth < RSS_TARGET_MB,
        "latency_back_after_every_recovery": all(r["back_to_start"] for r in checked),
        "ran_to_the_end": result.exit_code == 0 and bool(s) and s[-1]["t"] >= plan.seconds - 2.0,
    }


# ----------------------------------------------------------------------------- reports
def write_reports(result: Result, out: Path, stem: str = "soak") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(asdict(result), separators=(",", ":")) + "\n")  # one line a second: compact
    plot(result, paths["png"])
    paths["md"].write_text(markdown(result, paths["png"].name))
    return paths


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.samples
    t = [x["t"] / 60.0 for x in s]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    a1.plot(t, [x["rss_kb"] / 1024.0 for x in s], color="tab:blue", lw=1)
    a1.set_ylabel("RSS (MB)")
    a2.step(t, [x["xruns"] or 0 for x in s], where="post", label="xruns", color="tab:red")
    a2.step(t, [x["xruns_unrecovered"] or 0 for x in s], where="post", label="unrecovered", color="black")
    a2.step(t, [x["late_periods"] or 0 for x in s], where="post", label="late periods", color="tab:orange", lw=0.8)
    a2.step(t, [x["realigns"] or 0 for x in s], where="post", label="realigns", color="tab:green", lw=0.8)
    a2.set_ylabel("count (cumulative)")
    a2.set_xlabel("minutes after READY=1")
    for ax in (a1, a2):
        on = None
        for x in s + [{"t": s[-1]["t"] + 1 if s else 0, "loaded": False}]:
            if x["loaded"] and on is None:
                on = x["t"]
            elif not x["loaded"] and on is not None:
                ax.axvspan(on / 60.0, x["t"] / 60.0, color="0.85", lw=0)
                on = None
        for e in result.events:
            if e["kind"] == "stall":
                ax.axvline(e["t"] / 60.0, color="tab:purple", lw=0.6, ls=":")
    a2.legend(loc="upper left", fontsize=8)
    a1.set_title("soak: RSS and xruns (grey: CPU load phases, dotted: injected stalls)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def refusal_note(tot: dict) -> list[str]:
    asked, refused = tot.get("bundle_switches") or 0, tot.get("bundle_refused") or 0
    if not asked or not refused:
        return []
    return [f"Bundle switches: {refused} of {asked} refused (the status still named the old bundle a second "
            f"later); the instrument kept playing its bundle. The instrument's log says why.", ""]


def length_note(p: dict) -> list[str]:
    if p["minutes"] >= 60:
        return []
    return [f"This run is {p['minutes']:g} minutes; the targets are set over 60 minutes: "
            f"`.venv/bin/python benchmarks/soak.py --minutes 60` (about 62 minutes with the set-up) rewrites this "
            f"page.", ""]


def markdown(r: Result, png: str) -> str:
    p, m, tot, tg = r.plan, r.machine, r.totals, r.targets
    ok = lambda b: "**met**" if b else "**missed**"  # noqa: E731
    lines = [
        "# Soak: the live loop for a long run, with traffic and faults",
        "",
        f"Written by `benchmarks/soak.py --minutes {p['minutes']:g}` on {m['date_utc']}: {m['cpu']}, "
        f"{m['cores']} cores **shared with other jobs** (load average {_f(m['load_avg_1min_at_start'])} at the "
        f"start), Python {m['python']}. The instrument runs as systemd starts it (`NOTIFY_SOCKET`, "
        f"`RUNTIME_DIRECTORY`, `WATCHDOG_USEC`), through real alsa-lib into a private `jackd -d dummy` "
        f"server at {RATE} Hz, period {PERIOD} (prefill 2), realtime priority "
        f"{'on' if p['realtime'] else 'off'}, threading `{p['threading']}`, bundle "
        f"`{Path(r.bundles[0]).name}`. How it is measured: the docstring of benchmarks/soak.py.",
        "",
        f"Traffic: OSC controls at {p['osc_rate']:g} messages/s; the Pi 4 panel mapping driven through its fakes "
        f"(pots swept {p['panel_hz']:g} times a second, the FREQ encoder turned twice a second, SHIFT pressed every "
        f"5 s); a preset load every {p['preset_every_s']:g} s; a bundle switch every {p['switch_every_s']:g} s. "
        f"Faults: a {p['stall_ms']:g} ms stall every {p['stall_every_s']:g} s from {p['stall_first_s']:g} s; one "
        f"busy process per core for {p['load_for_s']:g} s every {p['load_every_s']:g} s from {p['load_first_s']:g} s.",
        "",
        "## Targets",
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| 0 unrecovered xruns | {_f(tot.get('xruns_unrecovered'))} of {_f(tot.get('xruns'))} xruns | "
        f"{ok(tg.get('no_unrecovered_xrun'))} |",
        f"| RSS growth < {RSS_TARGET_MB:g} MB (from {tot.get('rss_from_s', p['warmup_s']):.0f} s, after the warm-up "
        f"and the first switch cycle, to the end) | "
        f"{_f(tot.get('rss_growth_mb'), 3)} MB ({_f(tot.get('rss_start_mb'), 1)} -> {_f(tot.get('rss_end_mb'), 1)} MB) "
        f"| {ok(tg.get('rss_growth_below_1mb'))} |",
        f"| latency back to its start-up value after every recovery | {tot.get('recoveries_back_to_start')} of "
        f"{tot.get('recoveries_checked')} recoveries (start-up: {_f(tot.get('latency_start_ms'), 3)} ms measured, "
        f"{_f(tot.get('latency_configured_ms'), 3)} ms configured) | "
        f"{ok(tg.get('latency_back_after_every_recovery'))} |",
        f"| ran to the end, clean exit | {_f(tot.get('seconds'))} s, exit code {r.exit_code} | "
        f"{ok(tg.get('ran_to_the_end'))} |",
        "",
        f"Start-up to READY=1: {_f(r.ready_after_s, 2)} s. Late periods {_f(tot.get('late_periods'))}, realigns "
        f"{_f(tot.get('realigns'))}, NaN resets {_f(tot.get('nan_resets'))}, stalls injected "
        f"{_f(tot.get('stalls_injected'))}. OSC messages sent {_f(tot.get('osc_sent'))} "
        f"({_f(tot.get('osc_late'))} more than one interval late). Preset loads {tot.get('preset_loads')}; bundle "
        f"switches asked {tot.get('bundle_switches')}, refused {tot.get('bundle_refused')}. Panel: "
        f"{r.panel.get('rounds', 'n/a')} rounds of pot moves, {r.panel.get('detents', 'n/a')} encoder detents, "
        f"{r.panel.get('presses', 'n/a')} SHIFT presses.",
        "",
        "Latency measured: the engine's and the worker's delays (fixed by construction) plus the capture to "
        "playback distance the loop measures from the ALSA queues every period, read from the status file once a "
        "second (so min and max below are over those samples, not over every period).",
        "",
        *refusal_note(tot),
        *length_note(p),
        f"![RSS and xruns over time]({png})",
        "",
        "## Per minute",
        "",
        "| min | load s | xruns new / total | unrecovered | late periods | realigns | NaN resets | stalls | RSS MB | "
        "CPU % | latency measured ms (min / median / max) | OSC | presets | switches (refused) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in r.minutes:
        lat = row["latency_measured_ms"]
        lat_s = f"{lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f}" if lat else "n/a"
        lines.append(
            f"| {row['minute']} | {row['cpu_load_phase_s']} | {row['xruns_new']} / {row['xruns_total']} | "
            f"{row['xruns_unrecovered_total']} | {row['late_periods_new']} | {row['realigns_new']} | "
            f"{row['nan_resets_new']} | {row['stalls']} | {row['rss_mb']:.2f} | {row['cpu_percent']:.0f} | {lat_s} | "
            f"{row['osc_sent']} | {row['preset_loads']} | {row['bundle_switches']} ({row['bundle_refused']}) |"
        )
    if r.recoveries:
        lines += ["", "## Recoveries", "",
                  f"The measured latency {SETTLE_S:g} to {SETTLE_UNTIL_S:g} s after each (median), against "
                  f"{_f(tot.get('latency_start_ms'), 3)} ms at the start.", "",
                  "| t (s) | what | latency after (ms) | back to start |", "|---:|---|---:|---|"]
        for rec in r.recoveries[:200]:
            lines.append(f"| {rec['t']} | {', '.join(rec['what'])} | {_f(rec['latency_after_ms'], 3)} | "
                         f"{rec['back_to_start']} |")
        if len(r.recoveries) > 200:
            lines.append(f"| ... | {len(r.recoveries) - 200} more in soak.json | | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["instrument"]:
        return instrument_main(argv[1:])
    p = argparse.ArgumentParser(description="Soak the live loop under JACK's dummy backend (see the docstring).")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--bundle", action="append", type=Path, default=None,
                   help="bundle to play (repeat: the next ones are the switch targets); default: a tiny run's")
    p.add_argument("--threading", choices=("worker", "inline"), default="worker")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--workdir", type=Path, default=None, help="keep the config, presets and logs here")
    p.add_argument("--report-only", type=Path, default=None, metavar="SOAK.json",
                   help="rewrite the Markdown and the PNG from a soak.json, without running")
    args = p.parse_args(argv)
    if args.report_only is not None:
        result = Result(**json.loads(args.report_only.read_text()))
        paths = write_reports(result, args.out)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    bundles = [b.resolve() for b in args.bundle] if args.bundle else tiny_bundles()  # the config lives elsewhere
    plan = Plan(minutes=args.minutes, threading=args.threading)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="wavae-soak-"))
    try:
        result = run_soak(plan, bundles, work, log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    paths = write_reports(result, args.out)
    print(json.dumps({"totals": {k: v for k, v in result.totals.items() if k != "final_osc_status"},
                      "targets": result.targets, "files": {k: str(v) for k, v in paths.items()}}, indent=1))
    return 0 if all(result.targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
