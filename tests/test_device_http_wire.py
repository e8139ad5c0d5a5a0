"""The HTTP output's own request reading and answers, byte by byte on real loopback sockets: limits on
the request line and headers, requests split across writes, slow and silent clients, methods, HEAD,
the query string, and the exact head of an answer. http.client hides most of this (it never reads a
body after HEAD, it sends well-formed requests), so these tests speak raw HTTP."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time

import pytest

from device.outputs.http import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    REQUEST_TIMEOUT_S,
    HttpConfig,
    HttpOutput,
    _Handler,
    _Server,
    http_date,
    route_path,
)
from device.telemetry import Telemetry

TOKEN = "s3cret-token-0123456789"


def exchange(port: int, *chunks: bytes, pause_s: float = 0.0, host: str = "127.0.0.1") -> bytes:
    """Send `chunks` as separate writes `pause_s` apart, then read until the server closes."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each chunk its own segment
        for i, chunk in enumerate(chunks):
            if i and pause_s:
                time.sleep(pause_s)
            s.sendall(chunk)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def parse(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers in order, body) of one raw answer; the body must match Content-Length."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, code, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = [tuple(line.split(": ", 1)) for line in lines]
    return int(code), headers, body


def status_of(raw: bytes) -> int:
    return parse(raw)[0]


def request(path: str = "/healthz", method: str = "GET", headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()


@pytest.fixture
def one_worker():
    """A server with a single worker, so a client holding it shows in the next client's answer."""
    out = HttpOutput(HttpConfig(port=0), Telemetry())
    server = _Server(("127.0.0.1", 0), _Handler, workers=1, queue_size=4)
    server.output = out
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_head_of_an_answer(served):
    out = served()
    code, headers, body = parse(exchange(out.port, request("/metrics")))
    assert code == 200
    assert [k for k, _ in headers] == [
        "Server",
        "Date",
        "Content-Type",
        "Content-Length",
        "Cache-Control",
        "Connection",
    ]
    h = dict(headers)
    assert h["Server"] == "faceedge" and h["Cache-Control"] == "no-store" and h["Connection"] == "close"
    assert int(h["Content-Length"]) == len(body) > 0 and body.startswith(b"# HELP")
    parsed = email.utils.parsedate_to_datetime(h["Date"]).timestamp()
    assert abs(parsed - time.time()) < 5


def test_http_date_is_the_rfc_format():
    for t in (0.0, 784111777.0, 1_700_000_000.5, 951782400.0):  # 1970, RFC example, 2023, 29 Feb 2000
        assert http_date(t) == email.utils.formatdate(t, usegmt=True)


def test_head_sends_no_body(served):
    out = served()
    for path, code in (("/healthz", 503), ("/metrics", 200), ("/nope", 404), ("/", 200)):
        raw = exchange(out.port, request(path, "HEAD"))
        got, headers, body = parse(raw)
        assert got == code and body == b"", (path, raw[-80:])
        assert int(dict(headers)["Content-Length"]) > 0  # the length a GET would get


def test_query_string_and_target_forms_route(served):
    out = served()
    for target in ("/healthz?x=1", "/healthz?", "/healthz#frag", "//healthz", "http://127.0.0.1/healthz?a=b"):
        code, _, body = parse(exchange(out.port, request(target)))
        assert code == 503 and json.loads(body)["status"] == "starting", target
    assert status_of(exchange(out.port, request("/healthzx?x=/healthz"))) == 404
    assert status_of(exchange(out.port, request("/metrics?format=json"))) == 200


def test_route_path():
    assert route_path("/latest?x=1") == "/latest"
    assert route_path("/a/b#c?d") == "/a/b"
    assert route_path("///metrics") == "/metrics"
    assert route_path("HTTP://h:8088/view.json?t=1") == "/view.json"
    assert route_path("*") == "*"
    assert route_path("healthz") == "healthz"  # not a path: 404


def test_request_line_too_long(served):
    out = served()
    fits = "/" + "a" * (MAX_LINE - len("GET  HTTP/1.1") - 1)
    assert status_of(exchange(out.port, request(fits))) == 404  # exactly MAX_LINE bytes: read, routed
    code, headers, body = parse(exchange(out.port, request(fits + "a")))
    assert code == 414 and "longer than" in json.loads(body)["error"]
    assert dict(headers)["Connection"] == "close"
    # a line that never ends is refused once it passes the limit, not read on and on
    t0 = time.perf_counter()
    assert status_of(exchange(out.port, b"GET /" + b"a" * (4 * MAX_LINE))) == 414
    assert time.perf_counter() - t0 < 1.0


def test_too_many_or_too_long_headers(served):
    out = served()
    many = "".join(f"X-{i}: y\r\n" for i in range(MAX_HEADERS - 1))  # and Host: 100 headers
    assert status_of(exchange(out.port, request(headers=many))) == 503  # served
    code, _, body = parse(exchange(out.port, request(headers=many + "X-last: y\r\n")))
    assert code == 431 and "more than 100 headers" in json.loads(body)["error"]
    long_value = "v" * (MAX_LINE - len("X-Long: "))
    assert status_of(exchange(out.port, request(headers=f"X-Long: {long_value}\r\n"))) == 503  # just fits
    code, _, body = parse(exchange(out.port, request(headers=f"X-Long: {long_value}v\r\n")))
    assert code == 431 and "header line longer" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9: no version
        (b"GET / x HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz FOO/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.\xb2\r\n\r\n", 400),  # a digit to str.isdigit, not to HTTP
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
        (b"GET /healthz HTTP/0.9\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET /healthz HTTP/1.0\r\n\r\n", 503),
        (b"GET /healthz HTTP/1.1\nHost: localhost\n\n", 503),  # bare LF line ends
    ],
)
def test_malformed_requests(served, raw, code):
    out = served()
    got, headers, body = parse(exchange(out.port, raw))
    assert got == code
    if code != 503:
        assert dict(headers)["Content-Type"] == "application/json" and json.loads(body)["error"]


def test_request_that_ends_early_or_never_starts(served):
    out = served()
    with socket.create_connection(("127.0.0.1", out.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        s.shutdown(socket.SHUT_WR)  # no blank line: the headers never ended
        assert status_of(read_all(s)) == 400
    for nothing in (b"", b"\r\n"):  # closed at once, or an empty line: closed without an answer
        with socket.create_connection(("127.0.0.1", out.port), timeout=5) as s:
            s.sendall(nothing)
            s.shutdown(socket.SHUT_WR)
            assert read_all(s) == b""


def test_methods_other_than_get_and_head(served):
    """501, as http.server answered before; a body sent with the request does not spoil the answer."""
    out = served()
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "get"):
        code, _, body = parse(exchange(out.port, request(method=method)))
        assert code == 501 and "GET and HEAD" in json.loads(body)["error"], method
    payload = b"x" * 100_000
    raw = exchange(out.port, request(method="POST", headers=f"Content-Length: {len(payload)}\r\n") + payload)
    assert status_of(raw) == 501


def test_get_with_a_body_is_answered(served):
    out = served()
    payload = b'{"ignored": true}' * 2000
    raw = exchange(out.port, request("/metrics", headers=f"Content-Length: {len(payload)}\r\n"), payload)
    code, headers, body = parse(raw)
    assert code == 200 and int(dict(headers)["Content-Length"]) == len(body)


def test_request_split_across_writes_is_served(served):
    """A client (or the network) may cut the request anywhere; pieces arriving within the timeout
    make one request."""
    out = served()
    pieces = [b"GE", b"T /heal", b"thz?x HTTP/1.1\r", b"\nHost: 127.0", b".0.1\r\nX-A: b\r\n\r", b"\n"]
    t0 = time.perf_counter()
    code, _, body = parse(exchange(out.port, *pieces, pause_s=0.2))
    assert code == 503 and json.loads(body)["status"] == "starting"
    assert time.perf_counter() - t0 < REQUEST_TIMEOUT_S


def test_silent_client_dropped_after_the_timeout(one_worker):
    """A client that sends nothing gets no answer and is closed after REQUEST_TIMEOUT_S; the only
    worker is free again: the next request, queued meanwhile, is answered right after."""
    port = one_worker
    answers: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        t0 = time.perf_counter()
        time.sleep(0.1)  # the worker has it
        queued = threading.Thread(target=lambda: answers.append(exchange(port, request())))
        queued.start()
        assert read_all(silent) == b""  # closed by the server, nothing sent
        dropped_after = time.perf_counter() - t0
        queued.join(5)
    assert REQUEST_TIMEOUT_S - 0.2 <= dropped_after < REQUEST_TIMEOUT_S + 1.0
    assert answers and status_of(answers[0]) == 503


def test_trickling_client_dropped_at_the_deadline(one_worker):
    """The timeout bounds the whole request, not each read: a client sending a byte every 0.25 s
    (slowloris) still loses the worker after REQUEST_TIMEOUT_S."""
    port = one_worker
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        t0 = time.perf_counter()
        closed_after = None
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 40:
            try:
                s.sendall(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.perf_counter() - t0
                break
            time.sleep(0.25)
            s.setblocking(False)
            try:
                if s.recv(1) == b"":  # the server closed
                    closed_after = time.perf_counter() - t0
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
        assert closed_after is not None, "still connected after 10 s of trickling"
    assert REQUEST_TIMEOUT_S - 0.2 <= closed_after < REQUEST_TIMEOUT_S + 1.0
    assert status_of(exchange(port, request())) == 503  # the worker is free


def test_bearer_token_header_case_and_spacing(served, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    out = served(token_file=tok)
    for header in (
        f"authorization: bearer {TOKEN}",
        f"AUTHORIZATION: BEARER {TOKEN}",
        f"Authorization:   Bearer {TOKEN}  ",
    ):
        assert status_of(exchange(out.port, request("/metrics", headers=header + "\r\n"))) == 200, header
    for header in ("", f"Authorization: Basic {TOKEN}", f"Authorization: Bearer {TOKEN[:-1]}", "Authorization: Bearer"):
        code, headers, _ = parse(exchange(out.port, request("/metrics", headers=header + "\r\n" if header else "")))
        assert code == 401 and dict(headers)["WWW-Authenticate"] == 'Bearer realm="faceedge"', header
    # of a repeated header, the first counts (as http.server's headers.get did)
    two = f"Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer wrong\r\n"
    assert status_of(exchange(out.port, request("/metrics", headers=two))) == 200
    two = f"Authorization: Bearer wrong\r\nAuthorization: Bearer {TOKEN}\r\n"
    assert status_of(exchange(out.port, request("/metrics", headers=two))) == 401


def test_ipv6_loopback(served):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    out = served(host="::1")
    assert out.url == f"http://[::1]:{out.port}"
    assert status_of(exchange(out.port, request("/metrics"), host="::1")) == 200


def test_head_of_the_mjpeg_stream(served):
    """HEAD /stream.mjpg: the stream's headers, no parts, and the stream slot is given back (more
    HEADs than MAX_STREAMS in a row all get 200)."""
    import numpy as np

    from device.liveview import BOUNDARY, MAX_STREAMS

    out = served(expose_images=True)
    out.publish_frame(np.zeros((8, 8, 3), np.uint8), None)
    for _ in range(MAX_STREAMS + 1):
        code, headers, body = parse(exchange(out.port, request("/stream.mjpg", "HEAD")))
        assert code == 200 and body == b""
        h = dict(headers)
        assert h["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}" and "Content-Length" not in h


def test_the_whole_head_is_bounded(served):
    out = served()
    value = "v" * 8000
    fits = "".join(f"X-{i}: {value}\r\n" for i in range(3))  # ~24 KB
    assert status_of(exchange(out.port, request(headers=fits))) == 503  # served
    over = "".join(f"X-{i}: {value}\r\n" for i in range(MAX_HEAD_BYTES // 8000 + 1))
    code, _, body = parse(exchange(out.port, request(headers=over)))
    assert code == 431 and "request head longer" in json.loads(body)["error"]


def test_without_a_token_only_loopback_host_names(served, tmp_path):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends `Host: evil.example`."""
    out = served(expose_images=True)
    for host in ("127.0.0.1", f"127.0.0.1:{out.port}", "localhost", f"LOCALHOST:{out.port}", f"[::1]:{out.port}"):
        raw = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        assert status_of(exchange(out.port, raw)) == 200, host
    for host in ("evil.example", f"evil.example:{out.port}", "127.0.0.1.evil.example", "pi1.local"):
        for path in ("/metrics", "/latest.jpg", "/stream.mjpg", "/"):
            raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            code, _, body = parse(exchange(out.port, raw))
            assert code == 400 and "host not allowed" in json.loads(body)["error"], (host, path)
    assert status_of(exchange(out.port, b"GET /metrics HTTP/1.0\r\n\r\n")) == 200  # no Host: no browser
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    guarded = served(token_file=tok)  # the token is the guard: any Host name (pi1.local) with it
    raw = f"GET /metrics HTTP/1.1\r\nHost: pi1.local\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    assert status_of(exchange(guarded.port, raw)) == 200


def test_close_is_bounded_with_every_worker_busy(served):
    """Four clients holding the workers (a request trickling in): close() cuts them short and takes one
    budget for all, not one per worker."""
    out = served()
    held = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", out.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        held.append(s)
    time.sleep(0.3)
    t0 = time.monotonic()
    out.close()
    took = time.monotonic() - t0
    for s in held:
        s.close()
    assert took < 1.0, took
