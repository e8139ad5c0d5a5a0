"""The HTTP output under load: 20 concurrent loopback clients against the real daemon (a child
process on a paced 30 fps synthetic camera), and the bounded pool's behaviour when it is full.

The goal (with socketserver's backlog of 5 and a thread per connection, p99 was 1.0-1.4 s, max
3.1 s): 0 errors, p99 <= 50 ms, the result rate within 5 % of the same run's rate without load.
3000 requests, so one scheduling hiccup of a busy machine (a round of 20 slow answers) stays under
the 1 % that p99 allows. `make bench-http` prints the same figures for a real model.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from device.bench.http_load import get, load, run, summary_lines


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_twenty_concurrent_clients(tiny_models):
    """Every run: no error, no request near the 1 s SYN retry, no RSS growth. The p99 goal (50 ms)
    and the frame rate within 5 % of the quiet rate must hold together in one of up to three runs:
    other work on a shared machine only ever adds latency and steals frames, so a run that meets
    both shows what the server does; a server that cannot (the old backlog of 5: p50 ~1 s) fails
    all three. Each run's figures are printed."""
    runs: list[tuple[float, float]] = []
    for attempt in range(1, 4):
        rep = run(tiny_models["int8"], clients=20, rounds=150, pause_ms=20, quiet_s=3.0)
        print(f"\nrun {attempt}:\n" + "\n".join(summary_lines(rep)))
        lat = rep["latency_ms"]
        assert rep["errors"] == 0, rep["error_examples"]
        assert lat["n"] == 3000
        assert lat["max"] < 1000  # not one SYN dropped and retried (the kernel retries after 1 s)
        assert rep["quiet_fps"] > 25  # the 30 fps camera was classified in full without load, too
        assert rep["rss_change_mb"] < 10  # no growth per connection
        assert rep["status_after"] == "ok" and rep["daemon_exit"] == 0
        runs.append((lat["p99"], rep["fps_change"]))
        if lat["p99"] <= 50 and abs(rep["fps_change"]) <= 0.05:
            break
    assert any(p99 <= 50 and abs(change) <= 0.05 for p99, change in runs), f"(p99 ms, fps change) per run: {runs}"


def test_a_full_pool_answers_busy_at_once():
    """One worker, one queue slot: a client that sends nothing holds the worker, the next waits in
    the queue, and the one after gets 503 + Retry-After immediately instead of hanging; once the
    silent client times out, the waiting one is served."""
    from device.outputs.http import REQUEST_TIMEOUT_S, HttpConfig, HttpOutput, _Handler, _Server
    from device.telemetry import Telemetry

    out = HttpOutput(HttpConfig(port=0), Telemetry())
    server = _Server(("127.0.0.1", 0), _Handler, workers=1, queue_size=1)
    server.output = out
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    port = server.server_address[1]
    try:
        silent = socket.create_connection(("127.0.0.1", port))  # holds the only worker
        time.sleep(0.2)
        waiting: dict = {}

        def queued():
            t0 = time.perf_counter()
            waiting["answer"] = get(port, "/metrics", timeout=10)
            waiting["s"] = time.perf_counter() - t0

        q = threading.Thread(target=queued)
        q.start()
        time.sleep(0.2)  # it is in the queue now
        t0 = time.perf_counter()
        status, body = get(port, "/healthz", timeout=5)
        busy_s = time.perf_counter() - t0
        assert status == 503 and b"busy" in body and busy_s < 0.5
        q.join(10)
        assert waiting["answer"][0] == 200 and waiting["s"] < REQUEST_TIMEOUT_S + 1.5
        silent.close()
    finally:
        server.shutdown()
        server.server_close()


def test_load_counts_errors_against_a_closed_port():
    """The load generator itself can fail: nothing listening is an error per request, not a pass."""
    from tests.helpers.sshd import free_port

    r = load(free_port(), clients=3, rounds=2, pause_s=0, timeout=1)
    assert r["requests"] == 6 and len(r["errors"]) == 6 and "ConnectionRefusedError" in r["errors"][0]
