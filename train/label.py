"""`python -m train label` (`make label`): review a dataset folder in the browser before training.

    python -m train label --data data/mine            # then open http://127.0.0.1:8099/

One page (train/assets/label.html: plain HTML and a little script, no build step) shows every crop
of ``<data>/<label>/<person>/``, grouped by label and person. Select crops, then move them to
another label or person folder (new ones are made), or throw them away. Nothing is deleted: thrown
away crops go to ``<data>/.trash/<label>/<person>/`` (training skips hidden folders; `make pull`
does not bring them back) and can be restored from the page or moved back by hand. A move never
overwrites: a taken name gets the next free one (``name_2.png``).

The server listens on 127.0.0.1 only. It answers only requests whose Host is that address (a web
page elsewhere cannot reach it through DNS rebinding), and changes files only for JSON POSTs from
its own page (``Content-Type: application/json``, no foreign ``Origin``: another site's page cannot
post to it). Paths from the page are checked to stay inside the data folder.

API (JSON): ``GET /api/items``; ``POST /api/move {"paths": [...], "label", "person"}``;
``POST /api/trash {"paths": [...]}``; ``POST /api/restore {"paths": [...]}`` (paths relative to
the data folder, as /api/items gives them); ``GET /img/<path>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from device.errors import FaceedgeError

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "assets" / "label.html"
TRASH = ".trash"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # as device collect's --label/--person
DEFAULT_PORT = 8099
MAX_BODY = 1 << 20


class BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Dataset:
    """The files of one dataset folder, and the moves the page asks for (one at a time)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FaceedgeError(f"--data {root}: no such folder")
        self._lock = threading.Lock()

    def items(self) -> dict:
        items, trash = [], []
        for label_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(label_dir.rglob("*")):
                rel = f.relative_to(self.root)
                if f.is_file() and f.suffix.lower() in IMAGE_TYPES and not any(x.startswith(".") for x in rel.parts):
                    person = rel.parts[1] if len(rel.parts) > 2 else ""
                    items.append({"path": rel.as_posix(), "label": rel.parts[0], "person": person})
        tdir = self.root / TRASH
        if tdir.is_dir():
            trash = [
                f.relative_to(self.root).as_posix()
                for f in sorted(tdir.rglob("*"))
                if f.is_file() and f.suffix.lower() in IMAGE_TYPES
            ]
        labels = sorted({i["label"] for i in items})
        persons = sorted({i["person"] for i in items if i["person"]})
        return {"root": str(self.root), "labels": labels, "persons": persons, "items": items, "trash": trash}

    def resolve(self, rel: str, *, in_trash: bool = False) -> Path:
        """The file `rel` names inside the data folder (or its trash); BadRequest otherwise."""
        if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
            raise BadRequest(400, f"bad path {rel!r}")
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise BadRequest(400, f"bad path {rel!r}")
        if in_trash != (parts[0] == TRASH) or any(p.startswith(".") for p in parts[1 if in_trash else 0 :]):
            raise BadRequest(400, f"bad path {rel!r}")
        p = self.root / rel
        if not Path(os.path.realpath(p)).is_relative_to(self.root):  # a symlink out of the folder
            raise BadRequest(400, f"bad path {rel!r}")
        if p.suffix.lower() not in IMAGE_TYPES or not p.is_file():
            raise BadRequest(404, f"no such image {rel!r}")
        return p

    def _place(self, src: Path, folder: Path) -> Path:
        """Rename `src` into `folder` under its name or the next free one; never overwrites."""
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / src.name
        for n in range(2, 100_000):
            try:
                os.link(src, dst)  # fails if dst exists: no overwrite, whatever happens meanwhile
            except FileExistsError:
                dst = folder / f"{src.stem}_{n}{src.suffix}"
                continue
            os.unlink(src)
            return dst
        raise BadRequest(409, f"{folder}: no free file name")

    def move(self, paths: list[str], label: str, person: str) -> list[str]:
        for what, v in (("label", label), ("person", person)):
            if not isinstance(v, str) or not NAME_OK.match(v):
                raise BadRequest(400, f"{what} {v!r}: use letters, digits, '.', '_' or '-'")
        with self._lock:
            srcs = [self.resolve(p) for p in paths]
            return [self._rel(self._place(s, self.root / label / person)) for s in srcs]

    def trash(self, paths: list[str]) -> list[str]:
        with self._lock:
            srcs = [self.resolve(p) for p in paths]
            return [self._rel(self._place(s, self.root / TRASH / s.parent.relative_to(self.root))) for s in srcs]

    def restore(self, paths: list[str]) -> list[str]:
        with self._lock:
            srcs = [self.resolve(p, in_trash=True) for p in paths]
            return [self._rel(self._place(s, self.root / s.parent.relative_to(self.root / TRASH))) for s in srcs]

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    server_version = "faceedge-label"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, (json.dumps(obj) + "\n").encode(), "application/json")

    def _check_host(self) -> None:
        if self.headers.get("Host") not in self.server.allowed_hosts:
            raise BadRequest(403, "wrong Host")

    def do_GET(self) -> None:
        try:
            self._check_host()
            path = unquote(urlsplit(self.path).path)
            ds = self.server.dataset
            if path == "/":
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif path == "/api/items":
                self._json(200, ds.items())
            elif path.startswith("/img/"):
                rel = path[len("/img/") :]
                p = ds.resolve(rel, in_trash=rel.startswith(TRASH + "/"))
                self._send(200, p.read_bytes(), IMAGE_TYPES[p.suffix.lower()])
            else:
                self._json(404, {"error": "not found"})
        except BadRequest as e:
            self._json(e.code, {"error": str(e)})

    def do_POST(self) -> None:
        try:
            self._check_host()
            origin = self.headers.get("Origin")
            if origin is not None and origin not in self.server.allowed_origins:
                raise BadRequest(403, "foreign Origin")
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise BadRequest(415, "send application/json")
            n = int(self.headers.get("Content-Length") or 0)
            if not 0 < n <= MAX_BODY:
                raise BadRequest(400, "bad Content-Length")
            try:
                body = json.loads(self.rfile.read(n))
                paths = body["paths"]
                if not isinstance(paths, list) or not paths:
                    raise ValueError("paths")
            except (ValueError, KeyError, TypeError):
                raise BadRequest(400, 'expected {"paths": [...], ...}') from None
            ds = self.server.dataset
            path = urlsplit(self.path).path
            if path == "/api/move":
                moved = ds.move(paths, body.get("label"), body.get("person"))
            elif path == "/api/trash":
                moved = ds.trash(paths)
            elif path == "/api/restore":
                moved = ds.restore(paths)
            else:
                raise BadRequest(404, "not found")
            log.info("%s: %s", path.rsplit("/", 1)[-1], ", ".join(f"{a} → {b}" for a, b in zip(paths, moved)))
            self._json(200, {"moved": moved})
        except BadRequest as e:
            self._json(e.code, {"error": str(e)})


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, dataset: Dataset, port: int = DEFAULT_PORT) -> None:
        self.dataset = dataset
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as e:
            raise FaceedgeError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
        self.port = self.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "label",
        help="review a dataset in the browser: move crops between labels/persons, trash bad ones",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (<label>/<person>/ images)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (default: %(default)s)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    server = LabelServer(Dataset(args.data), args.port)
    print(f"reviewing {server.dataset.root}: open {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
