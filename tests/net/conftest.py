"""Helpers for network tests: nodes on 127.0.0.1 only, mDNS off, fresh data dirs."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pfl.core.identity import NodeIdentity
from p2pfl.net import NetConfig, NodeNet, ValidationResult, open_node_host


def key(i: int) -> bytes:
    """A fixed private key per test node (NodeIdentity.from_seed keeps them valid)."""
    return NodeIdentity.from_seed(bytes([i + 1]) * 32).private_key


@asynccontextmanager
async def nodes(
    tmp_path: Path, count: int, *, links: Sequence[tuple[int, int]] | None = None, **cfg: Any
) -> AsyncIterator[list[NodeNet]]:
    """Start `count` nodes; `links` (default: star around node 0) are dialled after start."""
    async with AsyncExitStack() as stack:
        out: list[NodeNet] = []
        for i in range(count):
            config = NetConfig(
                data_dir=tmp_path / f"n{i}", listen="/ip4/127.0.0.1/tcp/0", mdns=False, **cfg
            )
            out.append(await stack.enter_async_context(open_node_host(config, key(i))))
        for a, b in links if links is not None else [(i, 0) for i in range(1, count)]:
            await out[a].connect(out[b].listen_addrs[0])
        yield out


def accept_all(topic: str, data: bytes, peer: str) -> ValidationResult:
    return ValidationResult.accept()


async def collect(channel: Any, count: int, timeout_s: float) -> list[bytes]:
    """Receive up to `count` messages within `timeout_s`."""
    got: list[bytes] = []
    with trio.move_on_after(timeout_s):
        while len(got) < count:
            got.append((await channel.receive()).data)
    return got


def rejections_of(metrics: dict[str, Any], reason: str) -> dict[str, int]:
    """The rejections counted for `reason`, by path ('gossip' or 'sync').

    A message reaches a peer by gossip or by the next sync round, whichever comes first: which
    path rejects it is a race, so tests check the count over both paths."""
    by_reason = metrics["rejections_by_reason"]
    return {
        via: by_reason[f"{via}-{reason}"]
        for via in ("gossip", "sync")
        if f"{via}-{reason}" in by_reason
    }


@dataclass
class HashCount:
    """sha256 work done since the fixture started (or since `reset`)."""

    calls: int = 0  # hash objects created
    bytes: int = 0  # bytes fed to them

    def reset(self) -> None:
        self.calls = self.bytes = 0


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> HashCount:
    """Count every `hashlib.sha256` call and the bytes hashed (p2pfl looks the function up
    through the module at call time, so patching `hashlib.sha256` sees them all)."""
    count = HashCount()
    real = hashlib.sha256

    class Counting:
        def __init__(self, data: Any = b"") -> None:
            count.calls += 1
            count.bytes += len(data)
            self.inner = real(data)

        def update(self, data: Any) -> None:
            count.bytes += len(data)
            self.inner.update(data)

        def digest(self) -> bytes:
            return self.inner.digest()

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", Counting)
    return count
