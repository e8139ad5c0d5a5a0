"""A real headless Chromium for the page tests, driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` makes Chromium read protocol messages from fd 3 and write its answers to
fd 4, each a JSON text ended by a NUL byte: no websocket, no port, no client library. The tests only
open pages on 127.0.0.1 (the daemon's, the label tool's); Chromium is started with its background
networking (updates, safe browsing, component downloads) turned off.

    with Browser() as b:
        page = b.open("http://127.0.0.1:8088/")
        b.wait(page, "document.getElementById('label').textContent === 'open'", timeout=10)
        b.screenshot(page, "live.png")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.helpers import ROOT, tools

# Where the page tests write their screenshots.
ARTIFACTS = Path(os.environ.get("FACEEDGE_TEST_ARTIFACTS", ROOT / ".test-artifacts"))

FLAGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root here
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--password-store=basic",
    "--use-mock-keychain",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def require_chromium() -> str:
    return tools.require("chromium")["chromium"]


def _above(fd: int, low: int) -> int:
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD, low)
    os.close(fd)
    return new


def log_debug(msg: str) -> None:
    import logging

    logging.getLogger(__name__).debug("%s", msg)


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1000, height: int = 640) -> None:
        self.binary = require_chromium()
        self.profile = tempfile.mkdtemp(prefix="faceedge-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Move the child's ends above 4, so that placing them on 3 and 4 cannot overwrite one another.
        to_child_r, from_child_w = (_above(fd, 10) for fd in (to_child_r, from_child_w))
        # The child wants its reading end as fd 3 and its writing end as fd 4.
        with open(Path(self.profile) / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    *FLAGS,
                    f"--user-data-dir={self.profile}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(3, 4),
                # dup2 only, before exec: the protocol's fds must be 3 and 4 in the child
                preexec_fn=lambda: (os.dup2(to_child_r, 3), os.dup2(from_child_w, 4)),  # noqa: PLW1509
            )
        os.close(to_child_r)
        os.close(from_child_w)
        self._id = 0
        self._lock = threading.Lock()
        self._buf = b""
        self.size = (width, height)

    # ---- protocol
    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0):
        with self._lock:
            self._id += 1
            mid = self._id
            msg = {"id": mid, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
            deadline = time.monotonic() + timeout
            while True:
                for reply in self._read(deadline):
                    if reply.get("id") == mid:
                        if "error" in reply:
                            raise BrowserError(f"{method}: {reply['error']}")
                        return reply.get("result", {})

    def _read(self, deadline: float):
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium exited: {self.log()[-2000:]}")
                self._buf += chunk
        *msgs, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]

    def log(self) -> str:
        try:
            return (Path(self.profile) / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""

    # ---- pages
    def open(self, url: str) -> str:
        """Open `url` in a new tab; returns the session id used for the other calls."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        w, h = self.size
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.call("Page.navigate", {"url": url}, session=session)
        return session

    def eval(self, session: str, expression: str):
        r = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=session
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def wait(self, session: str, expression: str, timeout: float = 15.0) -> float:
        """Wait until the JavaScript `expression` is true; returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            try:
                if self.eval(session, expression):
                    return time.monotonic() - t0
            except BrowserError:
                pass  # e.g. the page is still loading
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"not true within {timeout} s: {expression}")
            time.sleep(0.1)

    def screenshot(self, session: str, path: str | os.PathLike) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(base64.b64decode(data))
        return p

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception as e:  # noqa: BLE001 - it may be gone already
            log_debug(f"Browser.close: {e}")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
