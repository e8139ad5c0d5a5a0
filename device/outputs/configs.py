"""The typed config sections of the HTTP and MQTT outputs, apart from the outputs themselves.

`device.outputs` (and through it the daemon's config model) needs these classes to validate a
config, but the outputs' modules import http.server/ssl and paho: ~7 MB of resident memory on a
daemon whose config turns them off. Here they cost nothing; `device.outputs.http` and
`device.outputs.mqtt` re-export them and are imported only when a config enables them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import Field, model_validator

from device.validation import Strict


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it may be reachable from elsewhere


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)  # 0 = an ephemeral port (tests); see HttpOutput.port
    token_file: Path | None = None  # file holding the bearer token (first line)
    token_env: str | None = None  # or: name of the environment variable holding it

    @model_validator(mode="after")
    def _token_off_loopback(self):
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("set only one of token_file and token_env")
        if not is_loopback(self.host) and self.token_file is None and self.token_env is None:
            raise ValueError(f"host {self.host!r} is not loopback: a token is required (set token_file or token_env)")
        return self


class MqttTls(Strict):
    ca_file: Path | None = None  # None = the system's trust store
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file (or the key inside)
    key_file: Path | None = None  # must be readable by its owner only
    insecure: bool = False  # skip host name verification (self-signed lab brokers only)

    @model_validator(mode="after")
    def _key_needs_cert(self):
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        return self


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = ""  # "" = faceedge-<hostname>
    topic_prefix: str = ""  # "" = faceedge/<hostname>
    username: str | None = None
    password_file: Path | None = None  # file holding the password (first line)
    password_env: str | None = None  # or: name of the environment variable holding it
    tls: MqttTls | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos_result: int = Field(0, ge=0, le=2)
    qos_event: int = Field(1, ge=0, le=2)
    qos_availability: int = Field(1, ge=0, le=2)
    retain_event: bool = False
    result_interval_s: float = Field(0.0, ge=0.0)  # 0 = publish every result
    queue_size: int = Field(1000, ge=1)  # messages kept while the broker is away
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    home_assistant: bool = False  # publish Home Assistant MQTT discovery configs (device/outputs/homeassistant.py)
    discovery_prefix: str = "homeassistant"  # Home Assistant's discovery prefix (its MQTT integration setting)

    @model_validator(mode="after")
    def _check(self):
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set only one of password_file and password_env")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if any(c in self.topic_prefix for c in "+#") or self.topic_prefix.endswith("/"):
            raise ValueError(f"topic_prefix {self.topic_prefix!r} must not contain + or # nor end with /")
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.discovery_prefix):
            raise ValueError(f"discovery_prefix {self.discovery_prefix!r}: letters, digits, _ and - (and / between)")
        return self
