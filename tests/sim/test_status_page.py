"""The live status page in a real browser: `p2pfl node start --status-port` on a real anvil
chain with a second node, two rounds committed, then headless Chromium (Debian's
`chromium`, installed by scripts/setup.sh) loads the page; the DOM after its script ran
shows the task, the round and a commit's transaction hash, and a screenshot is saved.
Raw-socket garbage against the running node is refused while it keeps answering. Every
process is started here and stopped by PID."""

import json
import re
import shutil
import socket
import struct
import subprocess
import urllib.request
import zlib

import pytest

from p2pfl.chain.providers import Anvil, free_loopback_port
from tests.sim.test_cli import AliceAndBob, open_task

WINDOW = (1280, 1400)
# Virtual time the page runs for before Chromium dumps or shoots it: enough for its first
# poll of /status.json and one more (POLL_MS = 2 s).
VIRTUAL_TIME_MS = 5000


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium not found: the status page test needs Debian's `chromium` "
        "package (scripts/setup.sh installs it; or `apt-get install -y chromium`)"
    )


def browse(url, tmp_path, *args):
    """Run headless Chromium on `url` with `args`; its stdout (blocking)."""
    out = subprocess.run(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--disable-extensions", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}",
         f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, f"chromium failed:\n{out.stderr[-3000:]}"
    return out.stdout


def png_facts(data):
    """(width, height, distinct byte values of the pixel data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, pixels = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            pixels += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(pixels)))


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_status_page_in_a_browser(tmp_path):
    with Anvil() as chain:
        rpc = ["--rpc", chain.url]
        open_task(tmp_path, rpc, ("alice", "bob"), name="page-demo", epochs=1)
        port = free_loopback_port()
        with AliceAndBob(tmp_path, rpc, "--status-port", str(port)) as nodes:
            url = f"http://127.0.0.1:{port}/"
            nodes.wait_alice(re.escape(f"status    {url}"))
            nodes.run_bob(rounds=2)
            nodes.wait_alice(r"round 2 committed: .* accuracy")

            with urllib.request.urlopen(url + "status.json", timeout=10) as response:
                status = json.loads(response.read())
            history = {h["round"]: h for h in status["rounds"]}
            assert {1, 2} <= set(history), status
            tx = history[2]["tx"]
            assert re.fullmatch(r"0x[0-9a-f]{64}", tx), history[2]
            assert history[2]["accuracy"] is not None and history[2]["bytes_sent"] > 0

            dom = browse(url, tmp_path, "--dump-dom")
            assert f"0x{status['task']}" in dom
            shown_round = re.search(r'id="round">(\d+)<', dom)
            assert shown_round and int(shown_round.group(1)) >= 3, dom[:3000]
            assert tx in dom and history[1]["tx"] in dom
            assert re.search(r'id="state" class="ok">live', dom), "the page's poll failed"
            assert dom.count("<polyline") >= 2 and "<rect" in dom  # curves and byte bars

            shot = tmp_path / "status-page.png"
            browse(url, tmp_path, f"--screenshot={shot}")
            width, height, distinct = png_facts(shot.read_bytes())
            assert (width, height) == WINDOW and distinct > 50, (width, height, distinct)
            assert shot.stat().st_size > 20_000

            # Garbage from a raw socket: refused, and the node goes on answering.
            assert raw(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
            host = f"Host: 127.0.0.1:{port}\r\n".encode()
            assert raw(port, b"POST /status.json HTTP/1.1\r\n" + host + b"\r\n").startswith(
                b"HTTP/1.1 405"
            )
            assert raw(port, b"GET /nope HTTP/1.1\r\n" + host + b"\r\n").startswith(b"HTTP/1.1 404")
            with urllib.request.urlopen(url + "status.json", timeout=10) as response:
                assert json.loads(response.read())["task"] == status["task"]
            assert nodes.alice.poll() is None, nodes.logs["alice"].read_text()
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "status.json", timeout=5)
