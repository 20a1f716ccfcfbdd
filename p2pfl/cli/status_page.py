"""A node's live status page over HTTP: one self-contained page and the JSON it polls.

    GET /              -> the page: inline CSS, JS and SVG charts; it loads nothing else
    GET /status.json   -> what `p2pfl status` shows, plus the history of committed rounds

Read-only, on loopback unless the operator says otherwise (`p2pfl node start
--status-port N --status-host H`), started by `cli/launch.py` beside the metrics server.
Every other path is 404, every other method 405 (the page changes nothing), and a
malformed request is refused by the standard library's parser with a 4xx: nothing a
client sends reaches the node.

Threads: as for the metrics, the server is the standard library's, one thread per
connection (at most `MAX_CONNECTIONS`), while the node's state belongs to its trio loop. A
request therefore takes its snapshot *on the loop* (`trio.from_thread.run_sync`) and
encodes it in its own thread; snapshots are shared for `SNAPSHOT_REUSE_S`, so a client
polling in a tight loop costs the node one copy per interval, not one per request.

DNS rebinding: a web page the operator visits could point its own host name at 127.0.0.1
and read the status through the browser. On loopback the server answers only requests
whose `Host` names a loopback address (`LOOPBACK_NAMES`), as a browser sends when the
operator opens the page itself.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from p2pfl.errors import P2PFLError

log = logging.getLogger("p2pfl.status")

# The page tells anyone who can load it the node's address, peers and traffic: loopback
# unless the operator chooses to expose it.
DEFAULT_STATUS_HOST = "127.0.0.1"
# Committed rounds the page charts and lists: bounds the snapshot's size and the copy
# made on the node's loop (a day of one-minute rounds).
MAX_HISTORY_ROUNDS = 1440
# Concurrent snapshots are pointless within this: the node's state moves at round pace,
# the page polls every 2 s.
SNAPSHOT_REUSE_S = 0.5
# A client that stalls mid-request loses its connection after this (frees its thread).
REQUEST_TIMEOUT_S = 10.0
# Connections served at once; more are closed unanswered (a page needs one or two).
MAX_CONNECTIONS = 16
# Host header names a browser uses for a loopback server (DNS rebinding guard).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# The page may run its own inline script and style and fetch its own JSON, nothing else:
# the browser enforces that it loads no CDN and sends nothing anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


# ---------------------------------------------------------------- the data


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a value not measured is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def round_history(
    rounds: Mapping[int, Any],  # round -> p2pfl.node.roundlog.RoundLog
    held_out: Mapping[int, tuple[float, float]],  # round -> (loss, accuracy) on held-out data
    limit: int = MAX_HISTORY_ROUNDS,
) -> list[dict[str, Any]]:
    """The node's committed rounds, oldest first (the last `limit`), as the page charts them.

    A RoundLog keeps the network layer's cumulative byte counters at the commit; a round's
    bytes are the difference from the previous committed round the node saw (the first
    one counts from the node's start)."""
    committed = sorted((r, e) for r, e in rounds.items() if e.result)
    history = []
    sent_before = received_before = 0
    for round_, entry in committed:
        loss, accuracy = held_out.get(round_, (None, None))
        history.append(
            {
                "round": round_,
                "model": entry.result,
                "tx": entry.commit_tx or None,
                "committee": len(entry.committee),
                "member": entry.member,
                "included": len(entry.included),
                "train_loss": _finite(entry.train_loss),
                "loss": _finite(loss),
                "accuracy": _finite(accuracy),
                "bytes_sent": max(0, entry.bytes_sent - sent_before),
                "bytes_received": max(0, entry.bytes_received - received_before),
                "duration_s": _finite(
                    round(entry.committed_at - entry.started, 2) if entry.committed_at else None
                ),
            }
        )
        sent_before, received_before = entry.bytes_sent, entry.bytes_received
    return history[-limit:]


# ---------------------------------------------------------------- HTTP


class _Snapshots:
    """The latest snapshot taken on the node's loop, shared for `SNAPSHOT_REUSE_S`."""

    def __init__(self, take: Callable[[], dict[str, Any]], trio_token: Any) -> None:
        self.take = take
        self.trio_token = trio_token
        self._lock = threading.Lock()
        self._at = -math.inf
        self._body = b""

    def json(self) -> bytes:
        """The node's status as JSON; P2PFLError if the node's loop has ended."""
        import trio

        with self._lock:
            now = time.monotonic()
            if now - self._at >= SNAPSHOT_REUSE_S:
                try:
                    status = trio.from_thread.run_sync(self.take, trio_token=self.trio_token)
                except trio.RunFinishedError:
                    raise P2PFLError("the node has stopped") from None
                self._body = json.dumps(status, default=str).encode()
                self._at = now
            return self._body


def _allowed_host(header: str | None, port: int) -> bool:
    """Does a loopback server's request name it by a loopback name (and its port)?"""
    if header is None:
        return False
    name, _, port_text = header.strip().lower().rpartition(":")
    if not name or port_text != str(port):
        return False
    return name in LOOPBACK_NAMES


class _Handler(BaseHTTPRequestHandler):
    server_version = "p2pfl-status"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's polls reuse one connection
    timeout = REQUEST_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body are two writes (see cli/serve.py)
    snapshots: _Snapshots  # set on the subclass `serve_status_page` makes
    check_host: Callable[[str | None], bool]

    def do_GET(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a GET body is never read: it must not be parsed next
        if not type(self).check_host(self.headers.get("Host")):
            self._send_text(403, "this status page answers only to its loopback address")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, PAGE_HTML, "text/html; charset=utf-8")
        elif path == "/status.json":
            try:
                body = self.snapshots.json()
            except P2PFLError as exc:
                self._send_text(503, str(exc))
                return
            except Exception:  # a bug must not kill the server thread silently
                log.exception("status page: snapshot failed")
                self._send_text(500, "internal error (logged by the node)")
                return
            self._send(200, body, "application/json")
        else:
            self._send_text(404, f"no {path}; the status page is at / and its data at /status.json")

    do_HEAD = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's refusals: malformed requests (4xx) and methods we have no
        handler for (501, answered as 405: the page is read-only)."""
        self.close_connection = True  # what follows a refused request cannot be trusted
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = 405, f"method {self.command} not allowed: the status page is read-only"
        # A malformed request line leaves the version at HTTP/0.9, answered with a bare
        # body: give the client a status line, so it sees what went wrong.
        self.request_version = "HTTP/1.0"
        self._send_text(code, message or self.responses.get(code, ("error",))[0])

    def _send_text(self, status: int, message: str) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client's thread never holds up shutdown

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        if ":" in address[0]:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.info("status page: %d connections open; closing one from %s", MAX_CONNECTIONS,
                     client_address)  # fmt: skip
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is routine; anything else is logged in full (the standard
        library would print it to stderr). The server goes on either way."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("status page: client %s went away (%s)", client_address, exc)
        else:
            log.exception("status page: request from %s failed", client_address)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextmanager
def serve_status_page(
    take_snapshot: Callable[[], dict[str, Any]], host: str, port: int
) -> Iterator[tuple[str, int]]:
    """Serve the status page while the block runs (call from the node's trio loop, which
    `take_snapshot` then runs on); yields the bound (host, port) (`port` 0: a free one).
    The server is shut down on exit, so a stopped node refuses connections."""
    import trio

    snapshots = _Snapshots(take_snapshot, trio.lowlevel.current_trio_token())
    try:
        httpd = _Server((host, port), _Handler)
    except OSError as exc:
        raise P2PFLError(
            f"cannot serve the status page on {host}:{port} ({exc}); choose another --status-port"
        ) from None
    bound_port = httpd.server_address[1]
    loopback = _is_loopback(host)

    def check_host(header: str | None) -> bool:
        return not loopback or _allowed_host(header, bound_port)

    httpd.RequestHandlerClass = type(
        "Handler", (_Handler,), {"snapshots": snapshots, "check_host": staticmethod(check_host)}
    )
    thread = threading.Thread(target=httpd.serve_forever, name="p2pfl-status", daemon=True)
    thread.start()
    try:
        yield host, bound_port
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ---------------------------------------------------------------- the page

# One page, no external resource (the CSP above forbids any). The script polls
# /status.json and renders with textContent and SVG elements only (never innerHTML), so
# nothing in the status is ever parsed as markup.
PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>p2pfl node status</title>
<style>
:root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #69707d; --line: #dde1e7;
        --acc: #1a7f37; --loss: #c4432b; --sent: #3466c2; --recv: #9a6ad6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       background: var(--bg); color: var(--ink); }
header { padding: 14px 24px; background: #1d2330; color: #fff; display: flex;
         align-items: baseline; gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header .sub { color: #b9c0cc; font-size: 12px; }
#state { margin-left: auto; font-size: 12px; padding: 2px 10px; border-radius: 10px;
         background: #39414f; }
#state.ok { background: #1a7f37; } #state.bad { background: #b3261e; }
main { padding: 18px 24px; display: grid; gap: 16px;
       grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 12px 16px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
     margin: 0 0 6px; }
.big { font-size: 26px; font-weight: 600; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px;
        overflow-wrap: anywhere; }
.muted { color: var(--muted); }
ul { margin: 4px 0 0; padding-left: 18px; max-height: 120px; overflow: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         white-space: nowrap; }
td.num, th.num { text-align: right; }
svg { width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: var(--muted); }
.legend span { margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
            border-radius: 2px; vertical-align: -1px; }
</style>
</head>
<body>
<header>
  <h1>p2pfl node</h1>
  <span class="sub mono" id="address">-</span>
  <span class="sub mono" id="peer-id"></span>
  <span id="state">connecting</span>
</header>
<main>
  <section><h2>Task</h2><div class="mono" id="task">-</div></section>
  <section><h2>Round</h2><div class="big" id="round">-</div>
    <div id="phase" class="muted">-</div></section>
  <section><h2>Committee</h2><div class="big" id="committee-size">-</div>
    <div id="member" class="muted"></div><ul class="mono" id="committee"></ul></section>
  <section><h2>Live peers</h2><div class="big" id="peers">-</div>
    <div class="muted" id="live-count"></div><ul class="mono" id="live"></ul></section>
  <section class="wide"><h2>Accuracy and loss per committed round</h2>
    <div class="legend"><span><i style="background:var(--acc)"></i>accuracy (held-out)</span>
    <span><i style="background:var(--loss)"></i>loss (held-out)</span>
    <span><i style="background:var(--loss);opacity:.45"></i>training loss</span></div>
    <svg id="curve" viewBox="0 0 900 220"></svg></section>
  <section class="wide"><h2>Bytes per round</h2>
    <div class="legend"><span><i style="background:var(--sent)"></i>sent</span>
    <span><i style="background:var(--recv)"></i>received</span></div>
    <svg id="bytes" viewBox="0 0 900 220"></svg></section>
  <section class="wide"><h2>Last commits</h2>
    <table><thead><tr><th>round</th><th class="num">accuracy</th><th class="num">loss</th>
    <th class="num">sent</th><th class="num">received</th><th class="num">duration</th>
    <th>transaction</th></tr></thead><tbody id="commits"></tbody></table>
    <div class="muted" id="no-commits">no round committed yet</div></section>
</main>
<script>
"use strict";
const POLL_MS = 2000, LAST_COMMITS = 10, SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
function text(id, value) { $(id).textContent = value; }
function fmtBytes(n) {
  if (n == null) return "-";
  const units = ["B", "kB", "MB", "GB"]; let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function fmt(x, digits) { return x == null ? "-" : x.toFixed(digits); }
function fillList(id, items) {
  const list = $(id); list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li"); li.textContent = item; list.appendChild(li);
  }
}
function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent.appendChild(node); return node;
}
const W = 900, H = 220, L = 60, R = 46, T = 12, B = 26;
function frame(svg, rounds, yLeft, yRight, pad) {
  svg.replaceChildren();
  if (!rounds.length) {
    el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, svg).textContent =
      "waiting for the first committed round";
    return null;
  }
  const r0 = rounds[0], r1 = rounds[rounds.length - 1];
  const span = W - L - R - 2 * pad;
  const x = (r) => L + pad + (r1 === r0 ? span / 2 : (r - r0) / (r1 - r0) * span);
  el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#dde1e7"}, svg);
  const step = Math.max(1, Math.ceil((r1 - r0 + 1) / 12));
  for (let r = r0; r <= r1; r += step)
    el("text", {x: x(r), y: H - 8, "text-anchor": "middle"}, svg).textContent = r;
  for (const [axis, side] of [[yLeft, "left"], [yRight, "right"]]) {
    if (!axis) continue;
    for (const f of [0, 0.5, 1]) {
      const v = axis.min + f * (axis.max - axis.min), y = axis.y(v);
      if (side === "left") el("line", {x1: L, y1: y, x2: W - R, y2: y, stroke: "#eef0f3"}, svg);
      el("text", {x: side === "left" ? L - 6 : W - R + 6, y: y + 4,
                  "text-anchor": side === "left" ? "end" : "start"}, svg).textContent =
        axis.label(v);
    }
  }
  return x;
}
function axis(values, label, fromZero) {
  const finite = values.filter((v) => v != null);
  let min = fromZero ? 0 : Math.min(...finite), max = Math.max(...finite);
  if (!finite.length) { min = 0; max = 1; }
  if (max === min) max = min + 1;
  return {min, max, label, y: (v) => H - B - (v - min) / (max - min) * (H - B - T)};
}
function polyline(svg, rounds, values, x, ax, color, extra) {
  const pts = [];
  rounds.forEach((r, i) => { if (values[i] != null) pts.push([x(r), ax.y(values[i])]); });
  if (!pts.length) return;
  el("polyline", Object.assign({points: pts.map((p) => p.join(",")).join(" "), fill: "none",
     stroke: color, "stroke-width": 2}, extra || {}), svg);
  for (const [px, py] of pts) el("circle", {cx: px, cy: py, r: 3, fill: color}, svg);
}
function drawCurve(history) {
  const svg = $("curve"), rounds = history.map((h) => h.round);
  const acc = history.map((h) => h.accuracy);
  const losses = history.map((h) => h.loss), train = history.map((h) => h.train_loss);
  const accAxis = {min: 0, max: 1, label: (v) => v.toFixed(1),
                   y: (v) => H - B - v * (H - B - T)};
  const lossAxis = axis(losses.concat(train), (v) => v.toFixed(2), true);
  const x = frame(svg, rounds, accAxis, lossAxis, 8);
  if (!x) return;
  polyline(svg, rounds, train, x, lossAxis, "#c4432b", {opacity: 0.45, "stroke-dasharray": "4 3"});
  polyline(svg, rounds, losses, x, lossAxis, "#c4432b");
  polyline(svg, rounds, acc, x, accAxis, "#1a7f37");
}
function drawBytes(history) {
  const svg = $("bytes"), rounds = history.map((h) => h.round);
  const sent = history.map((h) => h.bytes_sent), recv = history.map((h) => h.bytes_received);
  const ax = axis(sent.concat(recv), fmtBytes, true);
  const slot = (W - L - R) / Math.max(rounds.length, 1), bar = Math.min(18, slot * 0.35);
  const x = frame(svg, rounds, ax, null, bar + 6);
  if (!x) return;
  rounds.forEach((r, i) => {
    for (const [v, dx, color] of [[sent[i], -bar, "#3466c2"], [recv[i], 0, "#9a6ad6"]]) {
      const y = ax.y(v);
      el("rect", {x: x(r) + dx, y, width: bar, height: H - B - y, fill: color}, svg);
    }
  });
}
function render(s) {
  text("address", s.address); text("peer-id", s.peer_id);
  text("task", "0x" + s.task);
  text("round", s.round);
  text("phase", s.phase + " - attempt " + s.attempt + ", view " + s.view);
  text("committee-size", s.committee.length + " members");
  text("member", s.member ? "this node is on the committee" : "this node is not on it");
  fillList("committee", s.committee);
  const live = Object.entries(s.live || {});
  text("peers", s.peers + " connected");
  text("live-count", live.length + (live.length === 1 ? " node" : " nodes") +
       " heard from (heartbeats)");
  fillList("live", live.map(([a, ago]) => a + "  " + Math.round(ago) + " s ago"));
  const history = s.rounds || [];
  drawCurve(history); drawBytes(history);
  const body = $("commits"); body.replaceChildren();
  for (const h of history.slice(-LAST_COMMITS).reverse()) {
    const tr = document.createElement("tr");
    const cells = [[h.round, ""], [fmt(h.accuracy, 4), "num"], [fmt(h.loss, 4), "num"],
      [fmtBytes(h.bytes_sent), "num"], [fmtBytes(h.bytes_received), "num"],
      [h.duration_s == null ? "-" : h.duration_s.toFixed(1) + " s", "num"],
      [h.tx || "(not seen yet)", "mono"]];
    for (const [v, cls] of cells) {
      const td = document.createElement("td"); td.textContent = v; td.className = cls;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $("no-commits").hidden = history.length > 0;
}
async function poll() {
  try {
    const response = await fetch("/status.json", {cache: "no-store"});
    if (!response.ok) throw new Error((await response.text()).trim());
    render(await response.json());
    $("state").className = "ok";
    text("state", "live - " + new Date().toLocaleTimeString());
  } catch (err) {
    $("state").className = "bad";
    text("state", "unreachable: " + err.message);
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body>
</html>
""".encode()
