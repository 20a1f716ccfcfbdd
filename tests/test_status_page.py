"""The status page's server (p2pfl.cli.status_page) on 127.0.0.1 with a stand-in snapshot:
what it answers, what it refuses (raw sockets: malformed request lines, unknown methods,
other hosts, stalled clients), that snapshots are taken on the trio loop, and the round
history the page charts. The page in a real browser against a real node is
tests/sim/test_status_page.py."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

from p2pfl.cli import status_page
from p2pfl.cli.status_page import PAGE_HTML, round_history, serve_status_page
from p2pfl.errors import P2PFLError
from p2pfl.node.roundlog import RoundLog


def exchange(port: int, data: bytes, *, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read until the server closes (blocking)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request(port: int, method: str = "GET", path: str = "/", headers: str = "") -> bytes:
    host = f"Host: 127.0.0.1:{port}\r\n"
    return exchange(port, f"{method} {path} HTTP/1.1\r\n{host}{headers}\r\n".encode())


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1))


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


async def with_server(check: Callable[[int], None], snapshot: Callable[[], Any]) -> None:
    with serve_status_page(snapshot, "127.0.0.1", 0) as (_, port):
        await trio.to_thread.run_sync(check, port)


async def test_page_and_json_are_served_and_bad_requests_refused() -> None:
    loop_thread = threading.get_ident()
    taken_on: list[int] = []

    def snapshot() -> dict[str, Any]:
        taken_on.append(threading.get_ident())
        return {"task": "ab" * 32, "round": 7, "rounds": [{"round": 6, "tx": "0x" + "cd" * 32}]}

    def check(port: int) -> None:
        answer = request(port, path="/")
        assert status_of(answer) == 200
        assert b"content-security-policy: default-src 'none'" in answer.lower()
        assert body_of(answer) == PAGE_HTML
        answer = request(port, path="/status.json?t=1")
        assert status_of(answer) == 200
        assert json.loads(body_of(answer))["round"] == 7
        head = request(port, "HEAD", "/status.json")
        assert status_of(head) == 200 and body_of(head) == b""

        assert status_of(request(port, path="/metrics")) == 404
        assert status_of(request(port, path="/../etc/passwd")) == 404
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
            answer = request(port, method, "/status.json", "Content-Length: 3\r\n")
            assert status_of(answer) == 405, answer
            assert b"Allow: GET, HEAD" in answer and b"read-only" in answer
        # DNS rebinding: another name for 127.0.0.1, or no Host at all, is refused.
        for headers in ("Host: evil.example:%d\r\n" % port, "Host: 127.0.0.1:1\r\n", ""):
            answer = exchange(port, f"GET /status.json HTTP/1.1\r\n{headers}\r\n".encode())
            assert status_of(answer) == 403, answer
        ok = exchange(port, f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        assert status_of(ok) == 200

        # Malformed requests: a status line saying what was wrong, never a crash.
        for raw, code in (
            (b"garbage\r\n\r\n", 400),
            (b"GET / HTTP/9.9\r\n\r\n", 505),
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
            (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 403),  # no Host left
            (b"\x00\xff\xfe\r\n\r\n", 400),
        ):
            assert status_of(exchange(port, raw)) == code, raw[:40]
        assert exchange(port, b"") == b""  # connect and hang up
        assert status_of(exchange(port, b"GET / HT")) == 400  # hang up mid-request line

        # Keep-alive: two requests on one connection, then a GET with a body closes it.
        host = f"Host: 127.0.0.1:{port}\r\n"
        two = exchange(port, f"GET /status.json HTTP/1.1\r\n{host}\r\n".encode() * 2)
        assert two.count(b"HTTP/1.1 200 OK") == 2
        smuggled = exchange(
            port,
            f"GET / HTTP/1.1\r\n{host}Content-Length: 30\r\n\r\n"
            f"POST /x HTTP/1.1\r\n{host}\r\n".encode(),
        )
        assert smuggled.count(b"HTTP/1.1") == 1 and b"Connection: close" in smuggled

        assert status_of(request(port, path="/status.json")) == 200  # still answering

    await with_server(check, snapshot)
    assert taken_on and set(taken_on) == {loop_thread}


def try_status(port: int) -> int | None:
    """The status of GET /status.json, or None if the server closed the connection."""
    try:
        answer = request(port, path="/status.json")
    except OSError:
        return None
    return status_of(answer) if answer else None


async def test_stalled_clients_do_not_block_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_page, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(status_page._Handler, "timeout", 1.0)  # REQUEST_TIMEOUT_S, shortened

    def check(port: int) -> None:
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            for sock in stalled:
                sock.sendall(b"GET / HTTP/1.1\r\n")  # and never finish
            threading.Event().wait(0.3)
            assert try_status(port) is None  # every slot taken: closed unanswered
            # The stalled clients time out and free their slots: the next client is served.
            for _ in range(50):
                if (status := try_status(port)) is not None:
                    break
                threading.Event().wait(0.1)
            assert status == 200
        finally:
            for sock in stalled:
                sock.close()

    await with_server(check, lambda: {"round": 1})


async def test_snapshots_are_shared_between_close_polls() -> None:
    calls = []

    def snapshot() -> dict[str, Any]:
        calls.append(1)
        return {"n": len(calls)}

    def check(port: int) -> None:
        answers = [json.loads(body_of(request(port, path="/status.json"))) for _ in range(5)]
        assert answers == [{"n": 1}] * 5  # within SNAPSHOT_REUSE_S of each other

    await with_server(check, snapshot)
    assert len(calls) == 1


async def test_a_taken_status_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(P2PFLError, match=f"127.0.0.1:{port}.*another --status-port"):
            with serve_status_page(dict, "127.0.0.1", port):
                pass


def test_the_page_loads_nothing_from_elsewhere() -> None:
    html = PAGE_HTML.decode()
    assert not re.search(r"\b(src|href)\s*=", html)
    assert set(re.findall(r"https?://[^\s\"']+", html)) == {"http://www.w3.org/2000/svg"}
    assert "innerHTML" not in html  # status text is never parsed as markup


def test_round_history_per_round_bytes_and_missing_values() -> None:
    rounds = {
        1: RoundLog(1, started=10.0, result="bafy1", commit_tx="0xaa", committee=(b"a", b"b"),
                    included=(b"a",), train_loss=0.9, committed_at=25.5,
                    bytes_sent=1000, bytes_received=3000),
        2: RoundLog(2, started=26.0, result="bafy2", commit_tx="", train_loss=math.nan,
                    committed_at=40.0, bytes_sent=1500, bytes_received=3100),
        3: RoundLog(3, started=41.0),  # in progress: not committed
    }  # fmt: skip
    history = round_history(rounds, {1: (0.5, 0.8)})
    assert [h["round"] for h in history] == [1, 2]
    first, second = history
    assert first == {
        "round": 1, "model": "bafy1", "tx": "0xaa", "committee": 2, "member": False,
        "included": 1, "train_loss": 0.9, "loss": 0.5, "accuracy": 0.8, "bytes_sent": 1000,
        "bytes_received": 3000, "duration_s": 15.5,
    }  # fmt: skip
    assert second["bytes_sent"] == 500 and second["bytes_received"] == 100
    assert second["tx"] is None and second["train_loss"] is None and second["accuracy"] is None
    json.dumps(history, allow_nan=False)  # the browser's JSON.parse takes it
    assert [h["round"] for h in round_history(rounds, {}, limit=1)] == [2]


async def test_ipv6_loopback() -> None:
    with serve_status_page(lambda: {"round": 2}, "::1", 0) as (_, port):

        def check() -> None:
            head = f"GET /status.json HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n".encode()
            answer = exchange(port, head, host="::1")
            assert status_of(answer) == 200 and json.loads(body_of(answer)) == {"round": 2}

        await trio.to_thread.run_sync(check)
