"""A loopback TCP peer that plays an MQTT broker misbehaving in ways mosquitto never does on cue (a
malformed packet, a connection dropped between PUBREC and PUBREL, acknowledgements that never come).
Everything mosquitto can do is tested against mosquitto (tests/helpers/mosquitto.py)."""

from __future__ import annotations

import socket
import struct
import threading

from device.outputs.mqttclient import CONNACK, decode_packets


class ScriptedBroker:
    """Accepts connections on 127.0.0.1 and runs `script(peer, n)` for the n-th (0-based) in a thread."""

    def __init__(self, script):
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            conn.settimeout(5)
            try:
                self.script(Peer(conn), n)
            except BaseException as e:  # noqa: BLE001 - reported by the test through .errors
                self.errors.append(e)
            finally:
                conn.close()

    def close(self):
        self.server.close()


class Peer:
    """One client connection, read packet by packet."""

    def __init__(self, conn):
        self.conn, self.buf = conn, bytearray()
        self.pending: list[tuple[int, int, bytes]] = []

    def read(self):
        """The next whole packet: (type, flags, body). EOFError when the client closed."""
        while True:
            if self.pending:
                return self.pending.pop(0)
            self.pending += decode_packets(self.buf)
            if self.pending:
                continue
            data = self.conn.recv(4096)
            if not data:
                raise EOFError("client closed")
            self.buf += data

    def connect(self):
        kind, _, _ = self.read()
        assert kind == 1, kind  # CONNECT
        self.conn.sendall(bytes([CONNACK << 4, 2, 0, 0]))

    def publish(self):
        kind, flags, body = self.read()
        assert kind == 3, kind
        tlen = struct.unpack("!H", body[:2])[0]
        qos = (flags >> 1) & 3
        mid = struct.unpack("!H", body[2 + tlen : 4 + tlen])[0] if qos else 0
        return mid, body[4 + tlen :] if qos else body[2 + tlen :]
