"""``wavae web``: the instrument's page, served by the device in a process of its own.

Two pages, every asset served from ``static/`` (the device has no internet):

* ``/`` (live): every control of the running instrument, presets, the model
  list and its status.  The page talks to this process over one WebSocket
  (``/ws``); this process talks to the instrument over OSC (``OscLink``),
  asks it for ``/wavae/status`` once a second while a page is open, and
  pushes each reply, with the machine's CPU and temperature, to every page.
* ``/playground``: latent paths of uploaded sounds, the operators, A->B and
  the 4-corner plane, rendered by a niced worker process (``worker.py``) into
  a WAV the browser plays and downloads.

Files live in the state directory, and nothing outside it is ever read or
written on a request's behalf: sounds are stored under names this process
makes (``safe_name``), and a name from a request is only looked up in the
listing of its folder.

    STATE/playground/sounds/NAME.wav   NAME.npz (its path)   NAME.json (analysis)
    STATE/playground/renders/ID.wav    ID.npz
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavae.errors import WavaeError
from wavae.fileio import atomic_write_bytes

from ..bundle import MANIFEST, read_manifest
from ..controls import Controls
from ..machine import CpuUsage, cpu_temperature_c, memory_mib
from ..presets import PresetError, PresetStore, check_name
from .http import Guard, HttpError, HttpServer, Request, Response, WebSocket
from .osc_link import OscLink

log = logging.getLogger("wavae.device.web")

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".wav": "audio/wav"}
STATUS_EVERY_S = 1.0
WORKER_TIMEOUT_S = 300.0
KEEP_RENDERS = 20
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class WebError(WavaeError, OSError):
    """``wavae web`` cannot start: the port is taken, the state directory cannot be made, ..."""


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int
    state_dir: Path
    bundle: Path | None = None  # the playground's model and the live page's latent size
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    presets_dir: Path | None = None
    token: str = ""
    max_upload: int = 20 * 1024 * 1024


def safe_name(filename: str) -> str:
    """A file name a person gave, as a name this server stores: lower case, ``a-z0-9_-``, at most 48."""
    stem = Path(filename).stem.lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:48]
    return name or "sound"


def is_wav(data: bytes) -> bool:
    """RIFF/WAVE or RF64/WAVE magic: the only type the playground takes."""
    return len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"


class WebApp:
    def __init__(self, settings: WebSettings):
        self.s = settings
        self.sounds = settings.state_dir / "playground" / "sounds"
        self.renders = settings.state_dir / "playground" / "renders"
        self.manifest = read_manifest(settings.bundle) if settings.bundle is not None else None
        self.latent_dim = int(self.manifest["latent_dim"]) if self.manifest else None
        self.presets = PresetStore(settings.presets_dir) if settings.presets_dir is not None else None
        self.clients: set[WebSocket] = set()
        self.osc = OscLink(settings.osc_host, settings.osc_port, on_status=self._on_status)
        self.cpu = CpuUsage()
        self.machine: dict[str, Any] = {}
        self.http = HttpServer(Guard(settings.token), max_body=settings.max_upload + 64 * 1024)
        self.worker_lock = asyncio.Lock()
        self.started = time.monotonic()
        self._poller: asyncio.Task | None = None
        self._render_id = 0
        self._routes()

    # -- life cycle -----------------------------------------------------------
    async def start(self) -> None:
        for d in (self.sounds, self.renders):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise WebError(f"cannot create {d}: {e.strerror}; set [web] state_dir (or --state-dir) to a "
                               f"writable folder") from None
        await self.osc.open()
        try:
            await self.http.start(self.s.host, self.s.port)
        except OSError as e:
            self.osc.close()
            raise WebError(f"cannot serve on {self.s.host}:{self.s.port}: {e.strerror}; is another program on "
                           f"that port (`ss -tlpn`)? Choose another with --port or [web] port") from None
        self._poller = asyncio.create_task(self._poll_status())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for ws in list(self.clients):
            await ws.close()
        await self.http.close()
        self.osc.close()

    @property
    def port(self) -> int:
        return self.http.port

    # -- routes ---------------------------------------------------------------
    def _routes(self) -> None:
        r = self.http.route
        r("GET", "/", self._page("live.html"))
        r("GET", "/playground", self._page("playground.html"))
        r("GET", "/static/*", self._static)
        r("GET", "/favicon.ico", self._favicon)
        r("GET", "/api/info", self._info)
        r("GET", "/api/health", self._health)
        r("GET", "/api/playground/sounds", self._list_sounds)
        r("GET", "/api/playground/sound", self._sound)
        r("POST", "/api/playground/upload", self._upload)
        r("POST", "/api/playground/render", self._render)
        r("GET", "/files/*", self._file)
        self.http.websocket("/ws", self._live)

    def _page(self, name: str):
        async def handler(req: Request) -> Response:
            return Response(200, (STATIC / name).read_bytes(), CONTENT_TYPES[".html"])
        return handler

    async def _static(self, req: Request) -> Response:
        name = req.path[len("/static/"):]
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}  # only what the package ships
        if name not in files or Path(name).suffix not in CONTENT_TYPES:
            raise HttpError(404, f"no asset {name!r}")
        return Response(200, files[name].read_bytes(), CONTENT_TYPES[Path(name).suffix],
                        {"Cache-Control": "max-age=60"})

    async def _favicon(self, req: Request) -> Response:
        return Response(200, (STATIC / "icon.svg").read_bytes(), CONTENT_TYPES[".svg"], {"Cache-Control": "max-age=3600"})

    async def _health(self, req: Request) -> Response:
        return Response.json({"ok": True, "uptime_s": round(time.monotonic() - self.started, 1), **memory_mib()})

    def controls_spec(self) -> list[dict[str, Any]]:
        """The controls the live page draws, from ``wavae.device.controls`` (names, kinds, ranges)."""
        probe = Controls(self.latent_dim or 1)
        out = []
        for name in probe.names():
            if name == "bias" or name.startswith("bias."):
                continue
            spec = probe.spec(name)
            out.append({"name": name, "kind": spec.kind, "default": spec.default, "low": spec.low,
                        "high": spec.high})
        bias = probe.spec("bias.0")
        return [{"name": "bias", "kind": "bias", "dims": self.latent_dim, "low": bias.low, "high": bias.high}] + out

    def models(self) -> list[str]:
        """Bundles beside the configured one: the folders of its parent holding a manifest."""
        if self.s.bundle is None:
            return []
        parent = self.s.bundle.resolve().parent
        try:
            return sorted(p.name for p in parent.iterdir() if (p / MANIFEST).is_file())
        except OSError:
            return [self.s.bundle.name]

    async def _info(self, req: Request) -> Response:
        return Response.json({
            "bundle": self.s.bundle.name if self.s.bundle else None,
            "latent_dim": self.latent_dim,
            "sample_rate": self.manifest["sample_rate"] if self.manifest else None,
            "controls": self.controls_spec() if self.latent_dim else [],
            "models": self.models(),
            "presets": self.preset_names(),
            "osc": f"{self.s.osc_host}:{self.s.osc_port}",
            "upload_mb": self.s.max_upload / 2**20,
        })

    # -- live -----------------------------------------------------------------
    def preset_names(self) -> list[str]:
        return self.presets.names() if self.presets is not None else []

    async def _live(self, req: Request, ws: WebSocket) -> None:
        self.clients.add(ws)
        try:
            await ws.send(self._status_message())
            while (msg := await ws.receive()) is not None:
                reply = self.handle_live(msg)
                if reply is not None:
                    await ws.send(reply)
        finally:
            self.clients.discard(ws)

    def handle_live(self, msg: Any) -> dict[str, Any] | None:
        """One message from a live page; returns what to tell that page (or None)."""
        if not isinstance(msg, dict):
            return {"type": "error", "message": "messages are JSON objects"}
        kind = msg.get("type")
        try:
            if kind == "set":
                name, value = msg.get("name"), msg.get("value")
                if self.latent_dim:
                    value = Controls(self.latent_dim).check(name, value)  # a bad value never leaves this process
                if isinstance(value, bool):
                    value = int(value)
                self.osc.set_control(name, value)
                return None
            if kind == "preset":
                return self._preset(msg)
            if kind == "bundle":
                name = msg.get("name")
                if name not in self.models():
                    return {"type": "error", "about": "model", "message": f"no model named {name!r}"}
                self.osc.send("/wavae/bundle", name)
                return {"type": "notice", "about": "model", "message": f"asked the instrument to switch to {name}"}
        except WavaeError as e:
            return {"type": "error", "about": "preset" if kind == "preset" else "control", "message": str(e)}
        return {"type": "error", "message": f"unknown message type {kind!r}"}

    def _preset(self, msg: dict[str, Any]) -> dict[str, Any]:
        action, name = msg.get("action"), msg.get("name")
        check_name(name)
        if action in ("load", "save"):
            self.osc.send(f"/wavae/preset/{action}", name)
            if action == "save":
                return {"type": "presets", "names": sorted(set(self.preset_names()) | {name}),
                        "message": f"saved {name}"}
            return {"type": "notice", "about": "preset", "message": f"loading {name}"}
        if self.presets is None:
            raise PresetError("no preset folder: set [presets] dir in the device config")
        if action == "rename":
            self.presets.rename(name, check_name(msg.get("to")))
        elif action == "delete":
            self.presets.delete(name)
        else:
            raise PresetError(f"unknown preset action {action!r}: load, save, rename or delete")
        return {"type": "presets", "names": self.preset_names(), "message": f"{action}d {name}"}

    def _status_message(self) -> dict[str, Any]:
        return {"type": "status", "answering": self.osc.answering, "status": self.osc.latest,
                "machine": self.machine, "presets": self.preset_names()}

    def _on_status(self, status: dict[str, Any]) -> None:
        msg = self._status_message()
        for ws in list(self.clients):
            asyncio.ensure_future(ws.send(msg))

    async def _poll_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.machine = {"cpu_percent": self.cpu.percent(), "temperature_c": cpu_temperature_c(),
                            "web_rss_mib": memory_mib()["rss_mib"]}
            if not self.clients:
                continue  # nobody looks: the instrument is not asked
            self.osc.ask_status()
            if not self.osc.answering:
                msg = self._status_message()
                for ws in list(self.clients):
                    await ws.send(msg)

    # -- playground ------------------------------------------------------------
    def _need_bundle(self) -> Path:
        if self.s.bundle is None:
            raise HttpError(409, "no bundle: give --bundle or [bundle] path in the config")
        return self.s.bundle

    def _sound_names(self) -> list[str]:
        return sorted(p.stem for p in self.sounds.glob("*.json") if NAME_RE.match(p.stem))

    def _lookup(self, folder: Path, name: Any, suffix: str) -> Path:
        """``folder/name+suffix`` for a name that the listing of ``folder`` has; 404 otherwise."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise HttpError(404, f"no such file {name!r}")
        path = folder / f"{name}{suffix}"
        if path.name not in {p.name for p in folder.iterdir()}:
            raise HttpError(404, f"no such file {name!r}")
        return path

    async def _list_sounds(self, req: Request) -> Response:
        out = []
        for name in self._sound_names():
            try:
                seconds = json.loads((self.sounds / f"{name}.json").read_text())["path"]["seconds"]
            except (OSError, ValueError, KeyError):
                continue
            out.append({"name": name, "seconds": seconds})
        return Response.json({"sounds": out})

    async def _sound(self, req: Request) -> Response:
        path = self._lookup(self.sounds, req.query.get("name"), ".json")
        return Response(200, path.read_bytes())

    async def _upload(self, req: Request) -> Response:
        bundle = self._need_bundle()
        data = req.body
        if not data:
            raise HttpError(400, "the upload is empty")
        if not is_wav(data):
            raise HttpError(415, "the playground takes WAV files (RIFF/WAVE); convert first, e.g. "
                                 "`sox in.mp3 out.wav`")
        base = safe_name(req.query.get("name", "sound"))
        name, k = base, 2
        while (self.sounds / f"{name}.json").exists() or (self.sounds / f"{name}.wav").exists():
            name, k = f"{base[:44]}-{k}", k + 1
        wav = self.sounds / f"{name}.wav"
        atomic_write_bytes(wav, data)
        result = await self.run_worker({"job": "analyze", "bundle": str(bundle), "wav": str(wav),
                                        "path_out": str(self.sounds / f"{name}.npz")})
        if "error" in result:
            wav.unlink(missing_ok=True)
            raise HttpError(422, result["error"])
        result.update(name=name, wav=f"/files/sounds/{name}.wav")
        atomic_write_bytes(self.sounds / f"{name}.json", json.dumps(result, separators=(",", ":")).encode())
        return Response.json(result)

    async def _render(self, req: Request) -> Response:
        bundle = self._need_bundle()
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("source"), dict):
            raise HttpError(400, 'a render is {"source": {"kind": ..., "sounds": [...]}, "ops": [...]}')
        source = dict(body["source"])
        names = source.pop("sounds", None)
        if not isinstance(names, list):
            raise HttpError(400, "source.sounds lists the sounds (their names) the render starts from")
        source["paths"] = [str(self._lookup(self.sounds, n, ".npz")) for n in names]
        self._render_id += 1
        rid = f"r{int(time.time())}-{self._render_id}"
        wav, npz = self.renders / f"{rid}.wav", self.renders / f"{rid}.npz"
        result = await self.run_worker({"job": "render", "bundle": str(bundle), "source": source,
                                        "ops": body.get("ops", []), "path_out": str(npz), "wav_out": str(wav)})
        if "error" in result:
            raise HttpError(422, result["error"])
        self._prune_renders()
        result.update(name=rid, wav=f"/files/renders/{rid}.wav")
        return Response.json(result)

    def _prune_renders(self) -> None:
        wavs = sorted(self.renders.glob("*.wav"), key=lambda p: p.stat().st_mtime)
        for old in wavs[:-KEEP_RENDERS]:
            old.unlink(missing_ok=True)
            old.with_suffix(".npz").unlink(missing_ok=True)

    async def _file(self, req: Request) -> Response:
        rest = req.path[len("/files/"):]
        kind, _, file = rest.partition("/")
        folder = {"sounds": self.sounds, "renders": self.renders}.get(kind)
        if folder is None or not file.endswith(".wav"):
            raise HttpError(404, f"nothing at {req.path}")
        path = self._lookup(folder, file[:-4], ".wav")
        headers = {"Content-Disposition": f'attachment; filename="{path.name}"'} if "download" in req.query else {}
        return Response(200, path.read_bytes(), CONTENT_TYPES[".wav"], headers)

    async def run_worker(self, job: dict[str, Any]) -> dict[str, Any]:
        """One job in a niced worker process (``worker.py``); one at a time."""
        async with self.worker_lock:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wavae.device.web.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "OMP_NUM_THREADS": "1"})
            try:
                out, err = await asyncio.wait_for(proc.communicate(json.dumps(job).encode()), WORKER_TIMEOUT_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                return {"error": f"the render took longer than {WORKER_TIMEOUT_S:.0f} s and was stopped"}
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            log.error("web: the worker failed (exit %s): %s", proc.returncode, err.decode(errors="replace")[-2000:])
            return {"error": "the render failed; the log has the details"}


async def serve(settings: WebSettings, ready=None) -> None:
    """Run the page until cancelled (SIGINT/SIGTERM end it through the caller)."""
    app = WebApp(settings)
    await app.start()
    log.info("web: instrument OSC at %s:%d", settings.osc_host, settings.osc_port)
    if ready is not None:
        ready(app)
    try:
        await asyncio.Event().wait()
    finally:
        await app.close()
