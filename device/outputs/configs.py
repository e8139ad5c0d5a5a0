"""The typed config sections of the HTTP and MQTT outputs, apart from the outputs themselves.

`device.outputs` (and through it the daemon's config model) needs these classes to validate a
config, but the outputs' modules bring an MQTT client (and ssl with TLS) and an HTTP server: memory
a daemon whose config turns them off should not pay. Here they cost nothing; `device.outputs.http`
and `device.outputs.mqtt` re-export them and are imported only when a config enables them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from device.validation import Meta, Strict


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it may be reachable from elsewhere


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8088  # 0 = an ephemeral port (tests); see HttpOutput.port
    token_file: Path | None = None  # file holding the bearer token (first line)
    token_env: str | None = None  # or: name of the environment variable holding it

    def check(self) -> None:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("set only one of token_file and token_env")
        if not is_loopback(self.host) and self.token_file is None and self.token_env is None:
            raise ValueError(f"host {self.host!r} is not loopback: a token is required (set token_file or token_env)")


class MqttTls(Strict):
    ca_file: Path | None = None  # None = the system's trust store
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file (or the key inside)
    key_file: Path | None = None  # must be readable by its owner only
    insecure: bool = False  # skip host name verification (self-signed lab brokers only)

    def check(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883
    client_id: str = ""  # "" = faceedge-<hostname>
    topic_prefix: str = ""  # "" = faceedge/<hostname>
    username: str | None = None
    password_file: Path | None = None  # file holding the password (first line)
    password_env: str | None = None  # or: name of the environment variable holding it
    tls: MqttTls | None = None
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    qos_result: Annotated[int, Meta(ge=0, le=2)] = 0
    qos_event: Annotated[int, Meta(ge=0, le=2)] = 1
    qos_availability: Annotated[int, Meta(ge=0, le=2)] = 1
    retain_event: bool = False
    result_interval_s: Annotated[float, Meta(ge=0.0)] = 0.0  # 0 = publish every result
    queue_size: Annotated[int, Meta(ge=1)] = 1000  # messages kept while the broker is away
    reconnect_min_s: Annotated[float, Meta(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 30.0
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 5.0
    home_assistant: bool = False  # publish Home Assistant MQTT discovery configs (device/outputs/homeassistant.py)
    discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix (its MQTT integration setting)

    def check(self) -> None:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set only one of password_file and password_env")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if any(c in self.topic_prefix for c in "+#") or self.topic_prefix.endswith("/"):
            raise ValueError(f"topic_prefix {self.topic_prefix!r} must not contain + or # nor end with /")
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.discovery_prefix):
            raise ValueError(f"discovery_prefix {self.discovery_prefix!r}: letters, digits, _ and - (and / between)")
