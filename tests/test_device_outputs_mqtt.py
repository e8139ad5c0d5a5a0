"""MQTT output against a real mosquitto on 127.0.0.1 (fault 5: broker absent at start, killed mid-run,
client hard-killed → last-will)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device.errors import FaceedgeError
from device.outputs import OutputsConfig, build_outputs
from device.outputs.mqtt import MqttConfig, MqttOutput
from device.telemetry import Telemetry
from device.types import Result
from tests.helpers import tools
from tests.helpers.mosquitto import Mosquitto, Recorder
from tests.helpers.scripted_broker import ScriptedBroker

ROOT = Path(__file__).resolve().parents[1]


def result(i: int, label: str = "face", event: bool = False) -> Result:
    return Result(i, 1_700_000_000.0 + i / 10, label, 0.9, label, 0.8, event=event, stages_ms={"invoke": 2.0})


@pytest.fixture
def closing():
    things = []
    yield things.append
    for t in reversed(things):
        t.close()


def make_output(port: int, prefix: str, tel: Telemetry | None = None, **kw) -> MqttOutput:
    cfg = MqttConfig(
        port=port,
        topic_prefix=prefix,
        client_id=f"faceedge-test-{prefix.replace('/', '-')}",
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        **kw,
    )
    return MqttOutput(cfg, tel or Telemetry())


def frame_ids(rec: Recorder, topic: str) -> list[int]:
    return [json.loads(m[2])["frame_id"] for m in rec.on(topic)]


def test_results_events_and_availability(broker, closing):
    rec = Recorder(broker.port, "t1/#")
    closing(rec)
    assert rec.subscribed.wait(5)
    tel = Telemetry()
    out = make_output(broker.port, "t1", tel)
    out.start()
    assert out.wait_connected(5)
    labels = ["face", "face", "face", "no_face", "no_face", "face"]
    for i, lab in enumerate(labels):
        out.publish(result(i, lab, event=i in (0, 3, 5)))
    assert rec.wait_for(lambda m: m[1] == "t1/result" and json.loads(m[2])["frame_id"] == 5, 5)
    assert frame_ids(rec, "t1/result") == list(range(6))
    r3 = json.loads(rec.on("t1/result")[3][2])
    assert r3["label"] == "no_face" and r3["time"] == "2023-11-14T22:13:20.300Z" and r3["stages_ms"] == {"invoke": 2.0}
    assert rec.wait_for(lambda m: m[1] == "t1/event" and json.loads(m[2])["frame_id"] == 5, 5)
    events = [json.loads(m[2]) for m in rec.on("t1/event")]
    assert [(e["previous"], e["label"]) for e in events] == [(None, "face"), ("face", "no_face"), ("no_face", "face")]
    assert [m[2] for m in rec.on("t1/availability")] == [b"online"]
    assert tel.gauge("mqtt_connected") == 1

    t0 = time.monotonic()
    out.close()
    close_s = time.monotonic() - t0
    assert close_s < 1.5
    assert rec.wait_for(lambda m: m[1] == "t1/availability" and m[2] == b"offline", 5)
    # A newcomer sees the retained "offline" of a clean close.
    late = Recorder(broker.port, "t1/availability")
    closing(late)
    m = late.wait_for(lambda m: True, 5)
    assert m is not None and m[2] == b"offline" and m[3] is True


def test_result_interval_throttles_results_not_events(broker, closing):
    rec = Recorder(broker.port, "t2/#")
    closing(rec)
    assert rec.subscribed.wait(5)
    out = make_output(broker.port, "t2", result_interval_s=0.5)
    closing(out)
    out.start()
    assert out.wait_connected(5)
    for i in range(20):  # 8 fps for 2.5 s (timestamps exact in binary)
        r = result(i, event=i == 7)
        r.timestamp = 1_700_000_000.0 + i * 0.125
        out.publish(r)
    assert rec.wait_for(lambda m: m[1] == "t2/event", 5)
    assert rec.wait_for(lambda m: m[1] == "t2/result" and json.loads(m[2])["frame_id"] == 19, 5)
    assert frame_ids(rec, "t2/result") == [0, 4, 7, 11, 15, 19]  # every 0.5 s, plus the event frame


@pytest.mark.slow
def test_broker_absent_at_start_then_appears(tmp_path, closing):
    """Fault 5a: no broker at start. start() returns at once, publish never blocks, the queue stays at
    queue_size (drops counted), and when the broker appears the client connects and delivers the newest."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    # A watcher with a persistent session, registered and saved to disk, then the broker goes away.
    broker.start()
    watcher = Recorder(broker.port, "t3/#", client_id="watcher-t3", persistent=True)
    assert watcher.subscribed.wait(5)
    watcher.close()
    broker.save()
    broker.kill()
    try:
        tel = Telemetry()
        out = make_output(broker.port, "t3", tel, queue_size=20, qos_result=1)
        closing(out)
        t0 = time.perf_counter()
        out.start()
        assert time.perf_counter() - t0 < 0.2
        worst = 0.0
        for i in range(50):
            t = time.perf_counter()
            out.publish(result(i))
            worst = max(worst, time.perf_counter() - t)
        assert worst < 0.005, f"publish took {worst * 1000:.1f} ms with no broker"
        assert out.queue_depth == 20 and tel.counter("mqtt_dropped") == 30
        assert not out.connected and tel.gauge("mqtt_connected") == 0
        time.sleep(1.0)  # a few failed connection attempts in the background

        up = broker.start()
        assert out.wait_connected(5)
        reconnect_s = time.monotonic() - up
        print(f"\nconnected {reconnect_s:.2f} s after the broker came up (reconnect_max_s=1.0)")
        assert reconnect_s < 1.0 + 1.5
        watcher = Recorder(broker.port, "t3/#", client_id="watcher-t3", persistent=True)
        closing(watcher)
        assert watcher.wait_for(lambda m: m[1] == "t3/result" and json.loads(m[2])["frame_id"] == 49, 10)
        assert frame_ids(watcher, "t3/result") == list(range(30, 50))  # the newest 20, in order
        assert out.queue_depth == 0
        broker.kill()  # and gone again: close() still returns within its budget (+ scheduling slack)
        from device.outputs.mqtt import OFFLINE_TIMEOUT_S, STOP_JOIN_S

        t0 = time.monotonic()
        out.close()
        assert time.monotonic() - t0 < OFFLINE_TIMEOUT_S + STOP_JOIN_S + 0.5
    finally:
        broker.kill()


@pytest.mark.slow
def test_broker_killed_mid_run(tmp_path, closing):
    """Fault 5b: SIGKILL the broker while publishing; the queue stays bounded; it reconnects and delivers."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    try:
        watcher = Recorder(broker.port, "t4/#", client_id="watcher-t4", persistent=True)
        closing(watcher)
        assert watcher.subscribed.wait(5)
        broker.save()  # the watcher's session survives the SIGKILL below
        tel = Telemetry()
        out = make_output(broker.port, "t4", tel, queue_size=25, qos_result=1)
        closing(out)
        out.start()
        assert out.wait_connected(5)
        for i in range(10):
            out.publish(result(i))
        assert watcher.wait_for(lambda m: m[1] == "t4/result" and json.loads(m[2])["frame_id"] == 9, 5)

        broker.kill()
        deadline = time.monotonic() + 5
        while out.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not out.connected
        requeued = out.queue_depth  # sent, but the PUBACK died with the broker (frame 9's, at times): back in the queue
        worst, depth = 0.0, []
        for i in range(10, 110):  # 100 results while the broker is dead
            t = time.perf_counter()
            out.publish(result(i))
            worst = max(worst, time.perf_counter() - t)
            depth.append(out.queue_depth)
        assert max(depth) == 25 and out.queue_depth == 25
        assert tel.counter("mqtt_dropped") == 75 + requeued  # the requeued are the oldest: pushed out first
        assert worst < 0.005

        time.sleep(0.5)
        up = broker.start()
        assert out.wait_connected(5)
        reconnect_s = time.monotonic() - up
        print(f"\nreconnected {reconnect_s:.2f} s after the broker restarted")
        assert reconnect_s < 2.5
        assert tel.counter("mqtt_reconnects") == 1
        out.publish(result(110))
        assert watcher.wait_for(lambda m: m[1] == "t4/result" and json.loads(m[2])["frame_id"] == 110, 10)
        # QoS 1 is at-least-once: the broker may redeliver what was in flight to the watcher at the kill.
        ids = list(dict.fromkeys(frame_ids(watcher, "t4/result")))
        assert ids == list(range(10)) + list(range(85, 111))  # before, the newest 25 queued, after
        avail = [m[2] for m in watcher.on("t4/availability")]
        assert avail[-1] == b"online" and avail.count(b"online") >= 2
    finally:
        broker.kill()


CHILD = textwrap.dedent(
    """
    import sys, time
    from device.outputs.mqtt import MqttConfig, MqttOutput
    from device.telemetry import Telemetry
    out = MqttOutput(MqttConfig(port=int(sys.argv[1]), topic_prefix="t5", client_id="child-t5"), Telemetry())
    out.start()
    assert out.wait_connected(10)
    print("connected", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_last_will_on_hard_kill(broker, closing):
    """Fault 5c: the daemon is SIGKILLed; the broker publishes the retained last-will "offline"."""
    watcher = Recorder(broker.port, "t5/availability")
    closing(watcher)
    assert watcher.subscribed.wait(5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline().strip() == b"connected"
        assert watcher.wait_for(lambda m: m[2] == b"online", 5)
        t_kill = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        m = watcher.wait_for(lambda m: m[2] == b"offline", 10)
        assert m is not None
        will_s = m[0] - t_kill
        print(f"\nlast-will 'offline' delivered {will_s * 1000:.0f} ms after SIGKILL")
        assert will_s < 2.0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    late = Recorder(broker.port, "t5/availability")
    closing(late)
    m = late.wait_for(lambda m: True, 5)
    assert m is not None and m[2] == b"offline" and m[3] is True  # retained for newcomers


def test_config_and_secrets(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="qos_result"):
        OutputsConfig.model_validate({"mqtt": {"qos_result": 3}})
    with pytest.raises(Exception, match="topic_prefix"):
        MqttConfig(topic_prefix="a/#")
    with pytest.raises(Exception, match="hostname"):
        OutputsConfig.model_validate({"mqtt": {"hostname": "x"}})
    monkeypatch.delenv("FACEEDGE_MQTT_PW", raising=False)
    with pytest.raises(FaceedgeError, match=r"password_env: environment variable \$FACEEDGE_MQTT_PW is not set"):
        build_outputs(OutputsConfig(mqtt=MqttConfig(username="u", password_env="FACEEDGE_MQTT_PW")), Telemetry())
    with pytest.raises(FaceedgeError, match="password_file .*nope"):
        MqttOutput(MqttConfig(username="u", password_file=tmp_path / "nope"), Telemetry())
    pw = tmp_path / "pw"
    pw.write_text("hunter2hunter2\n")
    pw.chmod(0o600)
    out = MqttOutput(MqttConfig(username="u", password_file=pw, topic_prefix="p"), Telemetry())
    assert out.client.username == "u" and out.client.password == "hunter2hunter2"
    assert out.topic_availability == "p/availability"
    default = MqttOutput(MqttConfig(), Telemetry())
    assert default.prefix.startswith("faceedge/") and default.client_id.startswith("faceedge-")


def test_password_file_readable_by_others_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2hunter2\n")
    for mode in (0o644, 0o640, 0o604):
        pw.chmod(mode)
        with pytest.raises(FaceedgeError, match=rf"password_file {pw}: readable by other users \(mode {mode:o}\)"):
            MqttOutput(MqttConfig(username="u", password_file=pw), Telemetry())
    pw.chmod(0o400)
    assert MqttOutput(MqttConfig(username="u", password_file=pw), Telemetry()).client.password == "hunter2hunter2"


@pytest.mark.parametrize(
    "host, tls, warned",
    [
        ("192.0.2.10", False, True),  # TEST-NET-1: never contacted (the output is not started)
        ("broker.example", False, True),
        ("192.0.2.10", True, False),
        ("127.0.0.1", False, False),
        ("::1", False, False),
    ],
)
def test_password_in_clear_to_a_remote_broker_warns_once(tmp_path, caplog, monkeypatch, host, tls, warned):
    monkeypatch.setenv("FACEEDGE_TEST_MQTT_PW", "hunter2hunter2")
    caplog.set_level(logging.WARNING, logger="device.outputs.mqtt")
    out = MqttOutput(
        MqttConfig(host=host, username="pi", password_env="FACEEDGE_TEST_MQTT_PW", tls={} if tls else None), Telemetry()
    )  # {}: the system's trust store
    for i in range(5):  # publishing (queued: never started, nothing is sent) says nothing more
        out.publish(result(i))
    clear = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(clear) == (1 if warned else 0), [r.getMessage() for r in caplog.records]
    if warned:
        assert host in clear[0].getMessage() and "tls:" in clear[0].getMessage()


def test_tls_files_are_checked_one_by_one(tmp_path):
    with pytest.raises(FaceedgeError, match=rf"outputs.mqtt.tls.ca_file {tmp_path}/nope.crt: "):
        MqttOutput(MqttConfig(tls={"ca_file": tmp_path / "nope.crt"}), Telemetry())
    with pytest.raises(FaceedgeError, match=rf"outputs.mqtt.tls.cert_file {tmp_path}/client.crt: "):
        MqttOutput(
            MqttConfig(tls={"cert_file": tmp_path / "client.crt", "key_file": tmp_path / "client.key"}), Telemetry()
        )
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    (tmp_path / "client.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(FaceedgeError, match=rf"outputs.mqtt.tls.key_file {key}: readable by other users"):
        MqttOutput(MqttConfig(tls={"cert_file": tmp_path / "client.crt", "key_file": key}), Telemetry())
    with pytest.raises(Exception, match="key_file needs cert_file"):
        MqttConfig(tls={"key_file": key})


def make_tls_files(d: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI, EC keys: fast)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=faceedge-test-ca")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    # a client certificate from the same CA (mutual TLS), and one from a CA the broker does not trust
    ossl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=faceedge-pi1")
    ossl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
    )
    ossl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2", "-subj", "/CN=rogue")
    for key in ("ca.key", "server.key", "client.key", "rogue.key"):
        (d / key).chmod(0o600)
    return {
        "ca": d / "ca.crt",
        "server": d / "server.crt",
        "server_key": d / "server.key",
        "client": d / "client.crt",
        "client_key": d / "client.key",
        "rogue": d / "rogue.crt",
        "rogue_key": d / "rogue.key",
    }


@pytest.mark.slow
def test_tls_and_password_from_file(tmp_path, closing, caplog, monkeypatch):
    tools.require("mosquitto", "openssl", "mosquitto_passwd")
    files = make_tls_files(tmp_path / "pki")
    pwfile = tmp_path / "broker" / "passwd"
    pwfile.parent.mkdir()
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pwfile), "pi", "correct-horse-battery"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    broker = Mosquitto(
        tmp_path / "broker",
        extra=[
            f"cafile {files['ca']}",
            f"certfile {files['server']}",
            f"keyfile {files['server_key']}",
            "allow_anonymous false",
            f"password_file {pwfile}",
        ],
    )
    broker.start()
    try:
        rec = Recorder(broker.port, "t6/#", ca_file=str(files["ca"]), username="pi", password="correct-horse-battery")
        closing(rec)
        assert rec.subscribed.wait(10)
        secret = tmp_path / "mqtt_password"
        secret.write_text("correct-horse-battery\n")
        secret.chmod(0o600)
        out = make_output(broker.port, "t6", username="pi", password_file=secret, tls={"ca_file": files["ca"]})
        closing(out)
        out.start()
        assert out.wait_connected(10)
        out.publish(result(1))
        assert rec.wait_for(lambda m: m[1] == "t6/result", 5)

        # The TLS broker goes away and comes back: the client reconnects (a new handshake) and delivers.
        broker.kill()
        deadline = time.monotonic() + 5
        while out.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not out.connected
        broker.start()
        assert out.wait_connected(10)
        again = Recorder(broker.port, "t6/#", ca_file=str(files["ca"]), username="pi", password="correct-horse-battery")
        closing(again)
        assert again.subscribed.wait(10)
        out.publish(result(2))
        assert again.wait_for(lambda m: m[1] == "t6/result" and json.loads(m[2])["frame_id"] == 2, 5)

        # A wrong password (from the environment this time): refused, logged once, publish still returns.
        monkeypatch.setenv("FACEEDGE_TEST_MQTT_PW", "wrong")
        caplog.set_level(logging.WARNING, logger="device.outputs.mqtt")
        tel = Telemetry()
        bad = make_output(
            broker.port,
            "t6bad",
            tel,
            username="pi",
            password_env="FACEEDGE_TEST_MQTT_PW",
            tls={"ca_file": files["ca"]},
            queue_size=5,
        )
        closing(bad)
        bad.start()
        for i in range(10):
            bad.publish(result(i))
        time.sleep(1.5)  # several refused attempts
        assert not bad.connected and bad.queue_depth == 5 and tel.counter("mqtt_dropped") == 5
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1 and refused[0].getMessage().endswith("refused the connection: not authorized")
    finally:
        broker.kill()


@pytest.mark.slow
def test_mutual_tls_with_a_client_certificate(tmp_path, closing, caplog):
    """A broker that requires a client certificate from its CA: ours gets in, a rogue one and none do not."""
    tools.require("mosquitto", "openssl")
    files = make_tls_files(tmp_path / "pki")
    broker = Mosquitto(
        tmp_path / "broker",
        extra=[
            f"cafile {files['ca']}",
            f"certfile {files['server']}",
            f"keyfile {files['server_key']}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
        ],
    )
    broker.start()
    try:
        tls = {"ca_file": files["ca"], "cert_file": files["client"], "key_file": files["client_key"]}
        out = make_output(broker.port, "t7", tls=tls)
        closing(out)
        out.start()
        assert out.wait_connected(10)
        caplog.set_level(logging.WARNING, logger="device.outputs.mqtt")
        for key, cert in (("rogue", {"cert_file": files["rogue"], "key_file": files["rogue_key"]}), ("none", {})):
            bad = make_output(broker.port, f"t7{key}", tls={"ca_file": files["ca"], **cert})
            closing(bad)
            bad.start()
            time.sleep(1.0)
            assert not bad.connected, key
        # what the accepted client publishes arrives: a second connection with the same certificate listens
        import paho.mqtt.client as mqtt

        got = []
        listener = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="t7-listener")
        listener.tls_set(ca_certs=str(files["ca"]), certfile=str(files["client"]), keyfile=str(files["client_key"]))
        listener.on_connect = lambda c, *a: c.subscribe("t7/result", qos=1)
        listener.on_message = lambda c, u, m: got.append(json.loads(m.payload)["frame_id"])
        listener.connect("127.0.0.1", broker.port)
        listener.loop_start()
        try:
            deadline = time.monotonic() + 10
            while 3 not in got and time.monotonic() < deadline:
                out.publish(result(3))
                time.sleep(0.2)
            assert 3 in got
        finally:
            listener.disconnect()
            listener.loop_stop()
    finally:
        broker.kill()


def retained_availability(port: int, prefix: str) -> bytes | None:
    late = Recorder(port, f"{prefix}/availability")
    try:
        m = late.wait_for(lambda m: True, 3)
        return None if m is None else m[2]
    finally:
        late.close()


def test_closed_while_connecting_leaves_offline_not_online(broker, closing):
    """close() while the CONNACK is still on its way (the broker SIGSTOPped): the connection made after
    the close says nothing and ends without DISCONNECT, so the broker's will leaves "offline"."""
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        out = make_output(broker.port, "t8")
        out.start()
        time.sleep(0.3)  # TCP is up (the kernel accepted it), CONNECT sent, no CONNACK yet
        assert not out.connected
        out.close()
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    time.sleep(1.0)  # the late CONNACK, then the thread closes the connection
    assert retained_availability(broker.port, "t8") == b"offline"


def test_close_with_a_broker_gone_quiet_ends_without_disconnect(closing):
    """The broker acknowledges nothing (the in-flight window fills): the goodbye cannot be acknowledged,
    so close() ends the connection without DISCONNECT and the broker's will says "offline" (a DISCONNECT
    would make it drop the will and keep the retained "online")."""
    kinds = []

    def script(peer, n):
        peer.connect()
        while True:
            try:
                kinds.append(peer.read()[0])
            except (EOFError, OSError):
                return

    broker = ScriptedBroker(script)
    try:
        out = make_output(broker.port, "t9", qos_result=1)
        out.start()
        assert out.wait_connected(5)
        for i in range(25):
            out.publish(result(i))
        time.sleep(0.2)
        out.close()
        time.sleep(0.3)
    finally:
        broker.close()
    assert kinds.count(3) == 20  # "online" and 19 results: the window of 20 unacknowledged
    assert 14 not in kinds  # no DISCONNECT
    assert not broker.errors, broker.errors
