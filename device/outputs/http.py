"""HTTP output: `/healthz`, `/metrics` (Prometheus) and `/latest`, served from a daemon thread.

The server only reads the shared `Telemetry`; it never waits on the main loop, so it still answers
(with `stalled` or `error`) when the loop is stuck. It binds 127.0.0.1:8088 by default. Bound to
any other address, a bearer token is required by config validation, and every request must carry
``Authorization: Bearer <token>`` (compared in constant time, `device.digest.equal`). The token
comes from a file or an environment variable, never from the YAML itself.

No endpoint returns image data unless the daemon was started with `expose_images`; then
`/latest.jpg` serves the last crop the daemon handed to `publish_image()`. The live view (`/`,
`/view.json`, `/frame.jpg`, `/stream.mjpg`) is device/liveview.py's.

Under load (`make bench-http`): a real listen backlog (LISTEN_BACKLOG; socketserver's default
of 5 dropped the SYNs of 20 clients connecting at once, each retried after 1 s), and a fixed pool
of WORKERS threads fed by a bounded queue of accepted connections instead of one new thread per
connection. Each connection serves one request (`Connection: close`), so an idle client never
holds a worker, and a client that has not sent its whole request within REQUEST_TIMEOUT_S (however
it splits its writes) is dropped. When the queue is full, a connection gets an immediate 503 with
`Retry-After` rather than waiting. The pool also bounds how many threads compete with the
classification loop for the interpreter lock.

The HTTP/1.1 server is this module's own, on `socketserver`: `http.server` would bring http.client,
email, ssl (OpenSSL), mimetypes, html, calendar, random and the compression modules with it, about
7 MB of resident memory on the daemon for a server that answers GET and HEAD on a few paths.
`read_request` reads the request line and the headers (names case-insensitive; at most MAX_LINE
bytes a line and MAX_HEADERS headers, else 414 or 431). A body is not used (what has arrived of it
is read away before closing, so that the close does not reset the connection under the answer). A
method other than GET and HEAD gets 501, a malformed request 400, an HTTP version other than 1.x
505, each with a JSON body like every other answer, and the connection is closed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import socketserver
import threading
import time
from typing import NamedTuple

from device import liveview
from device.digest import equal
from device.errors import FaceedgeError
from device.outputs.configs import HttpConfig
from device.telemetry import Telemetry
from device.types import Output, Result, register_output

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LISTEN_BACKLOG = 128  # connections the kernel holds for accept() (capped by net.core.somaxconn)
WORKERS = 4  # threads answering requests
QUEUE_SIZE = 64  # accepted connections waiting for a worker; beyond that: 503 at once
REQUEST_TIMEOUT_S = 2.0  # a client must send its whole request (line and headers) within this
MAX_LINE = 8192  # bytes of the request line (414 beyond) and of each header line (431 beyond)
MAX_HEADERS = 100  # header lines (431 beyond)
MAX_HEAD_BYTES = 32 * 1024  # the request line and all headers together (431 beyond): ~0.13 MB for 4 workers
CLOSE_WAIT_S = 0.5  # close(): how long all workers together get to finish
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
SERVER = "faceedge"  # the Server header: no version of anything
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    414: "Request-URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
    b'Retry-After: 1\r\nConnection: close\r\n\r\n{"error": "busy"}'
)


def read_token(cfg: HttpConfig) -> str | None:
    """The configured bearer token, or None when the server runs without one (loopback only)."""
    if cfg.token_file is not None:
        try:
            token = cfg.token_file.read_text().strip().splitlines()
        except OSError as e:
            raise FaceedgeError(f"outputs.http.token_file {cfg.token_file}: {e.strerror or e}") from e
        token = token[0].strip() if token else ""
        where = f"outputs.http.token_file {cfg.token_file}"
        mode = cfg.token_file.stat().st_mode
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o): chmod 600 it", where, mode & 0o777)
    elif cfg.token_env is not None:
        token = os.environ.get(cfg.token_env, "").strip()
        where = f"outputs.http.token_env ${cfg.token_env}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise FaceedgeError(f"{where}: token is missing or shorter than {MIN_TOKEN_CHARS} characters")
    return token


# ----------------------------------------------------------------------------- reading a request


class BadRequest(Exception):
    """A request refused with `code` (400, 414, 431, 505); the message goes into the JSON answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Request(NamedTuple):
    method: str  # as sent (case-sensitive: `get` is not GET)
    target: str  # as sent: path, query and all
    headers: dict[str, str]  # names in lower case; of a repeated name, the first


def read_request(sock: socket.socket, timeout: float = REQUEST_TIMEOUT_S) -> Request | None:
    """The request line and headers arriving on `sock`, all within `timeout` seconds however the
    client splits its writes; None when the client closed without sending anything (or sent an
    empty line). Raises TimeoutError when they are not complete in time, BadRequest when they are
    malformed or too large. Bytes after the headers (a body) are not kept."""
    lines = _read_head(sock, time.monotonic() + timeout)
    if not lines:
        return None
    words = lines[0].decode("latin-1").split()
    if len(words) != 3:
        raise BadRequest(400, "bad request line")
    method, target, version = words
    name, _, number = version.partition("/")
    major, dot, minor = number.partition(".")
    if name != "HTTP" or not dot or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in (major, minor)):
        raise BadRequest(400, "bad HTTP version")
    if int(major) != 1:
        raise BadRequest(505, "HTTP version not supported")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field, colon, value = line.decode("latin-1").partition(":")
        # No space in a name (RFC 9112 5.1), nor before it: that would be a folded line, which is refused.
        if not colon or not field or " " in field or "\t" in field:
            raise BadRequest(400, "bad header line")
        headers.setdefault(field.lower(), value.strip(" \t"))
    return Request(method, target, headers)


def _read_head(sock: socket.socket, deadline: float) -> list[bytes]:
    """The lines up to the first empty one, CRLF (or LF) cut off; [] when nothing came."""
    lines: list[bytes] = []
    buf = b""
    size = 0
    while True:
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > MAX_LINE + 1:  # + its CR
                raise _too_long(lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not complete in time")
            sock.settimeout(left)
            chunk = sock.recv(MAX_LINE)
            if not chunk:
                if lines or buf:
                    raise BadRequest(400, "request ended before its headers did")
                return []
            buf += chunk
            continue
        line, buf = buf[:nl].removesuffix(b"\r"), buf[nl + 1 :]
        if len(line) > MAX_LINE:
            raise _too_long(lines)
        size += len(line) + 2
        if size > MAX_HEAD_BYTES:
            raise BadRequest(431, f"request head longer than {MAX_HEAD_BYTES} bytes")
        if not line:
            return lines
        lines.append(line)
        if len(lines) > 1 + MAX_HEADERS:
            raise BadRequest(431, f"more than {MAX_HEADERS} headers")


def _too_long(lines: list[bytes]) -> BadRequest:
    if not lines:
        return BadRequest(414, f"request line longer than {MAX_LINE} bytes")
    return BadRequest(431, f"header line longer than {MAX_LINE} bytes")


def route_path(target: str) -> str:
    """The path a request target is routed by: without query and fragment; of an absolute URI
    (`http://host/path`), the path; leading slashes collapsed to one (as `http.server` did)."""
    path = target.partition("#")[0].partition("?")[0]
    if path.startswith("/"):
        return "/" + path.lstrip("/")
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        return "/" + rest.partition("/")[2]
    return path


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(t: float | None = None) -> str:
    """`t` (now when None) as an HTTP date: `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 5.6.7)."""
    g = time.gmtime(t)
    return (
        f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year:04d} "
        f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT"
    )


# ----------------------------------------------------------------------------- the server


class _Server(socketserver.TCPServer):
    """A TCP server with a listen backlog and a fixed pool of worker threads (see the module doc).
    IPv6 when the host has a colon."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG  # socketserver passes it to listen()
    output: HttpOutput

    def __init__(self, address, handler, *, workers: int = WORKERS, queue_size: int = QUEUE_SIZE) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._pending: queue.Queue = queue.Queue(maxsize=queue_size)
        self._workers: list[threading.Thread] = []
        self._active: set[socket.socket] = set()  # connections a worker is answering
        self._active_lock = threading.Lock()
        super().__init__(address, handler)  # binds and listens; closes itself on failure
        self._workers = [
            threading.Thread(target=self._work, name=f"faceedge-http-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._workers:
            t.start()

    def process_request(self, request, client_address) -> None:
        """Called by the accept loop: hand the connection to the pool, or say busy at once."""
        try:
            self._pending.put_nowait((request, client_address))
        except queue.Full:
            try:
                request.settimeout(0.5)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            request, client_address = item
            with self._active_lock:
                self._active.add(request)
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one connection's failure must not end the worker
                self.handle_error(request, client_address)
            finally:
                with self._active_lock:
                    self._active.discard(request)
                self.shutdown_request(request)

    def shutdown_request(self, request) -> None:
        """End a connection: our FIN, then read away what the client has already sent and we did not
        read (a body), since closing a socket with unread bytes resets the connection, and a client
        may then lose the answer before it read it."""
        try:
            request.shutdown(socket.SHUT_WR)
            request.setblocking(False)
            for _ in range(16):  # 1 MiB at most; only what is there already
                if not request.recv(65536):
                    break
        except OSError:  # nothing more there (BlockingIOError), or the client is gone
            pass
        self.close_request(request)

    def handle_error(self, request, client_address) -> None:
        log.debug("http: error on a connection from %s", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        while True:  # connections still waiting: close them
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        with self._active_lock:  # connections being answered (a slow reader, a stream): cut them short
            for request in self._active:
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for _ in self._workers:
            self._pending.put(None)
        deadline = time.monotonic() + CLOSE_WAIT_S  # one budget for all workers, not one each
        for t in self._workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))


class _Handler(socketserver.BaseRequestHandler):
    """One connection: read its request, answer it; the server closes it afterwards.

    The routes (here and device/liveview.py's `handle`) answer through `reply`, `reply_json`, or
    `begin_stream` and `write`; after a HEAD request these send the headers only.
    """

    server: _Server
    request: socket.socket

    def setup(self) -> None:
        self.method, self.target, self.headers = "", "", {}
        self.answered = False  # a status line went out: a failure after it cannot become a 500

    def handle(self) -> None:
        try:
            req = read_request(self.request)
        except TimeoutError:
            log.debug("http: %s sent no whole request within %.1f s", self.client_address[0], REQUEST_TIMEOUT_S)
            return
        except BadRequest as e:
            self.request.settimeout(REQUEST_TIMEOUT_S)
            self.reply_json(e.code, {"error": str(e)})
            return
        if req is None:
            return
        self.method, self.target, self.headers = req
        self.request.settimeout(REQUEST_TIMEOUT_S)  # a client that does not read the answer is dropped
        if self.method not in ("GET", "HEAD"):
            self.reply_json(501, {"error": "only GET and HEAD are supported"})
            return
        self._route()

    def _head(self, code: int, fields: list[tuple[str, str]]) -> bytes:
        self.answered = True
        log.debug('http: %s "%s %s" %d', self.client_address[0], self.method, self.target, code)
        lines = [f"HTTP/1.1 {code} {REASONS[code]}", f"Server: {SERVER}", f"Date: {http_date()}"]
        lines += [f"{k}: {v}" for k, v in fields]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def reply(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        """The whole answer: status, headers (`extra` last) and, unless HEAD, `body`."""
        fields = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),  # one request per connection: an idle client holds no worker
            *(extra or {}).items(),
        ]
        head = self._head(code, fields)
        self.request.sendall(head if self.method == "HEAD" else head + body)

    def reply_json(self, code: int, obj, extra: dict[str, str] | None = None) -> None:
        body = (json.dumps(obj, allow_nan=False, default=str) + "\n").encode()
        self.reply(code, body, "application/json", extra)

    def begin_stream(self, ctype: str) -> bool:
        """A 200 without Content-Length, its body `write`s until the connection closes; False after
        HEAD (headers sent, no body to follow)."""
        fields = [("Content-Type", ctype), ("Cache-Control", "no-store"), ("Connection", "close")]
        self.request.sendall(self._head(200, fields))
        return self.method != "HEAD"

    def write(self, data: bytes) -> None:
        self.request.sendall(data)

    def _authorized(self) -> bool:
        token = self.server.output.token
        if token is None:
            return True
        scheme, _, given = self.headers.get("authorization", "").partition(" ")
        # Compare even when the scheme is wrong, so timing says nothing about which part failed.
        ok = equal(given.strip().encode("latin-1"), token.encode())
        return ok and scheme.lower() == "bearer"

    def _host_allowed(self) -> bool:
        """Without a token (loopback only), a request naming another host is refused: a web page whose
        domain was re-pointed at 127.0.0.1 (DNS rebinding) must not read /latest.jpg or the stream
        through a browser on the Pi or through an `ssh -L` tunnel. No Host header: not a browser."""
        host = self.headers.get("host")
        if host is None or self.server.output.token is not None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # without the port
        configured = self.server.output.cfg.host
        return name.lower() in (*LOOPBACK_NAMES, configured, f"[{configured}]")

    def _route(self) -> None:
        out = self.server.output
        try:
            if not self._host_allowed():
                self.reply_json(400, {"error": "host not allowed: use 127.0.0.1 or localhost"})
                return
            if not self._authorized():
                self.reply_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="faceedge"'})
                return
            path = route_path(self.target)
            if liveview.handle(self, out, path):
                return
            if path == "/healthz":
                snap = out.telemetry.snapshot()
                self.reply_json(200 if snap["status"] == "ok" else 503, snap)
            elif path == "/metrics":
                self.reply(200, out.telemetry.prometheus_text().encode(), PROMETHEUS_CONTENT_TYPE)
            elif path == "/latest":
                latest = out.telemetry.latest
                if latest is None:
                    self.reply_json(404, {"error": "no result yet"})
                else:
                    from device.outputs.jsonl import result_dict

                    self.reply_json(200, result_dict(latest))
            elif path == "/latest.jpg" and out.expose_images:
                jpeg = out.latest_jpeg()
                if jpeg is None:
                    self.reply_json(404, {"error": "no image yet"})
                else:
                    self.reply(200, jpeg, "image/jpeg")
            else:
                self.reply_json(404, {"error": "not found", "endpoints": out.endpoints})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # never let one request take the thread down silently
            log.exception("http: error answering %s", self.target)
            out.telemetry.inc("errors")
            if not self.answered:
                try:
                    self.reply_json(500, {"error": "internal error"})
                except OSError:
                    pass


@register_output("http")
class HttpOutput(Output):
    """Serves health, metrics and the latest result, all read from `Telemetry` (`publish()` is a no-op)."""

    def __init__(self, cfg: HttpConfig, telemetry: Telemetry, *, expose_images: bool = False):
        self.cfg = cfg
        self.telemetry = telemetry
        self.expose_images = expose_images
        self.token = read_token(cfg)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._image = None
        self._image_seq = 0  # bumped per new image, so the JPEG cache knows when it is out of date
        self._image_lock = threading.Lock()
        self._jpeg_cache: tuple[int, bytes] | None = None
        self.frames = liveview.LiveFrames()  # the live view's latest frame (publish_frame)
        self.view_extra = None  # a callable adding keys to /view.json (device collect's counts)

    @property
    def endpoints(self) -> list[str]:
        images = ["/latest.jpg", "/frame.jpg", "/stream.mjpg"] if self.expose_images else []
        return ["/", "/view.json", "/healthz", "/metrics", "/latest"] + images

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when configured with port 0)."""
        if self._server is None:
            raise RuntimeError("http output not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        try:
            self._server = _Server((self.cfg.host, self.cfg.port), _Handler)
        except OSError as e:
            raise FaceedgeError(f"outputs.http: cannot bind {self.cfg.host}:{self.cfg.port}: {e.strerror or e}") from e
        self._server.output = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="faceedge-http", daemon=True
        )
        self._thread.start()
        log.info(
            "http: serving %s on %s%s", ", ".join(self.endpoints), self.url, " (token required)" if self.token else ""
        )

    def publish(self, result: Result) -> None:
        """Nothing to do: /latest reads the result the daemon gave `Telemetry.result_published`."""

    def publish_image(self, rgb) -> None:
        """Keep a reference to the last crop (RGB uint8 array) for /latest.jpg; encoded only on request.

        The caller must not modify the array afterwards (pass a fresh crop or a copy).
        """
        if self.expose_images:
            with self._image_lock:
                self._image = rgb
                self._image_seq += 1

    def publish_frame(self, rgb, box) -> None:
        """The live view's frame (device/liveview.py): kept by reference, encoded on request."""
        if self.expose_images:
            self.frames.put(rgb, box)

    def latest_jpeg(self) -> bytes | None:
        with self._image_lock:
            img, seq, cached = self._image, self._image_seq, self._jpeg_cache
        if img is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached[1]
        from device.crop import encode_image_rgb

        jpeg = encode_image_rgb(img, ".jpg", jpeg_quality=90)
        if jpeg is None:
            return None
        with self._image_lock:
            self._jpeg_cache = (seq, jpeg)
        return jpeg

    def close(self) -> None:
        self.frames.close()  # ends MJPEG streams, so their workers are free to stop
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
