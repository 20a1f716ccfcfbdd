"""Follow RoundCommitted events: never miss one, never deliver one twice.

The follower remembers the last block it fully processed and, per task, the last
round it delivered. `poll()` reads logs from the next block up to the chain head
(minus `confirmations`), in chunks, and returns new commits in chain order. A round
is committed at most once per task and rounds increase, so an event whose round is
not above the task's last delivered round is a replay and is dropped -- this makes
delivery exactly-once even if the block cursor is replayed after a crash. A commit is
acknowledged only after the consumer handled it (`follow`), and state is persisted
atomically (write + rename) to `state_path` when given. Transport errors leave the
cursor where it was; the next poll retries from there (a new HTTP connection each
request, so a restarted node is picked up).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import trio

from p2pfl.chain.client import RoundCommitted
from p2pfl.chain.trio_client import run_chain
from p2pfl.errors import ChainError
from p2pfl.files import write_text_atomic

log = logging.getLogger(__name__)

# Blocks per eth_getLogs request: public RPC providers commonly cap ranges at 1-10k.
DEFAULT_CHUNK_BLOCKS = 2_000
DEFAULT_POLL_INTERVAL_S = 1.0
MAX_ERROR_BACKOFF_S = 30.0


class CommitSource(Protocol):
    """What the follower reads from a chain (`ChainClient` and the node's `ChainPort` have it)."""

    def block_number(self) -> int: ...

    def commits(
        self, from_block: int, to_block: int, task: bytes | None = None
    ) -> list[RoundCommitted]: ...


# SharedCommitReads: how long one head read answers every follower of the process, and how
# many getLogs answers it keeps (the followers ask the same ranges, one poll apart).
SHARED_HEAD_FRESH_S = 0.25
SHARED_RANGES_KEPT = 64


class SharedCommitReads:
    """The chain head and the commit logs read once for every follower of one process on
    one RPC endpoint (a simulator's shard: 50 nodes polling the same chain for the same
    task would make 100 JSON-RPC calls a second, each with web3's Python around it, for
    one answer). A head read serves the followers for `fresh_s`; a getLogs answer for a
    range serves every follower that asks for that range. Reads run in worker threads
    (`run_chain`), so one lock orders them: followers that ask while a read is under way
    wait for it and take its answer. Only for a chain without reorgs below the
    confirmation depth (a local devnet), as every follower assumes."""

    def __init__(self, fresh_s: float = SHARED_HEAD_FRESH_S) -> None:
        self.fresh_s = fresh_s
        self.reads = 0  # RPC calls made (head reads and getLogs), for tests and reports
        self._lock = threading.Lock()
        self._head: tuple[float, int] | None = None  # (monotonic time read, block)
        self._ranges: dict[tuple[int, int, bytes | None], list[RoundCommitted]] = {}

    def source(self, client: CommitSource) -> CommitSource:
        """`client` as a follower's commit source whose reads go through this cache."""
        return _SharedSource(self, client)

    def cached_head(self) -> int | None:
        """The head if a read younger than `fresh_s` holds it, else None: no call, no lock
        (the pair is replaced whole), so a follower on the event loop asks this before it
        hops to a worker thread for a poll that would find nothing new."""
        held = self._head
        if held is not None and time.monotonic() - held[0] < self.fresh_s:
            return held[1]
        return None

    def block_number(self, client: CommitSource) -> int:
        with self._lock:
            now = time.monotonic()
            if self._head is not None and now - self._head[0] < self.fresh_s:
                return self._head[1]
            head = client.block_number()
            self.reads += 1
            self._head = (time.monotonic(), head)
            return head

    def commits(
        self, client: CommitSource, from_block: int, to_block: int, task: bytes | None
    ) -> list[RoundCommitted]:
        key = (from_block, to_block, task)
        with self._lock:
            if key not in self._ranges:
                self._ranges[key] = client.commits(from_block, to_block, task)
                self.reads += 1
                while len(self._ranges) > SHARED_RANGES_KEPT:
                    del self._ranges[next(iter(self._ranges))]
            return list(self._ranges[key])


class _SharedSource:
    """One follower's view of a SharedCommitReads (a CommitSource)."""

    def __init__(self, shared: SharedCommitReads, client: CommitSource) -> None:
        self.shared = shared
        self.client = client

    def block_number(self) -> int:
        return self.shared.block_number(self.client)

    def cached_head(self) -> int | None:
        return self.shared.cached_head()

    def commits(
        self, from_block: int, to_block: int, task: bytes | None = None
    ) -> list[RoundCommitted]:
        return self.shared.commits(self.client, from_block, to_block, task)


class CommitFollower:
    def __init__(
        self,
        client: CommitSource,
        task: bytes | None = None,
        start_block: int = 0,
        state_path: str | Path | None = None,
        confirmations: int = 0,
        chunk_blocks: int = DEFAULT_CHUNK_BLOCKS,
    ) -> None:
        self.client = client
        self.task = task
        self.confirmations = confirmations
        self.chunk_blocks = chunk_blocks
        self.state_path = Path(state_path) if state_path else None
        self.last_block = start_block - 1
        self.last_round: dict[bytes, int] = {}
        if self.state_path and self.state_path.exists():
            self._load()

    def _load(self) -> None:
        assert self.state_path is not None
        try:
            state = json.loads(self.state_path.read_text())
            self.last_block = int(state["last_block"])
            self.last_round = {bytes.fromhex(k): int(v) for k, v in state["last_round"].items()}
        except (OSError, KeyError, ValueError) as exc:
            raise ChainError(
                f"follower state {self.state_path} unreadable ({exc}); delete it to rescan"
            ) from exc

    def _save(self) -> None:
        if self.state_path is None:
            return
        state = {
            "last_block": self.last_block,
            "last_round": {k.hex(): v for k, v in self.last_round.items()},
        }
        write_text_atomic(self.state_path, json.dumps(state))

    def fetch(self) -> tuple[list[RoundCommitted], int]:
        """(new commits in chain order, block they reach up to) -- reads only, no state change."""
        head = self.client.block_number() - self.confirmations
        out: list[RoundCommitted] = []
        seen = dict(self.last_round)
        start = self.last_block + 1
        while start <= head:
            end = min(head, start + self.chunk_blocks - 1)
            for ev in self.client.commits(start, end, self.task):
                if ev.round > seen.get(ev.task, 0):
                    seen[ev.task] = ev.round
                    out.append(ev)
            start = end + 1
        return out, max(head, self.last_block)

    def ack(self, event: RoundCommitted) -> None:
        """Mark one commit as handled (persisted): it will never be delivered again."""
        if event.round > self.last_round.get(event.task, 0):
            self.last_round[event.task] = event.round
            self._save()

    def advance(self, block: int) -> None:
        """Mark every block up to `block` as scanned."""
        if block > self.last_block:
            self.last_block = block
            self._save()

    def poll(self) -> list[RoundCommitted]:
        """New commits since the last poll, acknowledged on return (blocking)."""
        events, head = self.fetch()
        for ev in events:
            self.ack(ev)
        self.advance(head)
        return events

    async def follow(
        self,
        on_commit: Callable[[RoundCommitted], Awaitable[None]],
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        """Poll until cancelled; each commit is acknowledged only after `on_commit`
        returns, so a crash in between re-delivers it, and nothing is delivered twice.

        A source that shares its reads (`SharedCommitReads`) is asked for its cached head
        first: a poll that would find no new block then costs no worker-thread hop (50
        nodes of a shard polling twice a second: 100 hops a second, ~4% of the shard's
        event loop with the thread starts, for the same cached answer)."""
        backoff = poll_interval_s
        cached_head = getattr(self.client, "cached_head", None)
        while True:
            if cached_head is not None:
                head = cached_head()
                if head is not None and head - self.confirmations <= self.last_block:
                    await trio.sleep(poll_interval_s)
                    continue
            try:
                events, head = await run_chain(self.client, self.fetch)
                backoff = poll_interval_s
            except ChainError as exc:
                log.warning("commit follower: %s; retrying in %.1f s", exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_ERROR_BACKOFF_S)
                continue
            for ev in events:
                await on_commit(ev)
                self.ack(ev)
            self.advance(head)
            await trio.sleep(poll_interval_s)
