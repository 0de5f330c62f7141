"""A small HTTP/1.1 server with WebSockets on asyncio streams (stdlib only).

Why not a framework: the page runs on the instrument's board beside the audio
loop, and every megabyte of the web process is one the model cannot have.  The
device's needs are few (static files, JSON, one upload, one WebSocket), so the
server is this file: one request per connection (``Connection: close``),
bodies only with ``Content-Length`` and never more than ``max_body`` bytes,
headers capped at ``MAX_HEAD``, a deadline on every read.

Every request passes ``Guard`` first:

* ``Host`` must be an IP literal or ``localhost`` (or the configured name):
  a web site the browser visits cannot reach the page through a DNS
  rebinding of its own name;
* a request with an ``Origin`` (any POST or WebSocket from a browser) must
  come from the page's own origin: no other site can drive the instrument;
* with a token (LAN binding), every request carries it, as the ``wavae_token``
  cookie set by opening ``/?token=...`` once, or as ``Authorization: Bearer``.

WebSocket (RFC 6455): text frames carrying JSON, client frames masked,
messages up to ``MAX_WS_MESSAGE``, ping answered, close echoed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("wavae.device.web")

MAX_HEAD = 16 * 1024
MAX_WS_MESSAGE = 64 * 1024
READ_TIMEOUT_S = 30.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
TOKEN_COOKIE = "wavae_token"
REASONS = {200: "OK", 204: "No Content", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class HttpError(Exception):
    """Ends a request with ``status`` and a one-line message (sent as JSON)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    client: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HttpError(400, f"the request body is not JSON: {e}") from None

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> "Response":
        return cls(status, json.dumps(obj, separators=(",", ":")).encode())


class WebSocket:
    """One open WebSocket: ``receive()`` JSON messages (None at the close), ``send(obj)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.closed = False
        self._send_lock = asyncio.Lock()

    async def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 1 << 16:
            head += bytes([126]) + struct.pack(">H", n)
        else:
            head += bytes([127]) + struct.pack(">Q", n)
        async with self._send_lock:
            self.writer.write(head + payload)
            await self.writer.drain()

    async def send(self, obj: Any) -> bool:
        """Send ``obj`` as JSON text; False when the socket is gone."""
        if self.closed:
            return False
        try:
            await self._frame(0x1, json.dumps(obj, separators=(",", ":")).encode())
            return True
        except (ConnectionError, OSError):
            self.closed = True
            return False

    async def receive(self) -> Any:
        """The next JSON message; None once the peer closes (or breaks the protocol)."""
        message = b""
        while not self.closed:
            try:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
                if not b1 & 0x80 or len(message) + n > MAX_WS_MESSAGE:
                    await self.close(1002 if not b1 & 0x80 else 1009)
                    return None
                mask = await self.reader.readexactly(4)
                data = bytearray(await self.reader.readexactly(n))
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                self.closed = True
                return None
            for i in range(n):
                data[i] ^= mask[i & 3]
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close
                await self.close(1000)
                return None
            if opcode == 0x9:  # ping
                await self._frame(0xA, bytes(data))
                continue
            if opcode == 0xA:
                continue
            message += data
            if b0 & 0x80:  # FIN: the message is whole
                try:
                    return json.loads(message)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    message = b""
                    await self.send({"type": "error", "message": "messages are JSON"})
        return None

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        try:
            await self._frame(0x8, struct.pack(">H", code))
        except (ConnectionError, OSError):
            pass
        self.closed = True


Handler = Callable[[Request], Awaitable[Response]]
WsHandler = Callable[[Request, WebSocket], Awaitable[None]]


@dataclass(frozen=True)
class Guard:
    """What a request must satisfy before any handler sees it (see the module docstring)."""

    token: str = ""
    hostnames: tuple[str, ...] = ()

    def check(self, req: Request) -> None:
        host = req.headers.get("host", "")
        name = urlsplit("//" + host).hostname or ""
        if not (name == "localhost" or name in self.hostnames or _is_ip(name)):
            raise HttpError(403, f"unknown Host {host!r}: open the page by the device's address")
        origin = req.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            raise HttpError(403, "cross-site request refused: the page only takes requests from itself")
        if self.token:
            given = req.cookie(TOKEN_COOKIE) or ""
            auth = req.headers.get("authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise HttpError(401, "this page needs its token: open it as http://ADDRESS:PORT/?token=...")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HttpServer:
    """Routes ``(method, path)`` to handlers; ``prefix`` routes take any path below them."""

    def __init__(self, guard: Guard, max_body: int):
        self.guard, self.max_body = guard, max_body
        self.routes: dict[tuple[str, str], Handler] = {}
        self.prefixes: list[tuple[str, str, Handler]] = []
        self.ws_routes: dict[str, WsHandler] = {}
        self.server: asyncio.base_events.Server | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("/*"):
            self.prefixes.append((method, path[:-1], handler))
        else:
            self.routes[(method, path)] = handler

    def websocket(self, path: str, handler: WsHandler) -> None:
        self.ws_routes[path] = handler

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                req = await asyncio.wait_for(self._read_request(reader, peer), READ_TIMEOUT_S)
                if req is None:
                    return
                token = req.query.get("token") if self.guard.token else None
                self.guard.check(_with_token_cookie(req, token))
                if req.path in self.ws_routes and req.headers.get("upgrade", "").lower() == "websocket":
                    await self._upgrade(req, reader, writer)
                    return
                if token is not None:  # the token once in the address: keep it in a cookie, drop it from the URL
                    resp = Response(302, b"", "text/plain", {
                        "Location": req.path,
                        "Set-Cookie": f"{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"})
                else:
                    resp = await self._dispatch(req)
            except HttpError as e:
                resp = Response.json({"error": e.message}, e.status)
            except asyncio.TimeoutError:
                resp = Response.json({"error": "request too slow"}, 400)
            await self._write(writer, resp)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, peer: Any) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, "request headers too large") from None
        except asyncio.IncompleteReadError:
            return None
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HttpError(400, "malformed request line") from None
        if not version.startswith("HTTP/1."):
            raise HttpError(400, "HTTP/1.x only")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, sep, v = line.partition(":")
                if not sep:
                    raise HttpError(400, "malformed header")
                headers[k.strip().lower()] = v.strip()
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        req = Request(method.upper(), unquote(url.path), query, headers, b"", str(peer[0]) if peer else "")
        if "transfer-encoding" in headers:
            raise HttpError(411, "send a Content-Length; chunked bodies are not taken")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length < 0 or length > self.max_body:
            raise HttpError(413, f"the body is {length} bytes; at most {self.max_body} are taken")
        if length:
            req.body = await reader.readexactly(length)
        return req

    async def _dispatch(self, req: Request) -> Response:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            for method, prefix, h in self.prefixes:
                if req.method == method and req.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            known = {p for (_, p) in self.routes} | {p for _, p, _ in self.prefixes}
            if req.path in known:
                raise HttpError(405, f"{req.method} is not allowed on {req.path}")
            raise HttpError(404, f"nothing at {req.path}")
        try:
            return await handler(req)
        except HttpError:
            raise
        except Exception:  # a bug in a handler: logged with its traceback, the server goes on
            log.exception("web: %s %s failed", req.method, req.path)
            raise HttpError(500, "internal error; the log has the details") from None

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, resp: Response) -> None:
        head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}",
                f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}",
                "Connection: close", "X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer",
                "X-Frame-Options: DENY", "Cache-Control: no-store"]
        head += [f"{k}: {v}" for k, v in resp.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        await writer.drain()

    async def _upgrade(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = req.headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:  # binascii.Error
            key_ok = False
        if req.headers.get("sec-websocket-version") != "13" or not key_ok:
            await self._write(writer, Response.json({"error": "bad WebSocket handshake"}, 400))
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        await writer.drain()
        ws = WebSocket(reader, writer)
        try:
            await self.ws_routes[req.path](req, ws)
        finally:
            await ws.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _with_token_cookie(req: Request, token: str | None) -> Request:
    """The request as if ``token`` (from ``?token=``) were its cookie, for the guard's check."""
    if token is None:
        return req
    headers = dict(req.headers)
    headers["cookie"] = f"{TOKEN_COOKIE}={token}"
    headers.pop("authorization", None)
    return Request(req.method, req.path, req.query, headers, req.body, req.client)
