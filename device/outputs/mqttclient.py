"""A small MQTT 3.1.1 client that only publishes: what the MQTT output needs, and nothing it does not.

Why not paho-mqtt: importing it costs 8.4-9.0 MB of resident memory on the daemon (it imports ssl,
hashlib, urllib, http.client and email whether or not TLS is used) — most of the daemon's excess over
the bare classification loop. This client imports `ssl` only when a TLS context is handed to it.

What it does (MQTT 3.1.1, OASIS standard, 2014):

- CONNECT with a clean session, client id, username/password, a last will, keepalive; CONNACK within
  `connect_timeout_s`; a refused CONNACK (return codes 1-5) is reported and retried like a lost
  connection.
- PUBLISH at QoS 0, 1 (PUBACK) and 2 (PUBREC → PUBREL → PUBCOMP), retained or not.
- PINGREQ when nothing was sent or nothing received for `keepalive` seconds; no answer within another
  `keepalive` seconds means the connection is lost.
- One network thread does all socket I/O. `publish()` never blocks: it appends to a bounded queue
  (the oldest message is pushed out when full, reported to `on_dropped`) and wakes the thread.
- At most `max_inflight` QoS>0 messages wait for their acknowledgement; the rest wait in the queue.
  When the connection is lost, unacknowledged messages go back to the front of the queue and are sent
  again after reconnecting, in the order they were sent (at least once: the broker may have passed one
  on before the loss). That holds for QoS 2 messages past PUBREC too: with a clean session the broker
  forgets a message whose PUBREL it never got.
- Reconnects with exponential backoff from `reconnect_min_s` to `reconnect_max_s`, reset after a
  successful connect. `stop()` sends DISCONNECT (so the broker drops the will) and ends the thread.

Callbacks run on the network thread and must not block: `on_connect()` after an accepted CONNACK
(messages it publishes with `first=True` go out before the queue), `on_refused(reason)`,
`on_connect_fail(error)` (no TCP/TLS connection), `on_disconnect(reason)`, `on_published(message)`;
`on_dropped(n)` runs on the thread that pushed `n` messages out of the full queue. An exception in a
callback is logged, never the end of the network thread.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Control packet types (first byte, high nibble), MQTT 3.1.1 section 2.2.1.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable-length encoding


class ProtocolError(Exception):
    """The broker sent something MQTT 3.1.1 does not allow here."""


# ----------------------------------------------------------------------------- encoding (pure functions)


def encode_length(n: int) -> bytes:
    """The variable-length "remaining length" (section 2.2.3)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise ValueError(f"string of {len(b)} bytes: MQTT strings hold at most 65535")
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_length(len(body)) + body


def check_topic(topic: str) -> None:
    """A topic one may publish to: not empty, no wildcards, no NUL (section 4.7), at most 65535 bytes
    of UTF-8 (section 1.5.3)."""
    if not topic or any(c in topic for c in "+#\0"):
        raise ValueError(f"topic {topic!r}: must be non-empty without +, # or NUL")
    try:
        size = len(topic.encode())
    except UnicodeEncodeError:
        raise ValueError(f"topic {topic!r}: not valid UTF-8") from None
    if size > 0xFFFF:
        raise ValueError(f"topic of {size} bytes: MQTT topics hold at most 65535")


def encode_connect(
    client_id: str,
    keepalive: int,
    *,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
    clean_session: bool = True,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        check_topic(topic)
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _utf8(topic) + _utf8(message)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    header = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return _packet(CONNECT << 4, header + payload)


def encode_publish(topic: str, payload: bytes, qos: int, retain: bool, mid: int = 0, dup: bool = False) -> bytes:
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _utf8(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return _packet(first, body)


def encode_ack(kind: int, mid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010, section 3.6.1) or PUBCOMP."""
    return _packet((kind << 4) | (0x02 if kind == PUBREL else 0), struct.pack("!H", mid))


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


def decode_packets(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Whole packets at the start of `buf` as (type, flags, body), removed from it; a partial packet stays."""
    packets = []
    while True:
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return packets  # the length is not all here yet
            digit = buf[i]
            length |= (digit & 0x7F) << shift
            i += 1
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("remaining length longer than four bytes")
        if len(buf) < i + length:
            return packets
        packets.append((buf[0] >> 4, buf[0] & 0x0F, bytes(buf[i : i + length])))
        del buf[: i + length]


# ----------------------------------------------------------------------------- the client


@dataclass(eq=False)
class Message:
    """One PUBLISH; `wait()` returns True once it was written (QoS 0) or acknowledged (QoS 1 and 2)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    sent_at: int = 0  # the client's send counter when it was written (the order to resend in)
    done: bool = False
    # The client's condition, notified at every delivery: one per client, not an Event per message
    # (1.6 µs each, on the loop's thread for every result).
    acked: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        with self.acked:
            return self.acked.wait_for(lambda: self.done, timeout)


def _nothing(*_args) -> None:
    pass


class Client:
    def __init__(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        keepalive: int = 60,
        tls_context=None,  # an ssl.SSLContext, or None for plain TCP
        connect_timeout_s: float = 5.0,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        queue_size: int = 1000,
        max_inflight: int = 20,
    ) -> None:
        if will is not None:
            check_topic(will[0])
        self.client_id = client_id
        self.username = username
        self.password = password
        self.will = will
        self.keepalive = keepalive
        self.tls_context = tls_context
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_inflight = max_inflight
        self.on_connect: Callable[[], None] = _nothing
        self.on_refused: Callable[[str], None] = _nothing
        self.on_connect_fail: Callable[[str], None] = _nothing
        self.on_disconnect: Callable[[str], None] = _nothing
        self.on_published: Callable[[Message], None] = _nothing
        self.on_dropped: Callable[[int], None] = _nothing
        self._queue: deque[Message] = deque(maxlen=queue_size)
        self._first: deque[Message] = deque()  # on_connect's messages: before the queue
        self._inflight: dict[int, Message] = {}  # mid → QoS>0 message awaiting PUBACK / PUBREC
        self._released: dict[int, Message] = {}  # mid → QoS 2 message awaiting PUBCOMP
        self._lock = threading.Lock()
        self._next_mid = 0
        self._sent = 0  # PUBLISH packets written, ever: orders the in-flight ones for a resend
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._acked = threading.Condition()  # Message.wait() sleeps on it
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._host = ""
        self._port = 0
        self._read_buffer = bytearray()  # bytes received after CONNACK, for the session
        self._disconnect = True  # how stop() ends a connection (see stop)

    # ---- state ----
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    @property
    def queued(self) -> int:
        """Messages not yet handed to the broker (unacknowledged in-flight ones not counted)."""
        return len(self._queue) + len(self._first)

    # ---- API ----
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, *, first: bool = False):
        """Queue a message and return it; when the queue is full its oldest message is pushed out
        (`on_dropped(1)`). `first=True` (for on_connect): ahead of the queue, never dropped."""
        check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos {qos}: must be 0, 1 or 2")
        msg = Message(topic, bytes(payload), qos, retain, acked=self._acked)
        with self._lock:
            if first:
                self._first.append(msg)
                dropped = False
            else:
                dropped = len(self._queue) == self._queue.maxlen
                self._queue.append(msg)
        self._wakeup()
        if dropped:
            _call(self.on_dropped, 1)
        return msg

    def start(self, host: str, port: int) -> None:
        """Connect in the background (retrying with backoff until `stop()`); returns at once."""
        if self._thread is not None:
            raise RuntimeError("client already started")
        self._host, self._port = host, port
        self._thread = threading.Thread(target=self._run, name="faceedge-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5, *, disconnect: bool = True) -> bool:
        """End the network thread; True when it ended within `timeout` (it may sit in a TCP connect or
        wait for a CONNACK for up to connect_timeout_s: a daemon thread, it finishes on its own).

        `disconnect=True`: what is queued goes out (as far as the in-flight window allows), then a
        DISCONNECT, so the broker drops the will. `disconnect=False`: the connection is just closed and
        the broker publishes the will — for a goodbye that was not acknowledged, and for a stop while
        still connecting (a connection made after stop() publishes nothing)."""
        self._disconnect = disconnect
        self._stop.set()
        self._wakeup()
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
        if ended:
            self._wake_r.close()
            self._wake_w.close()
        return ended

    # ---- network thread ----
    def _wakeup(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken (buffer full) or closed by stop()

    def _run(self) -> None:
        delay = self.reconnect_min_s
        try:
            while not self._stop.is_set():
                try:
                    sock = self._open()
                except ConnectionRefusedByBroker as e:
                    _call(self.on_refused, str(e))
                except (OSError, ProtocolError) as e:  # ssl.SSLError is an OSError
                    _call(self.on_connect_fail, _describe(e))
                except Exception as e:  # a bug here must not end the thread: report it, retry
                    log.exception("mqtt: connecting failed")
                    _call(self.on_connect_fail, _describe(e))
                else:
                    t_up = time.monotonic()
                    reason = "closed"
                    try:
                        if not self._stop.is_set():  # connected after stop(): say nothing, just close
                            _call(self.on_connect)
                        self._session(sock)
                    except (OSError, ProtocolError) as e:
                        reason = _describe(e)
                    except Exception as e:  # e.g. a malformed packet we failed to parse: a lost connection
                        log.exception("mqtt: the connection failed")
                        reason = _describe(e)
                    finally:
                        self._connected.clear()
                        _close(sock)
                        self._requeue_inflight()
                    _call(self.on_disconnect, reason)
                    if self._stop.is_set():
                        return
                    # A broker that accepts and then drops us at once (a duplicate client id, a message it
                    # refuses) must not be hammered every reconnect_min_s: the backoff restarts only after
                    # a connection that lasted.
                    if time.monotonic() - t_up >= max(self.keepalive, 10):
                        delay = self.reconnect_min_s
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.reconnect_max_s)
        finally:
            if self._stop.is_set():
                _close(self._wake_r)
                _close(self._wake_w)

    def _open(self):
        """TCP (and TLS) to the broker, CONNECT, and an accepted CONNACK; the socket."""
        sock = socket.create_connection((self._host, self._port), timeout=self.connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls_context is not None:
                sock = self.tls_context.wrap_socket(sock, server_hostname=self._host)
            sock.sendall(
                encode_connect(
                    self.client_id, self.keepalive, username=self.username, password=self.password, will=self.will
                )
            )
            buf = bytearray()
            deadline = time.monotonic() + self.connect_timeout_s
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(4096)
                if not data:
                    raise ConnectionResetError("the broker closed the connection before CONNACK")
                buf += data
                packets = decode_packets(buf)
                if packets:
                    break
            kind, _flags, body = packets[0]
            if kind != CONNACK or len(body) != 2:
                raise ProtocolError(f"expected CONNACK, got packet type {kind}")
            if body[1] != 0:
                raise ConnectionRefusedByBroker(CONNACK_REASONS.get(body[1], f"return code {body[1]}"))
            self._read_buffer = buf  # anything after CONNACK
            self._handle(packets[1:], sock)
            sock.settimeout(self.connect_timeout_s)  # for sends; reads wait in select()
            return sock
        except BaseException:
            _close(sock)
            raise

    def _session(self, sock) -> None:
        """Send what is queued, read acknowledgements, keep the connection alive; returns after a clean
        DISCONNECT on stop(), raises when the connection is lost."""
        buf = self._read_buffer
        last_out = last_in = time.monotonic()
        ping_sent: float | None = None
        while True:
            if self._stop.is_set():
                if self._disconnect:
                    self._flush(sock)
                    sock.sendall(DISCONNECT_PACKET)
                return  # without DISCONNECT the broker publishes the will
            if self._flush(sock):
                last_out = time.monotonic()
            if not self._connected.is_set():  # after the first flush: the backlog is on its way first
                self._connected.set()
            now = time.monotonic()
            wait = None  # keepalive 0: no pings, wait for a packet or a wake-up
            if self.keepalive:
                if ping_sent is not None and now - ping_sent > self.keepalive:
                    raise TimeoutError(f"no answer to a ping within {self.keepalive} s")
                # Ping when nothing went out (the broker's keepalive) or nothing came in (a dead link
                # under a steady stream of QoS 0 results would otherwise go unnoticed) for keepalive s.
                if ping_sent is None and now - min(last_out, last_in) >= self.keepalive:
                    sock.sendall(PINGREQ_PACKET)
                    last_out = ping_sent = now
                due = ping_sent + self.keepalive if ping_sent is not None else min(last_out, last_in) + self.keepalive
                wait = max(0.0, due - now)
            if self.tls_context is not None and sock.pending():  # decrypted bytes select() cannot see
                readable = [sock]
            else:
                readable, _, _ = select.select([sock, self._wake_r], [], [], wait)
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:  # BlockingIOError: nothing more to read
                    pass
            if sock in readable:
                data = self._recv(sock)
                if data is None:
                    continue  # TLS: part of a record, or one without data (a session ticket)
                if not data:
                    raise ConnectionResetError("the broker closed the connection")
                last_in = time.monotonic()
                buf += data
                packets = decode_packets(buf)
                if any(kind == PINGRESP for kind, _, _ in packets):
                    ping_sent = None
                if self._handle(packets, sock):
                    last_out = time.monotonic()

    def _recv(self, sock) -> bytes | None:
        """What select() said is there. A TLS socket is read without blocking: a blocking read would
        wait (up to connect_timeout_s, no pings, no stop) for a record that carries no data or has
        not all arrived. None: nothing to hand over yet."""
        if self.tls_context is None:
            return sock.recv(65536)
        import ssl  # already loaded: the context is ssl's

        sock.settimeout(0.0)
        try:
            return sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        finally:
            sock.settimeout(self.connect_timeout_s)  # sends block, within the timeout

    def _flush(self, sock) -> bool:
        """Write queued messages while the in-flight window allows; True when anything was sent."""
        sent = False
        while True:
            with self._lock:
                source = self._first if self._first else self._queue
                if not source:
                    return sent
                msg = source[0]
                if msg.qos and len(self._inflight) >= self.max_inflight:
                    return sent
                source.popleft()
                if msg.qos and not msg.mid:
                    msg.mid = self._new_mid()
                self._sent += 1
                msg.sent_at = self._sent
                if msg.qos:
                    self._inflight[msg.mid] = msg
            try:
                sock.sendall(encode_publish(msg.topic, msg.payload, msg.qos, msg.retain, msg.mid))
            except BaseException:
                if not msg.qos:  # not sent: it goes back (QoS>0 ones are requeued from the in-flight table)
                    with self._lock:
                        self._queue.appendleft(msg)
                raise
            sent = True
            if not msg.qos:
                self._delivered(msg)

    def _new_mid(self) -> int:
        """A packet identifier not in use (1..65535); the lock is held."""
        for _ in range(0xFFFF):
            self._next_mid = self._next_mid % 0xFFFF + 1
            if self._next_mid not in self._inflight and self._next_mid not in self._released:
                return self._next_mid
        raise RuntimeError("no free MQTT packet identifier")

    def _handle(self, packets, sock) -> bool:
        """Acknowledgements from the broker; True when a packet was sent in reply."""
        sent = False
        for kind, flags, body in packets:
            if kind in (PUBACK, PUBREC, PUBCOMP):
                if len(body) != 2:
                    raise ProtocolError(f"packet type {kind} with {len(body)} bytes")
                (mid,) = struct.unpack("!H", body)
                with self._lock:
                    msg = self._inflight.pop(mid, None) if kind != PUBCOMP else self._released.pop(mid, None)
                    if kind == PUBREC and msg is not None:
                        self._released[mid] = msg
                if kind == PUBREC:
                    sock.sendall(encode_ack(PUBREL, mid))
                    sent = True
                if msg is not None and kind in (PUBACK, PUBCOMP):
                    self._delivered(msg)
            elif kind == PUBLISH:  # never subscribed; answer a QoS>0 one so the broker stops resending
                qos = (flags >> 1) & 0x03
                if qos:
                    tlen = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else len(body)
                    if len(body) < 4 + tlen:
                        raise ProtocolError(f"PUBLISH of {len(body)} bytes with a {tlen}-byte topic and no id")
                    (mid,) = struct.unpack("!H", body[2 + tlen : 4 + tlen])
                    sock.sendall(encode_ack(PUBACK if qos == 1 else PUBREC, mid))
                    sent = True
            elif kind == PUBREL:  # the broker's half of a QoS 2 PUBLISH to us
                if len(body) != 2:
                    raise ProtocolError(f"PUBREL with {len(body)} bytes")
                sock.sendall(encode_ack(PUBCOMP, struct.unpack("!H", body)[0]))
                sent = True
            elif kind == PINGRESP:
                pass
            else:
                raise ProtocolError(f"unexpected packet type {kind} from the broker")
        return sent

    def _delivered(self, msg: Message) -> None:
        with self._acked:
            msg.done = True
            self._acked.notify_all()
        _call(self.on_published, msg)

    def _requeue_inflight(self) -> None:
        """After a lost connection: unacknowledged messages go first in the queue again, in the order
        they were sent (not by packet id, which wraps). That includes QoS 2 ones past PUBREC: a broker
        passes a QoS 2 message on when PUBREL arrives (mosquitto does), and a clean session forgets it."""
        with self._lock:
            waiting = list(self._inflight.values()) + list(self._released.values())
            waiting.sort(key=lambda m: m.sent_at)
            self._inflight.clear()
            self._released.clear()
            room = self._queue.maxlen - len(self._queue)
            for msg in reversed(waiting):
                msg.mid = 0  # a clean session: the broker kept nothing, so each is a new PUBLISH
                self._queue.appendleft(msg)  # a full queue pushes its newest out: the older go first
        if len(waiting) > room:
            _call(self.on_dropped, len(waiting) - room)


class ConnectionRefusedByBroker(Exception):
    """CONNACK with a non-zero return code."""


def _call(callback, *args) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("mqtt: error in callback %s", getattr(callback, "__name__", callback))


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass
