"""HTTP output: `/healthz`, `/metrics` (Prometheus) and `/latest`, served from a daemon thread.

The server only reads the shared `Telemetry`; it never waits on the main loop, so it still answers
(with `stalled` or `error`) when the loop is stuck. It binds 127.0.0.1:8088 by default. Bound to
any other address, a bearer token is required by config validation, and every request must carry
``Authorization: Bearer <token>`` (compared in constant time). The token comes from a file or an
environment variable, never from the YAML itself.

No endpoint returns image data unless the daemon was started with `expose_images`; then
`/latest.jpg` serves the last crop the daemon handed to `publish_image()`. The live view (`/`,
`/view.json`, `/frame.jpg`, `/stream.mjpg`) is device/liveview.py's.

Under load (`make bench-http`): a real listen backlog (LISTEN_BACKLOG; socketserver's default
of 5 dropped the SYNs of 20 clients connecting at once, each retried after 1 s), and a fixed pool
of WORKERS threads fed by a bounded queue of accepted connections instead of one new thread per
connection. Each connection serves one request (`Connection: close`), so an idle client never
holds a worker, and a client that sends nothing is dropped after REQUEST_TIMEOUT_S. When the
queue is full, a connection gets an immediate 503 with `Retry-After` rather than waiting. The
pool also bounds how many threads compete with the classification loop for the interpreter lock.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from device import liveview
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
REQUEST_TIMEOUT_S = 2.0  # a client must send its request within this
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


class _Server(HTTPServer):
    """HTTPServer with a listen backlog and a fixed pool of worker threads (see the module doc)."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG  # socketserver passes it to listen()
    output: "HttpOutput"

    def __init__(self, address, handler, *, workers: int = WORKERS, queue_size: int = QUEUE_SIZE) -> None:
        self._pending: queue.Queue = queue.Queue(maxsize=queue_size)
        self._workers: list[threading.Thread] = []
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
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one connection's failure must not end the worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

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
        for _ in self._workers:
            self._pending.put(None)
        for t in self._workers:
            t.join(timeout=0.5)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "faceedge"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # every response has a Content-Length; one request per connection
    timeout = REQUEST_TIMEOUT_S  # a client that sends nothing does not hold a worker

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _reply(self, code: int, body: bytes, ctype: str, send_body: bool, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # an idle keep-alive client must not hold a worker
        self.close_connection = True
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _json(self, code: int, obj, send_body: bool, extra: dict | None = None) -> None:
        body = (json.dumps(obj, allow_nan=False, default=str) + "\n").encode()
        self._reply(code, body, "application/json", send_body, extra)

    def _authorized(self) -> bool:
        token = self.server.output.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # Compare even when the scheme is wrong, so timing says nothing about which part failed.
        ok = hmac.compare_digest(given.strip().encode(), token.encode())
        return ok and scheme.lower() == "bearer"

    def _handle(self, send_body: bool) -> None:
        out = self.server.output
        try:
            if not self._authorized():
                self._json(401, {"error": "unauthorized"}, send_body, {"WWW-Authenticate": 'Bearer realm="faceedge"'})
                return
            path = urlsplit(self.path).path
            if liveview.handle(self, out, path, send_body):
                return
            if path == "/healthz":
                snap = out.telemetry.snapshot()
                self._json(200 if snap["status"] == "ok" else 503, snap, send_body)
            elif path == "/metrics":
                body = out.telemetry.prometheus_text().encode()
                self._reply(200, body, PROMETHEUS_CONTENT_TYPE, send_body)
            elif path == "/latest":
                latest = out.telemetry.latest
                if latest is None:
                    self._json(404, {"error": "no result yet"}, send_body)
                else:
                    from device.outputs.jsonl import result_dict

                    self._json(200, result_dict(latest), send_body)
            elif path == "/latest.jpg" and out.expose_images:
                jpeg = out.latest_jpeg()
                if jpeg is None:
                    self._json(404, {"error": "no image yet"}, send_body)
                else:
                    self._reply(200, jpeg, "image/jpeg", send_body)
            else:
                self._json(404, {"error": "not found", "endpoints": out.endpoints}, send_body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # never let one request take the thread down silently
            log.exception("http: error answering %s", self.path)
            out.telemetry.inc("errors")
            try:
                self._json(500, {"error": "internal error"}, send_body)
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
        cls = type(
            "_BoundServer", (_Server,), {"address_family": socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET}
        )
        try:
            self._server = cls((self.cfg.host, self.cfg.port), _Handler)
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
