"""MQTT output (paho-mqtt 2.x): results, label-change events and a retained availability topic.

Topics, under `topic_prefix` (default ``faceedge/<hostname>``):

- ``<prefix>/result``: every result as JSON (at most one per `result_interval_s` when set), QoS `qos_result`.
- ``<prefix>/event``: when the smoothed label changes: ``{"label", "previous", "score", "time", ...}``.
- ``<prefix>/availability``: retained ``online`` on every connect; the broker publishes the retained
  last-will ``offline`` if the daemon dies without saying goodbye; a clean close publishes ``offline`` itself.
- with ``home_assistant: true``: ``<prefix>/state`` (the smoothed label, retained) and Home Assistant's
  discovery configs (device/outputs/homeassistant.py).

The loop never waits on the network: `publish()` appends to a bounded deque (oldest dropped and counted
in telemetry `mqtt_dropped` when full) and hands messages to paho only while connected; paho's network
thread (`loop_start`) does the I/O. `connect_async` + the network thread's retry with exponential
backoff (`reconnect_delay_set`) mean a broker that is down at start neither blocks nor crashes the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
from collections import deque
from pathlib import Path

from device.errors import FaceedgeError
from device.outputs.configs import MqttConfig, is_loopback
from device.outputs.homeassistant import HomeAssistant
from device.outputs.jsonl import result_dict
from device.telemetry import Telemetry
from device.types import Output, Result, register_output

log = logging.getLogger(__name__)

# Shutdown budget (the daemon has 2 s for everything): get "offline" acknowledged, then stop paho's thread.
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


@register_output("mqtt")
class MqttOutput(Output):
    def __init__(self, cfg: MqttConfig, telemetry: Telemetry, *, expose_images: bool = False):
        import paho.mqtt.client as mqtt  # imported here: only a config with `mqtt:` needs paho

        self._mqtt = mqtt
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
        self._queue: deque[tuple[str, bytes, int, bool]] = deque(maxlen=cfg.queue_size)
        self._drain_lock = threading.Lock()
        self._connected = threading.Event()
        self._was_connected = False
        self._fail_logged = False
        self._last_result_t = float("-inf")
        self._previous_label: str | None = None
        self._closing = False
        password = read_secret(cfg.password_file, cfg.password_env, "outputs.mqtt.password")

        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if cfg.username is not None:
            c.username_pw_set(cfg.username, password)
            if password and cfg.tls is None and not is_loopback(cfg.host):
                log.warning(
                    "mqtt: the password for %r is sent to %s:%d without TLS, readable by anyone on the network; "
                    "configure outputs.mqtt.tls: {ca_file: ...} (port 8883 on most brokers)",
                    cfg.username,
                    cfg.host,
                    cfg.port,
                )
        if cfg.tls is not None:
            self._set_tls(c, cfg)
        # Before connecting: the broker publishes this if the connection dies without a DISCONNECT.
        c.will_set(self.topic_availability, b"offline", qos=cfg.qos_availability, retain=True)
        c.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)
        # paho's own queue of unacknowledged QoS>0 messages, bounded too; when it is full the rest
        # waits in our deque and is handed over as acknowledgements come in (on_publish).
        c.max_queued_messages_set(cfg.queue_size)
        c.connect_timeout = cfg.connect_timeout_s
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        self.client = c

    @staticmethod
    def _set_tls(client, cfg: MqttConfig) -> None:
        """TLS with the broker verified (CA file or the system's trust store), and a client certificate
        for brokers that require one. Each file is checked on its own, so the error names it."""
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
        client.tls_set_context(ctx)

    # ---- state ----
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ---- paho callbacks (network thread) ----
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self._fail_logged:
                log.warning("mqtt: %s:%d refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
                self._fail_logged = True
            return
        log.info("mqtt: connected to %s:%d as %s", self.cfg.host, self.cfg.port, self.client_id)
        self._fail_logged = False
        if self._was_connected:
            self.telemetry.inc("mqtt_reconnects")
        self._was_connected = True
        client.publish(self.topic_availability, b"online", qos=self.cfg.qos_availability, retain=True)
        if self._ha is not None:  # configs first: a state before its entity exists is lost on HA
            for msg in self._ha.configs():
                client.publish(*msg)
            if self._previous_label is not None:
                client.publish(*self._ha.state(self._previous_label))
        self._connected.set()
        self.telemetry.set_gauge("mqtt_connected", 1)
        self._drain()

    def _on_disconnect(self, client, userdata, disconnect_flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.telemetry.set_gauge("mqtt_connected", 0)
        if was and not self._closing:
            log.warning(
                "mqtt: lost the connection to %s:%d (%s); queueing up to %d messages while reconnecting",
                self.cfg.host,
                self.cfg.port,
                reason_code,
                self.cfg.queue_size,
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self._queue:
            self._drain()

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._fail_logged:  # one line per outage, not one per retry
            log.warning(
                "mqtt: cannot connect to %s:%d; retrying every %g..%g s in the background",
                self.cfg.host,
                self.cfg.port,
                self.cfg.reconnect_min_s,
                self.cfg.reconnect_max_s,
            )
            self._fail_logged = True

    # ---- queue ----
    def _enqueue(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.telemetry.inc("mqtt_dropped")  # append below pushes the oldest out
        self._queue.append((topic, payload, qos, retain))
        if self._connected.is_set():
            self._drain()

    def _drain(self) -> None:
        """Hand queued messages to paho while connected. Never blocks on another drainer."""
        mqtt = self._mqtt
        blocked = False
        while self._queue and self._connected.is_set() and not blocked:
            if not self._drain_lock.acquire(blocking=False):
                return  # the holder loops until the queue is empty, ours included
            try:
                while self._connected.is_set():
                    try:
                        msg = self._queue.popleft()
                    except IndexError:
                        break
                    rc = self.client.publish(*msg).rc
                    # Put it back and stop when paho did not take it: QoS 0 while the connection just
                    # dropped (paho keeps only QoS>0), or paho's in-flight queue is full (resumed from
                    # on_publish when the broker acknowledges).
                    if (rc == mqtt.MQTT_ERR_NO_CONN and msg[2] == 0) or rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                        if len(self._queue) == self._queue.maxlen:
                            self.telemetry.inc("mqtt_dropped")  # the newest is pushed out instead
                        self._queue.appendleft(msg)
                        blocked = True  # resumed by on_connect / on_publish, not by spinning here
                        break
            finally:
                self._drain_lock.release()
        self.telemetry.set_gauge("mqtt_queue_depth", len(self._queue))

    # ---- Output ----
    def start(self) -> None:
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as e:
            raise FaceedgeError(f"outputs.mqtt: cannot connect to {self.cfg.host}:{self.cfg.port}: {e}") from e
        self.telemetry.set_gauge("mqtt_connected", 0)
        self.client.loop_start()

    def publish(self, result: Result) -> None:
        try:
            previous = self._previous_label
            if result.smoothed_label is not None:
                self._previous_label = result.smoothed_label
            if self._ha is not None:
                if self._ha.model_changed(result.model_sha256):  # the first result, or a reload
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
        try:
            if self._connected.is_set():
                self._drain()
                info = self.client.publish(
                    self.topic_availability, b"offline", qos=self.cfg.qos_availability, retain=True
                )
                try:
                    info.wait_for_publish(timeout=OFFLINE_TIMEOUT_S)
                except (RuntimeError, ValueError):
                    pass  # lost the connection meanwhile: the broker sends the last-will instead
            self.client.disconnect()
        finally:
            # loop_stop() joins paho's thread without a timeout; that thread may sit in a TCP connect
            # for up to connect_timeout_s. It is a daemon thread, so bound the wait and move on.
            stopper = threading.Thread(target=self.client.loop_stop, name="faceedge-mqtt-stop", daemon=True)
            stopper.start()
            stopper.join(STOP_JOIN_S)
            if stopper.is_alive():  # e.g. asleep between reconnect attempts; it ends on its own
                log.debug("mqtt: network thread still stopping after %.1f s; not waiting for it", STOP_JOIN_S)
            self._connected.clear()
