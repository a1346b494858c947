"""edge-live --serve under a busy bench, over plain HTTP on loopback only: a flood of silent
connections (with a 256-descriptor limit), requests that trickle in, deeply nested JSON, a Host that
names another site, a lowercase Bearer; each bounded in count and time, and the loop classifies on."""
from __future__ import annotations

import http.client
import json
import resource
import select
import socket
import time
from types import SimpleNamespace

import pytest

from test_live import read_log
from test_web import TOKEN, Live, frames_folder, state_of  # noqa: F401  (the fixture)
from edge.metadata import load_spec
from edge.model_store import resolve_model
from edge.web import (WebServer, allowed_host, connection_cap, device_names, json_depth, parse_json,
                      split_host)


def raw_request(port: int, text: str, timeout: float = 15) -> bytes:
    """One request sent as is; the whole reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(text.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def frames_logged(live: Live) -> int:
    return sum(1 for r in read_log(live.log) if "frame" in r and "label" in r)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


# -- the pieces -----------------------------------------------------------------------------
def test_host_header_rules():
    assert [split_host(h) for h in ("127.0.0.1:8080", "LocalHost", "[::1]:80", "evil.example.:80")] == [
        "127.0.0.1", "localhost", "::1", "evil.example"]
    assert [split_host(h) for h in ("", "::1", "[::1", "a:b", "[::1]x")] == [None] * 5
    names = device_names(["bench-3.lab"])
    # loopback bind: loopback names only (a rebound hostile name is refused)
    assert all(allowed_host(h, "127.0.0.1", names) for h in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "a.localhost"))
    assert not any(allowed_host(h, "127.0.0.1", names) for h in ("evil.example", "10.0.0.5", "bench-3.lab", None))
    assert allowed_host("::1", "::1", names) and not allowed_host("evil.example", "::1", names)
    # one address: that address, loopback or the device's names; every address: any address literal
    assert allowed_host("10.0.0.5", "10.0.0.5", names) and allowed_host("bench-3.lab", "10.0.0.5", names)
    assert not allowed_host("10.0.0.6", "10.0.0.5", names) and not allowed_host("evil.example", "10.0.0.5", names)
    assert allowed_host("192.168.1.20", "0.0.0.0", names) and allowed_host("fe80::1", "::", names)
    assert not allowed_host("evil.example", "0.0.0.0", names)


def test_json_nesting_is_bounded_without_recursion():
    assert json_depth(b'{"a": [1, {"b": "[[[[[[[[[["}]}') == 3  # brackets in strings do not count
    assert json_depth(b'{"a": "\\"[[[["}') == 1
    assert parse_json(b'{"name": "x"}') == {"name": "x"}
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError, match="nests"):
        parse_json(deep)


def test_connection_cap_leaves_descriptors_for_the_loop():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        cap = connection_cap()
        open_now = len(__import__("os").listdir("/proc/self/fd"))
        assert 2 <= cap and open_now + 2 * cap + 64 <= 256 or cap == 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def small_server():
    """A server capped at 3 connections with a 2 s request deadline, a status without a run."""
    server = WebServer(("127.0.0.1", 0), state_of(load_spec(resolve_model("leukemia"))), token=None,
                       max_connections=3, request_deadline=2.0)
    server.status = lambda: {"ok": True, "connections": server.connections}
    server.start(SimpleNamespace())
    yield server
    server.close()


def test_connections_beyond_the_cap_are_refused_and_slots_come_back(small_server):
    port = small_server.server_address[1]
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    wait_until(lambda: small_server.connections == 3, 10, "three connections held")
    refused = raw_request(port, "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(refused) == 503 and b"Retry-After" in refused and small_server.refused >= 1
    # the silent ones are dropped at the deadline: their slots come back
    for sock in held:
        assert sock.recv(100) == b""  # closed by the server, nothing answered
        sock.close()
    wait_until(lambda: small_server.connections == 0, 10, "slots given back")
    assert status_of(raw_request(port, "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")) == 200


def test_a_trickled_request_is_dropped_at_its_deadline(small_server):
    port = small_server.server_address[1]
    request = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    started, sent, reply = time.monotonic(), 0, None
    try:
        while sent < len(request):  # one byte every 0.5 s: every read is quick, the whole is not
            try:
                sock.send(request[sent:sent + 1])
            except OSError:
                break
            sent += 1
            if select.select([sock], [], [], 0.5)[0]:
                reply = sock.recv(100)
                break
    finally:
        sock.close()
    assert reply == b"" and sent < 30, (reply, sent)  # closed, unanswered, long before the request was whole
    assert time.monotonic() - started < 30
    assert status_of(raw_request(port, "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")) == 200


# -- a running edge-live ------------------------------------------------------------------------
def limit_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_a_flood_is_refused_and_the_loop_goes_on(frames_folder, tmp_path):  # noqa: F811
    """300 connections that never send a token (nor anything) against a 256-descriptor limit,
    bound to every address with a token and reached through 127.0.0.1."""
    run = Live(frames_folder, tmp_path, "0.0.0.0:0", fps="8", preexec_fn=limit_descriptors)
    flood = []
    try:
        token = run.printed_token
        run.token = token
        status = run.wait_for_frames(2)
        cap = status["connections"]["max"]
        assert 2 <= cap <= (256 - 64) // 2
        before = frames_logged(run)
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", run.port), timeout=10))
        answered = 0
        for sock in flood:  # beyond the cap: told 503 and closed, at once
            if select.select([sock], [], [], 0.2 if answered < 300 - cap - 5 else 0)[0]:
                reply = sock.recv(200)
                answered += reply.startswith(b"HTTP/1.1 503")
        assert answered >= 300 - cap - 5
        # while the held ones wait out their deadline, the loop reads and classifies its images
        wait_until(lambda: frames_logged(run) >= before + 10, 60, "the loop classifies during the flood")
        for sock in flood:
            sock.close()
        flood.clear()
        status = wait_until(lambda: (s := run.status()) and s, 30, "status after the flood")
        assert status["source"]["state"] == "running" and status["connections"]["refused"] >= 300 - cap - 5
        run.wait_for_frames(status["frames"] + 3)
        records = read_log(run.log)
        assert not [r for r in records if r.get("event") in ("image_skipped", "frame_failed", "source_lost")]
    finally:
        for sock in flood:
            sock.close()
        err = run.stop()
    assert "Too many open files" not in err


def test_nesting_host_and_bearer_on_a_running_edge_live(frames_folder, tmp_path):  # noqa: F811
    (tmp_path / "token").write_text(TOKEN + "\n")
    run = Live(frames_folder, tmp_path, "127.0.0.1:0", "--token-file", str(tmp_path / "token"))
    run.token = TOKEN
    try:
        frames = run.wait_for_frames(1)["frames"]
        nested = b"[" * 2000 + b"]" * 2000
        code, _, body = run.request("/api/session", data=nested, headers={"Content-Type": "application/json"})
        assert code == 400 and "nests" in json.loads(body)["error"]
        assert run.status()["session"] == "session"  # unchanged

        for host, expected in (("evil.example", 421), (f"evil.example:{run.port}", 421), ("localhost", 200),
                               (f"127.0.0.1:{run.port}", 200), (f"[::1]:{run.port}", 200)):
            reply = raw_request(run.port, f"GET /api/status HTTP/1.1\r\nHost: {host}\r\n"
                                          f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
            assert status_of(reply) == expected, host
        assert status_of(raw_request(run.port, f"GET /api/status?token={TOKEN} HTTP/1.0\r\n\r\n")) == 421  # no Host
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert run.request("/api/status", token=None, headers={"Authorization": f"{scheme} {TOKEN}"})[0] == 200
        assert run.request("/api/status", token=None, headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
        run.wait_for_frames(frames + 2)  # still classifying
    finally:
        err = run.stop()
    assert "RecursionError" not in err and "Traceback" not in err
