"""A real mosquitto broker on 127.0.0.1 for tests, and a recording subscriber."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.helpers import tools
from tests.helpers.sshd import free_port  # noqa: F401 - one free-port helper for every server fixture


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """mosquitto listening on 127.0.0.1:<port> only, anonymous; optional on-disk persistence.

    Persistence lets a subscriber with a persistent session (clean_session=False) receive, after a
    broker restart, the QoS 1 messages published while it was away: the tests need no race between
    "subscriber reconnects" and "client under test reconnects and flushes its queue".
    """

    def __init__(
        self, workdir: Path, port: int | None = None, persistence: bool = False, extra: list[str] | None = None
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *([] if any(x.startswith("allow_anonymous") for x in extra or []) else ["allow_anonymous true"]),
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "log_type error",
            "log_type warning",
        ]
        lines += extra or []  # e.g. TLS files, password_file (they apply to the listener above)
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot enter pytest's 0700 tmp dirs
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> float:
        """Start and wait until it accepts connections; returns the time.monotonic() it was up.
        Skips the test where mosquitto is not installed (fails it under CI: tests/helpers/tools.py)."""
        binary = tools.require("mosquitto")["mosquitto"]
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited {self.proc.returncode}: {(self.workdir / 'mosquitto.log').read_text()}"
                )
            if port_open(self.port):
                return time.monotonic()
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def save(self, timeout: float = 5.0) -> None:
        """Write the persistence database now (SIGUSR1) and wait for the file."""
        db = self.workdir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                time.sleep(0.05)
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not write its database")

    def kill(self) -> None:
        """Hard kill (SIGKILL): no goodbye to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class Recorder:
    """A paho subscriber that records (monotonic time, topic, payload, retain) for every message."""

    def __init__(
        self,
        port: int,
        topic: str,
        client_id: str = "",
        persistent: bool = False,
        qos: int = 1,
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.topic, self.qos = topic, qos
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=self.qos)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 10.0):
        """Wait until pred(message) holds for some message; return that message or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def on(self, topic: str) -> list[tuple[float, str, bytes, bool]]:
        with self.cond:
            return [m for m in self.messages if m[1] == topic]

    def on_prefix(self, prefix: str) -> list[tuple[float, str, bytes, bool]]:
        with self.cond:
            return [m for m in self.messages if m[1].startswith(prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
