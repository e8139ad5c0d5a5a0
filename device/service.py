"""systemd integration without a systemd Python dependency: sd_notify and the watchdog interval.

systemd passes ``$NOTIFY_SOCKET`` to a `Type=notify` service: a unix datagram socket (a path, or
an abstract name written with a leading ``@``). The daemon sends:

- ``READY=1`` once the first result is out (systemd then considers the start complete),
- ``WATCHDOG=1`` from the main loop after each *fresh* result (so a loop stuck in a capture call
  stops the pings and systemd restarts the service after `WatchdogSec`), rate-limited to one
  every quarter of the interval,
- ``RELOADING=1`` / ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` on the way out, and
  ``STATUS=...`` lines that `systemctl status` shows.

Without ``$NOTIFY_SOCKET`` (run by hand, in tests) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds that systemd asks this process to honour, or None.

    Like sd_watchdog_enabled(3): `$WATCHDOG_USEC` must be a positive integer and, when
    `$WATCHDOG_PID` is set, it must be this process's pid (a child must not ping for its parent).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    if value <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return value / 1_000_000


class Notifier:
    """Sends sd_notify messages; a no-op when not run by systemd (no `$NOTIFY_SOCKET`)."""

    def __init__(self, env: dict[str, str] | None = None, *, clock=time.monotonic):
        env = os.environ if env is None else env
        self._clock = clock
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._error_logged = False
        self._last_watchdog: float | None = None
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()  # abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path or abstract name; sd_notify disabled", raw)
        self.watchdog_s = watchdog_interval(env)
        # Ping at most every quarter of the timeout: enough margin, few syscalls at 30 fps.
        self.watchdog_min_gap_s = self.watchdog_s / 4 if self.watchdog_s else 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one sd_notify datagram (e.g. "READY=1\\nSTATUS=..."); True when sent."""
        if self.address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode(), self.address)
                return True
            except OSError as e:
                if not self._error_logged:
                    log.warning("sd_notify to %r failed: %s (further failures not logged)", self.address, e)
                    self._error_logged = True
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        """Call after each fresh result; sends WATCHDOG=1 at most every WATCHDOG_USEC/4, and
        nothing when systemd asked this process for no watchdog (no datagram per frame for nothing)."""
        if self.address is None or self.watchdog_s is None:
            return False
        now = self._clock()
        if self._last_watchdog is not None and now - self._last_watchdog < self.watchdog_min_gap_s:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this to the reload request.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + text.replace("\n", " "))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
