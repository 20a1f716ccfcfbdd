"""Minimal, version-guarded fixes for py-libp2p 0.8.1's yamux streams (and the Noise and TCP
reads and locks under them).

What was measured (docs/DESIGN.md §8, and again here with a profile of a 50 MiB transfer): both
ends of a TCP+Noise+yamux stream sit in epoll while the sender waits for window credit.
The causes, fixed here without touching anything else:

1. **Polling.** `YamuxStream.write` waits for a WINDOW_UPDATE by sleeping 10 ms in a loop
   (yamux.py, "await trio.sleep(0.01)"). Every exhausted window costs up to 10 ms however
   fast the update arrives. Fix: `send_window` becomes a property whose setter wakes the
   writer through a `trio.Event` the moment credit grows (every place the muxer adds credit
   assigns `stream.send_window += n`, so the property sees them all).
2. **Frame size.** Data frames carry 65524 bytes + a 12-byte header = 65536 bytes, one byte
   per frame more than fits a Noise transport message (65535 - 16 MAC = 65519 plaintext), so
   every frame is encrypted and written as two Noise messages (65519 + 17 bytes). Fix: frames
   carry 65507 bytes of payload, so header + payload is exactly one Noise message.
3. **Window size.** Every stream starts with 256 KiB of credit and the auto-tuner only grows
   it when updates come faster than 4 x the measured RTT, which on loopback (RTT ~0.1 ms)
   never happens. `grow_receive_window()` lets a protocol that moves bulk data grant a larger
   window on its own streams (a WINDOW_UPDATE is legal at any time, spec section "Flow
   Control"); other streams keep the default so idle memory stays small.
4. **Chatty credit.** The receiver sends a WINDOW_UPDATE after almost every read below the
   half-window threshold (PY_YAMUX_RELEASE_ON_READ defaults on). Pubsub reads its varint
   length prefixes one byte at a time, so each gossip message cost several extra frames:
   with 20 nodes publishing 100 messages, 63k of 88k frames were window updates and the
   process was CPU-bound for 30 s. Fix: go-yamux's rule, re-credit once half the window is
   consumed (what the library does with PY_YAMUX_RELEASE_ON_READ=0, without touching the
   process environment).

5. **Unbuffered TCP reads.** Noise reads each transport message as a 2-byte length, then the
   body, each straight from the socket (`TrioTCPStream.read`): two or more `recv` syscalls and
   trio scheduling round trips per 64 KiB frame, and the same for every small gossip frame.
   Fix: the TCP stream reads up to 120 KiB at once and serves later reads from that buffer
   (a read still never returns more than asked for).

6. **RTT pings.** Every yamux session pings its peer every 30 s to measure the round-trip
   time its window auto-tuner uses (both ends of every connection do): 100 simulated nodes
   with ~1,760 connections sent ~3,600 pings (7,100 frames and their tasks) a 34 s round.
   Fix: after the first measurement (0.5 s after the session starts, unchanged), one every
   RTT_MEASURE_INTERVAL_S; the tuner keeps the last measured value.

7. **Locks that always yield.** trio's `Lock.acquire` and `Semaphore.acquire` pass a
   schedule point even when free, and a stream read or write takes several: the stream's
   state lock (`NetStream`), the muxer's connection-wide `streams_lock` and the stream's
   window lock (reads), the stream's writer lock, the connection's write lock and the TCP
   stream's (writes). Multistream negotiation reads its messages a varint byte at a time,
   so the listener's side of an open took ~18 schedule points: with 100 simulated nodes on
   2 cores, where each waits for every other runnable task, 0.4 s at the median (an open
   0.8 s, a 400 KB push 2.5 s). Fix: a read of bytes already buffered for the stream takes
   them at once (no lock guards anything across an await there: trio runs one task at a
   time), re-crediting the window only when an update is due, and these locks, when free,
   are taken without a schedule point (`Prompt`: `acquire_nowait`, else waiting in line as
   before). Measured after: opens 0.2 s, negotiation 0.06 s, pushes 0.8 s at the median.

   (Tried and taken back: writing up to 16 frames in one socket write. It made no
   measurable difference to the simulation's pushes, and it holds the connection's write
   lock through a long `send_all` while the muxer's reader writes control frames inline
   under that lock: two peers whose socket buffers fill could each wait for the other
   until an exchange times out. A round of a run with it stalled 80 s; not proven the
   cause, not worth the risk.)

Only the class used for new streams is replaced (`yamux.YamuxStream`, looked up by name when
the muxer creates a stream); the wire protocol is unchanged, so tuned and untuned peers
interoperate. `apply()` refuses to patch a libp2p version it was not checked against and says
so once; the node then runs on the library's own behaviour.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import trio

log = logging.getLogger(__name__)

# Versions whose yamux.py this patch was read against. Upstream changes to YamuxStream.write
# or to how credit is added must be re-checked before adding a version here.
TESTED_LIBP2P_VERSIONS = ("0.8.1",)
# Noise transport messages hold at most 65535 bytes, 16 of them the Poly1305 tag.
NOISE_MAX_PLAINTEXT = 65535 - 16
YAMUX_HEADER_SIZE = 12
# Largest data payload whose frame (header + payload) fits one Noise message.
FRAME_PAYLOAD_BYTES = NOISE_MAX_PLAINTEXT - YAMUX_HEADER_SIZE
# The library gives up on a writer after 5 s without credit; a reader that is busy (hashing
# or writing a 16 MiB batch to disk on a loaded laptop) can legitimately pause longer.
WINDOW_WAIT_TIMEOUT_S = 30.0

# How much one socket read may take (fix 5): nearly two full Noise messages, so a 64 KiB
# frame costs about half a recv instead of two or three. Below glibc's mmap threshold (128
# KiB unless raised; a node process pins it there, `sim.node_proc.tune_malloc`): `recv(n)`
# allocates its n-byte result before reading, and above the threshold each read is an mmap
# and a munmap whatever it returns. Measured on a socket pair: a 200-byte read 14 us with
# 256 KiB asked for, 2 us with 120 KiB; a 400 KB delta 236 us against 47 us.
TCP_READ_AHEAD_BYTES = 120 * 1024
# Seconds between a yamux session's RTT pings after the first (fix 6; the library: 30).
RTT_MEASURE_INTERVAL_S = 600

_applied = False


def _make_stream_class(Y: Any) -> type:
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    header_format = Y.YAMUX_HEADER_FORMAT
    type_data = Y.TYPE_DATA

    class TunedYamuxStream(Y.YamuxStream):  # type: ignore[misc, name-defined]
        """YamuxStream whose writer is woken by credit instead of polling for it."""

        _credit: int
        _credit_event: trio.Event | None

        @property
        def send_window(self) -> int:
            return self._credit

        @send_window.setter
        def send_window(self, value: int) -> None:
            grew = value > getattr(self, "_credit", 0)
            self._credit = value
            event = getattr(self, "_credit_event", None)
            if grew and event is not None:
                event.set()

        async def write(self, data: bytes) -> None:
            if self.send_closed:
                raise MuxedStreamError("Stream is closed for sending")
            view = memoryview(data)
            total = len(view)
            sent = 0
            while sent < total:
                frame = None
                writer = self.rw_lock._writer_lock  # (the library's write_lock(): only it)
                await acquire(writer)
                try:
                    if self.send_closed:
                        raise MuxedStreamError("Stream is closed for sending")
                    if self.closed:
                        raise MuxedStreamError("Stream is closed")
                    if self._credit > 0:
                        size = min(self._credit, FRAME_PAYLOAD_BYTES, total - sent)
                        self._credit -= size
                        header = struct.pack(header_format, 0, type_data, 0, self.stream_id, size)
                        frame = header + view[sent : sent + size]
                finally:
                    writer.release()
                if frame is None:
                    await self._wait_for_credit()
                    continue
                await self.conn._write_frame(frame)
                sent += size

        async def read(self, n: int | None = -1) -> bytes:
            data = self.take_buffered(n)
            if not data:
                return await super().read(n)  # (waits, or raises EOF / reset)
            if self.credit_due():
                await self._auto_tune_and_send_window_update(bytes_read=len(data))
            return data

        def take_buffered(self, n: int | None) -> bytes:
            """Up to `n` bytes already received for this open stream, at once (fix 7);
            b"" when there are none or the library's read must decide (EOF, reset,
            closing: it also does the bookkeeping of a drained closed stream)."""
            conn = self.conn
            if n is None or n <= 0 or self.closed or self.reset_received:
                return b""
            if conn.event_shutting_down.is_set() or self.stream_id not in conn.streams:
                return b""
            buffer = conn.stream_buffers.get(self.stream_id)
            if not buffer:
                return b""
            data = bytes(buffer[:n])
            del buffer[:n]
            return data

        def credit_due(self) -> bool:
            """Whether `_auto_tune_and_send_window_update` would send an update now."""
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            return delta > 0 and delta >= self.target_recv_window // 2

        async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
            # go-yamux's rule: re-credit only once at least half the window has been
            # consumed. The library also sends an update for every read below that (its
            # "release on read" and "partial slack" branches), which for pubsub's 1-byte
            # varint reads means one WINDOW_UPDATE frame per byte read.
            async with self.window_lock:
                buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
                delta = self.target_recv_window - (self.recv_window + buffered)
                if delta <= 0 or delta < self.target_recv_window // 2:
                    return
                self.recv_window += delta
                delta += self._apply_autotune_epoch(buffered)
            await self.send_window_update(delta)

        async def _wait_for_credit(self) -> None:
            with trio.move_on_after(WINDOW_WAIT_TIMEOUT_S) as scope:
                while self._credit <= 0 and not self.closed:
                    self._credit_event = trio.Event()
                    await self._credit_event.wait()
            self._credit_event = None
            if scope.cancelled_caught:
                raise MuxedStreamError(
                    f"no window update from peer in {WINDOW_WAIT_TIMEOUT_S:.0f} s"
                )

    TunedYamuxStream.__name__ = TunedYamuxStream.__qualname__ = "TunedYamuxStream"
    return TunedYamuxStream


async def acquire(lock: Any) -> None:
    """Take a trio Lock or Semaphore: at once if free (no schedule point: fix 7), else
    waiting in line as `acquire` does."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


class Prompt:
    """A trio Lock or Semaphore (`inner`) whose `acquire` and `async with` take it at once
    when free, without a schedule point (fix 7); anything else goes to `inner`."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def acquire(self) -> None:
        await acquire(self.inner)

    def release(self) -> None:
        self.inner.release()

    async def __aenter__(self) -> None:
        await acquire(self.inner)

    async def __aexit__(self, *exc: object) -> None:
        self.inner.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _prompt_locks(cls: Any, *names: str) -> None:
    """Make the trio locks `cls.__init__` creates under `names` `Prompt` ones (fix 7)."""
    init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in names:
            setattr(self, name, Prompt(getattr(self, name)))

    cls.__init__ = __init__


class _ReadAhead:
    """Bytes read from a socket but not yet handed out, and the lock for refilling them."""

    __slots__ = ("data", "pos", "lock")

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0
        self.lock = Prompt(trio.Lock())

    def take(self, n: int | None) -> bytes:
        """Up to `n` buffered bytes (all of them for None); one copy, none for a whole chunk."""
        if self.pos == 0 and (n is None or n >= len(self.data)):
            out, self.data = self.data, b""
            return out
        end = len(self.data) if n is None else min(len(self.data), self.pos + n)
        out = self.data[self.pos : end]
        if end == len(self.data):
            self.data, self.pos = b"", 0
        else:
            self.pos = end
        return out


def _buffer_tcp_reads(tcp_stream_class: Any) -> None:
    """Give `TrioTCPStream.read` a read-ahead buffer (fix 5); a read still returns <= n bytes."""
    unbuffered_read = tcp_stream_class.read

    async def read(self: Any, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        ahead = self.__dict__.get("_p2pfl_ahead")
        if ahead is None:
            ahead = self._p2pfl_ahead = _ReadAhead()
        if ahead.data:
            return ahead.take(n)  # no await: nobody can refill in between
        async with ahead.lock:
            # Whoever held the lock may have left bytes behind: those come first.
            if not ahead.data:
                chunk = await unbuffered_read(self, max(n or 0, TCP_READ_AHEAD_BYTES))
                if not chunk:
                    return chunk
                ahead.data, ahead.pos = chunk, 0
            return ahead.take(n)

    tcp_stream_class.read = read


def libp2p_is_tested(lost: str) -> bool:
    """Whether the installed libp2p is one our fixes to it were read against; if not, a
    warning says what is `lost` without the fix."""
    if version("libp2p") in TESTED_LIBP2P_VERSIONS:
        return True
    log.warning("libp2p %s untested: %s", version("libp2p"), lost)
    return False


_installed: set[str] = set()


def install_once(fix: str, lost: str, install: Callable[[], None]) -> bool:
    """Run `install` (a fix to py-libp2p named `fix`) once per process; False, with a warning
    of what is `lost`, if the installed libp2p is not one the fix was read against."""
    if fix in _installed:
        return True
    if not libp2p_is_tested(lost):
        return False
    install()
    _installed.add(fix)
    return True


def apply() -> bool:
    """Install the tuned stream class once per process; False if this libp2p is untested."""
    global _applied
    if _applied:
        return True
    if not libp2p_is_tested(
        f"yamux tuning not applied (tested: {', '.join(TESTED_LIBP2P_VERSIONS)}), bulk "
        "transfers will be slower"
    ):
        return False
    from libp2p.stream_muxer.yamux import yamux as Y

    Y.YamuxStream = _make_stream_class(Y)
    Y.RTT_MEASURE_INTERVAL = RTT_MEASURE_INTERVAL_S  # (read by `_measure_rtt_loop` each time)
    from libp2p.io.trio import TrioTCPStream
    from libp2p.network.stream.net_stream import NetStream

    _buffer_tcp_reads(TrioTCPStream)
    _prompt_locks(Y.YamuxStream, "window_lock", "close_lock")
    _prompt_locks(Y.Yamux, "streams_lock", "_write_lock", "stream_backlog_semaphore")
    _prompt_locks(NetStream, "_state_lock")
    _prompt_locks(TrioTCPStream, "read_lock", "write_lock")
    _applied = True
    return True


def is_applied() -> bool:
    """Whether `apply()` installed the tuned stream class in this process."""
    return _applied


async def grow_receive_window(stream: Any, size_bytes: int) -> None:
    """Grant the peer `size_bytes` of receive window on a yamux-backed libp2p stream.

    Sends one WINDOW_UPDATE for the difference and raises the stream's auto-tune target so
    later reads keep the window that large. No-op on other muxers or if already that large.
    """
    muxed = getattr(stream, "muxed_stream", stream)
    if not all(
        hasattr(muxed, a)
        for a in ("window_lock", "recv_window", "target_recv_window", "send_window_update")
    ):
        return  # not yamux (e.g. mplex): nothing to grant
    async with muxed.window_lock:
        delta = size_bytes - muxed.recv_window
        if delta <= 0:
            return
        muxed.recv_window += delta
        muxed.target_recv_window = max(muxed.target_recv_window, size_bytes)
    await muxed.send_window_update(delta)
