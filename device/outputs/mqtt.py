"""MQTT output: results, label-change events and a retained availability topic.

Topics, under `topic_prefix` (default ``faceedge/<hostname>``):

- ``<prefix>/result``: every result as JSON (at most one per `result_interval_s` when set), QoS `qos_result`.
- ``<prefix>/event``: when the smoothed label changes: ``{"label", "previous", "score", "time", ...}``.
- ``<prefix>/availability``: retained ``online`` on every connect; the broker publishes the retained
  last-will ``offline`` if the daemon dies without saying goodbye; a clean close publishes ``offline`` itself.
- with ``home_assistant: true``: ``<prefix>/state`` (the smoothed label, retained) and Home Assistant's
  discovery configs (device/outputs/homeassistant.py).

The loop never waits on the network: `publish()` appends to the client's bounded queue (oldest dropped
and counted in telemetry `mqtt_dropped` when full) and its network thread does the I/O
(device/outputs/mqttclient.py, MQTT 3.1.1). A broker that is down at start neither blocks nor crashes
the daemon: the thread retries with exponential backoff from `reconnect_min_s` to `reconnect_max_s`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from device.errors import FaceedgeError
from device.outputs.configs import MqttConfig, is_loopback
from device.outputs.homeassistant import HomeAssistant
from device.outputs.jsonl import result_dict
from device.outputs.mqttclient import Client
from device.telemetry import Telemetry
from device.types import Output, Result, register_output

log = logging.getLogger(__name__)

# Shutdown budget (the daemon has 2 s for everything): get "offline" acknowledged, then stop the thread.
OFFLINE_TIMEOUT_S = 1.0
STOP_JOIN_S = 0.5


def check_private(path: Path, what: str) -> None:
    """A secret file (password, private key) must be readable by its owner only."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as e:
        raise FaceedgeError(f"{what} {path}: {e.strerror or e}") from e
    if mode & 0o077:
        raise FaceedgeError(f"{what} {path}: readable by other users (mode {mode:o}); chmod 600 it")


def read_secret(path: Path | None, env: str | None, what: str) -> str | None:
    if path is not None:
        check_private(path, f"{what}_file")
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise FaceedgeError(f"{what}_file {path}: {e.strerror or e}") from e
        return lines[0].strip() if lines else ""
    if env is not None:
        if env not in os.environ:
            raise FaceedgeError(f"{what}_env: environment variable ${env} is not set")
        return os.environ[env]
    return None


def tls_context(cfg: MqttConfig):
    """TLS with the broker verified (CA file or the system's trust store), and a client certificate for
    brokers that require one. Each file is checked on its own, so the error names it. `ssl` (and
    OpenSSL, ~4.6 MB) is imported only here: a config without `tls:` never loads it."""
    import ssl

    tls = cfg.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and not path.is_file():
            raise FaceedgeError(f"outputs.mqtt.tls.{key} {path}: no such file")
    if tls.key_file is not None:
        check_private(tls.key_file, "outputs.mqtt.tls.key_file")
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise FaceedgeError(f"outputs.mqtt.tls.ca_file {tls.ca_file}: not a CA certificate ({e})") from None
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as e:
            raise FaceedgeError(
                f"outputs.mqtt.tls.cert_file {tls.cert_file}: cannot load the client certificate and key ({e})"
            ) from None
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


@register_output("mqtt")
class MqttOutput(Output):
    def __init__(self, cfg: MqttConfig, telemetry: Telemetry, *, expose_images: bool = False, will: bool = True):
        self.cfg = cfg
        self.telemetry = telemetry
        host = socket.gethostname() or "device"
        self.client_id = cfg.client_id or f"faceedge-{host}"
        self.prefix = cfg.topic_prefix or f"faceedge/{host}"
        self.topic_result = f"{self.prefix}/result"
        self.topic_event = f"{self.prefix}/event"
        self.topic_availability = f"{self.prefix}/availability"
        self._ha = (
            HomeAssistant(cfg, prefix=self.prefix, client_id=self.client_id, telemetry=telemetry)
            if cfg.home_assistant
            else None
        )
        self._was_connected = False
        self._fail_logged = False
        self._last_result_t = float("-inf")
        self._previous_label: str | None = None
        self._closing = False
        password = read_secret(cfg.password_file, cfg.password_env, "outputs.mqtt.password")
        if cfg.username is not None and password and cfg.tls is None and not is_loopback(cfg.host):
            log.warning(
                "mqtt: the password for %r is sent to %s:%d without TLS, readable by anyone on the network; "
                "configure outputs.mqtt.tls: {ca_file: ...} (port 8883 on most brokers)",
                cfg.username,
                cfg.host,
                cfg.port,
            )
        c = Client(
            self.client_id,
            username=cfg.username,
            password=password if cfg.username is not None else None,
            # The broker publishes this if the connection dies without a DISCONNECT.
            will=(self.topic_availability, b"offline", cfg.qos_availability, True) if will else None,
            keepalive=cfg.keepalive_s,
            tls_context=tls_context(cfg) if cfg.tls is not None else None,
            connect_timeout_s=cfg.connect_timeout_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            queue_size=cfg.queue_size,
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_refused = self._on_refused
        c.on_connect_fail = self._on_connect_fail
        c.on_published = self._on_published
        c.on_dropped = self._on_dropped
        self.client = c

    # ---- state ----
    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def queue_depth(self) -> int:
        return self.client.queued

    def wait_connected(self, timeout: float) -> bool:
        return self.client.wait_connected(timeout)

    # ---- client callbacks (network thread) ----
    def _on_connect(self) -> None:
        log.info("mqtt: connected to %s:%d as %s", self.cfg.host, self.cfg.port, self.client_id)
        self._fail_logged = False
        if self._was_connected:
            self.telemetry.inc("mqtt_reconnects")
        self._was_connected = True
        publish = self.client.publish
        publish(self.topic_availability, b"online", self.cfg.qos_availability, True, first=True)
        if self._ha is not None:  # configs first: a state before its entity exists is lost on HA
            for msg in self._ha.configs():
                publish(*msg, first=True)
            if self._previous_label is not None:
                publish(*self._ha.state(self._previous_label), first=True)
        self.telemetry.set_gauge("mqtt_connected", 1)

    def _on_disconnect(self, reason: str) -> None:
        self.telemetry.set_gauge("mqtt_connected", 0)
        if not self._closing:
            log.warning(
                "mqtt: lost the connection to %s:%d (%s); queueing up to %d messages while reconnecting",
                self.cfg.host,
                self.cfg.port,
                reason,
                self.cfg.queue_size,
            )

    def _on_refused(self, reason: str) -> None:
        if not self._fail_logged:
            log.warning("mqtt: %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            self._fail_logged = True

    def _on_connect_fail(self, error: str) -> None:
        if not self._fail_logged:  # one line per outage, not one per retry
            log.warning(
                "mqtt: cannot connect to %s:%d (%s); retrying every %g..%g s in the background",
                self.cfg.host,
                self.cfg.port,
                error,
                self.cfg.reconnect_min_s,
                self.cfg.reconnect_max_s,
            )
            self._fail_logged = True

    def _on_published(self, _message) -> None:
        self.telemetry.set_gauge("mqtt_queue_depth", self.client.queued)

    def _on_dropped(self, count: int) -> None:
        self.telemetry.inc("mqtt_dropped", count)

    # ---- Output ----
    def _enqueue(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.client.publish(topic, payload, qos, retain)
        self.telemetry.set_gauge("mqtt_queue_depth", self.client.queued)

    def start(self) -> None:
        self.telemetry.set_gauge("mqtt_connected", 0)
        self.client.start(self.cfg.host, self.cfg.port)

    def publish(self, result: Result) -> None:
        try:
            previous = self._previous_label
            if result.smoothed_label is not None:
                self._previous_label = result.smoothed_label
            if self._ha is not None:
                # A reload changed the model: its configs now. Not connected: on_connect sends the current
                # model's configs anyway (sending them here too would send them twice at every start).
                if self.client.connected and self._ha.model_changed(result.model_sha256):
                    for msg in self._ha.configs():
                        self._enqueue(*msg)
                if result.event:
                    self._enqueue(*self._ha.state(result.smoothed_label))
            if not result.event and result.timestamp - self._last_result_t < self.cfg.result_interval_s:
                return  # rate-limited, no event: nothing to build or send (most frames)
            d = result_dict(result)
            if result.event:
                event = {
                    "time": d["time"],
                    "schema_version": d["schema_version"],
                    "run_id": d["run_id"],
                    "timestamp": result.timestamp,
                    "frame_id": result.frame_id,
                    "label": result.smoothed_label,
                    "previous": previous,
                    "score": d["smoothed_score"],
                    "model_sha256": result.model_sha256,
                }
                self._enqueue(self.topic_event, json.dumps(event).encode(), self.cfg.qos_event, self.cfg.retain_event)
            self._last_result_t = result.timestamp
            self._enqueue(self.topic_result, json.dumps(d).encode(), self.cfg.qos_result, False)
        except Exception:  # never into the loop
            self.telemetry.inc("output_errors")  # only here: `errors` counts the other faults
            log.exception("mqtt: cannot publish frame %s", result.frame_id)

    def close(self) -> None:
        self._closing = True
        said_goodbye = False
        if self.client.connected:  # say goodbye; the queue before it goes out first
            offline = self.client.publish(self.topic_availability, b"offline", self.cfg.qos_availability, True)
            said_goodbye = offline.wait(OFFLINE_TIMEOUT_S)
        # Acknowledged: DISCONNECT, and the broker drops the will. Not (no connection, a full in-flight
        # window, a broker gone quiet), or still connecting: the connection is dropped without
        # DISCONNECT, so the broker publishes the will "offline" — never a stale retained "online".
        # The thread may sit in a TCP connect for up to connect_timeout_s (a daemon thread: it ends
        # on its own), so the wait is bounded.
        if not self.client.stop(STOP_JOIN_S, disconnect=said_goodbye):
            log.debug("mqtt: network thread still stopping after %.1f s; not waiting for it", STOP_JOIN_S)
