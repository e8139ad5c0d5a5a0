"""device/outputs/mqttclient.py: the wire format, and the client against a real mosquitto on 127.0.0.1
(QoS 0/1/2 delivered once, the in-flight window, a broker that stops answering, a clean stop without
the will). The MQTT output's own behaviour is in test_device_outputs_mqtt.py."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from device.outputs.mqttclient import (
    CONNACK,
    PUBACK,
    Client,
    ProtocolError,
    check_topic,
    decode_packets,
    encode_ack,
    encode_connect,
    encode_length,
    encode_publish,
)
from tests.helpers.mosquitto import Recorder
from tests.helpers.scripted_broker import ScriptedBroker


@pytest.mark.parametrize(
    "n, encoded",
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_standard_table(n, encoded):
    """The boundaries of MQTT 3.1.1 section 2.2.3, both ways."""
    assert encode_length(n) == encoded
    if n < 100_000:
        buf = bytearray(bytes([PUBACK << 4]) + encoded + bytes(n) + b"\xd0")  # then half of a PINGRESP
        assert decode_packets(buf) == [(PUBACK, 0, bytes(n))]
        assert buf == bytearray(b"\xd0")


def test_remaining_length_limits():
    with pytest.raises(ValueError):
        encode_length(268_435_456)
    with pytest.raises(ProtocolError):
        decode_packets(bytearray(b"\x40\xff\xff\xff\xff\x01"))


def test_packets_arrive_in_pieces():
    stream = encode_ack(PUBACK, 7) + bytes([CONNACK << 4, 2, 0, 0]) + encode_ack(PUBACK, 300)
    buf, got = bytearray(), []
    for b in stream:  # one byte per recv()
        buf.append(b)
        got += decode_packets(buf)
    assert got == [(PUBACK, 0, b"\x00\x07"), (CONNACK, 0, b"\x00\x00"), (PUBACK, 0, struct.pack("!H", 300))]
    assert not buf


def test_connect_and_publish_bytes():
    assert encode_connect("abc", 60) == b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"
    c = encode_connect("id", 30, username="u", password="p", will=("a/b", b"off", 1, True))
    # flags: user 0x80, password 0x40, will retain 0x20, will QoS 1 (0x08), will 0x04, clean session 0x02
    assert c[9] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert c.endswith(b"\x00\x02id\x00\x03a/b\x00\x03off\x00\x01u\x00\x01p")
    assert encode_publish("t", b"x", 0, False) == b"\x30\x04\x00\x01tx"
    assert encode_publish("t", b"x", 1, True, mid=258) == b"\x33\x06\x00\x01t\x01\x02x"
    assert encode_publish("t", b"x", 2, False, mid=1, dup=True) == b"\x3c\x06\x00\x01t\x00\x01x"
    assert encode_ack(6, 9) == b"\x62\x02\x00\x09"  # PUBREL carries flags 0b0010


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\0b"])
def test_topics_one_may_not_publish_to(topic):
    with pytest.raises(ValueError, match="topic"):
        check_topic(topic)
    with pytest.raises(ValueError, match="topic"):
        Client("c").publish(topic, b"")


@pytest.fixture
def stopping():
    clients = []
    yield clients.append
    for c in clients:
        c.stop(1.0)


def test_each_qos_delivered_once_in_order(broker, stopping):
    watcher = Recorder(broker.port, "q/#", qos=2)
    assert watcher.subscribed.wait(5)
    c = Client("qos-test", keepalive=10)
    stopping(c)
    c.start("127.0.0.1", broker.port)
    assert c.wait_connected(5)
    sent = [c.publish(f"q/{qos}", f"{qos}-{i}".encode(), qos) for i in range(30) for qos in (0, 1, 2)]
    assert all(m.wait(10) for m in sent)
    assert watcher.wait_for(lambda m: m[2] == b"2-29", 10)
    time.sleep(0.3)  # a duplicate would arrive now
    for qos in (0, 1, 2):
        assert [m[2] for m in watcher.on(f"q/{qos}")] == [f"{qos}-{i}".encode() for i in range(30)]
    assert c.queued == 0 and not c._inflight and not c._released
    watcher.close()


def test_a_broker_that_stops_answering_is_noticed_and_the_window_holds(broker, stopping):
    """SIGSTOP the broker: at most max_inflight QoS 1 messages go out unacknowledged, the rest wait;
    the missing ping answer ends the connection within 2 x keepalive; after SIGCONT everything arrives."""
    watcher = Recorder(broker.port, "w/#")
    assert watcher.subscribed.wait(5)
    events = []
    c = Client("window-test", keepalive=1, max_inflight=5, reconnect_min_s=0.1, reconnect_max_s=0.2)
    c.on_disconnect = lambda why: events.append(("down", time.monotonic(), why))
    stopping(c)
    c.start("127.0.0.1", broker.port)
    assert c.wait_connected(5)
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        t_stop = time.monotonic()
        msgs = [c.publish("w/x", str(i).encode(), 1) for i in range(30)]
        time.sleep(0.3)
        assert len(c._inflight) == 5 and c.queued == 25 and not any(m.done for m in msgs)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events and events[0][1] - t_stop <= 2 * 1 + 0.5, events
        assert "ping" in events[0][2]
        assert c.queued == 30 and not c._inflight  # the 5 unacknowledged ones are back in the queue, first
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    assert all(m.wait(10) for m in msgs)
    assert watcher.wait_for(lambda m: m[2] == b"29", 10)
    got = list(dict.fromkeys(m[2] for m in watcher.on("w/x")))  # QoS 1: at least once
    assert got == [str(i).encode() for i in range(30)]
    watcher.close()


def test_stop_disconnects_cleanly_so_no_will(broker, stopping):
    watcher = Recorder(broker.port, "s/#")
    assert watcher.subscribed.wait(5)
    c = Client("stop-test", will=("s/availability", b"gone", 1, True))
    c.start("127.0.0.1", broker.port)
    assert c.wait_connected(5)
    assert c.publish("s/availability", b"here", 1, True).wait(5)
    t0 = time.monotonic()
    assert c.stop(1.0) and time.monotonic() - t0 < 1.0
    assert not c.connected
    time.sleep(0.5)
    assert [m[2] for m in watcher.on("s/availability")] == [b"here"]
    watcher.close()


def test_a_failing_callback_does_not_end_the_client(broker, stopping, caplog):
    c = Client("callback-test")
    stopping(c)

    def boom(*_):
        raise RuntimeError("callback bug")

    c.on_connect = c.on_published = boom
    c.start("127.0.0.1", broker.port)
    assert c.wait_connected(5)
    assert c.publish("cb/x", b"1", 1).wait(5) and c.publish("cb/x", b"2", 1).wait(5)
    assert "callback bug" in caplog.text


def test_full_queue_drops_the_oldest_and_says_so():
    c = Client("no-broker", queue_size=3)
    dropped = []
    c.on_dropped = dropped.append
    for i in range(5):
        c.publish("d/x", str(i).encode(), 1)
    assert c.queued == 3 and dropped == [1, 1]
    assert [m.payload for m in c._queue] == [b"2", b"3", b"4"]
    c.stop(0.1)


# ----------------------------------------------------------------------------- a broker that misbehaves
# mosquitto never sends a malformed packet nor drops a connection between PUBREC and PUBREL on cue: a
# scripted loopback peer plays those brokers. Everything mosquitto can do is tested against mosquitto.


def test_a_malformed_packet_is_a_lost_connection_not_a_dead_thread(caplog):
    got = []

    def script(peer, n):
        peer.connect()
        if n == 0:
            peer.conn.sendall(b"\x62\x00")  # a PUBREL without its packet id
            time.sleep(0.5)
        else:
            mid, payload = peer.publish()
            got.append(payload)
            peer.conn.sendall(encode_ack(PUBACK, mid))
            time.sleep(1)

    broker = ScriptedBroker(script)
    reasons = []
    c = Client("malformed", reconnect_min_s=0.05, reconnect_max_s=0.1)
    c.on_disconnect = c.on_connect_fail = reasons.append  # the PUBREL may come in CONNACK's read
    c.start("127.0.0.1", broker.port)
    try:
        deadline = time.monotonic() + 5
        while broker.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert broker.connections >= 2 and reasons and "PUBREL" in reasons[0], reasons
        assert c.publish("m/x", b"after", 1).wait(5) and got == [b"after"]
    finally:
        c.stop(1.0)
        broker.close()
    assert not broker.errors, broker.errors


def test_qos2_past_pubrec_is_sent_again_after_a_lost_connection():
    """mosquitto passes a QoS 2 message on when PUBREL arrives; a clean session forgets one whose PUBREL
    never came. So a message past PUBREC is sent again after the reconnect, and only then done."""
    seen = []

    def script(peer, n):
        peer.connect()
        mid, payload = peer.publish()
        seen.append((n, payload))
        peer.conn.sendall(encode_ack(5, mid))  # PUBREC
        kind, _, body = peer.read()
        assert kind == 6 and struct.unpack("!H", body)[0] == mid  # PUBREL
        if n == 0:
            return  # the connection drops before PUBCOMP
        peer.conn.sendall(encode_ack(7, mid))  # PUBCOMP
        time.sleep(1)

    broker = ScriptedBroker(script)
    c = Client("qos2", reconnect_min_s=0.05, reconnect_max_s=0.1)
    c.start("127.0.0.1", broker.port)
    try:
        msg = c.publish("q2/x", b"once", 2)
        assert msg.wait(5)
        assert seen == [(0, b"once"), (1, b"once")]
    finally:
        c.stop(1.0)
        broker.close()
    assert not broker.errors, broker.errors


def test_resent_in_the_order_sent_across_a_packet_id_wrap():
    seen = []

    def script(peer, n):
        peer.connect()
        for _ in range(6):
            mid, payload = peer.publish()
            seen.append((n, mid, payload))
            if n == 1:
                peer.conn.sendall(encode_ack(PUBACK, mid))
        time.sleep(0.2 if n == 0 else 1)  # connection 0 acknowledges nothing, then drops

    broker = ScriptedBroker(script)
    c = Client("wrap", reconnect_min_s=0.05, reconnect_max_s=0.1)
    c._next_mid = 65532  # the next ids: 65533, 65534, 65535, 1, 2, 3
    msgs = [c.publish("w/x", bytes([i]), 1) for i in range(6)]
    c.start("127.0.0.1", broker.port)
    try:
        assert all(m.wait(5) for m in msgs)
    finally:
        c.stop(1.0)
        broker.close()
    first = [(mid, p) for n, mid, p in seen if n == 0]
    again = [p for n, _, p in seen if n == 1]
    assert [m for m, _ in first] == [65533, 65534, 65535, 1, 2, 3]
    assert again == [bytes([i]) for i in range(6)]
    assert not broker.errors, broker.errors


def test_an_idle_connection_outlives_its_keepalive(broker, stopping):
    """Pings answered keep a quiet connection up: keepalive 1 s, 3.5 s without a message."""
    downs = []
    c = Client("idle", keepalive=1)
    c.on_disconnect = downs.append
    stopping(c)
    c.start("127.0.0.1", broker.port)
    assert c.wait_connected(5)
    time.sleep(3.5)
    assert c.connected and not downs
    assert c.publish("i/x", b"still here", 1).wait(5)
