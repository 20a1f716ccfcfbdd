"""Access to a private task's models, on-chain: fetching our task model key from the wraps
posted for us, and posting wraps for those entitled to one (buyers and registered nodes).

Blocking, like `ChainClient`; a node runs `KeyGranter.step` in a worker thread. The
contract rules are in protocol/spec/chain.md ("Private tasks").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.public import PrivateKey

from p2pfl.chain.client import ChainClient
from p2pfl.errors import ChainError
from p2pfl.task_access import (
    AccessError,
    ModelKey,
    load_model_key,
    open_wraps,
    save_model_key,
    wrap_for,
)

log = logging.getLogger("p2pfl.chain")

# A key holder that is not the task's creator posts a wrap only for a recipient still
# without one this long after it first saw it missing: the creator's node serves buyers
# first, the others cover for it when it is offline (and do not all pay for one wrap).
DEFAULT_FALLBACK_S = 30.0
# Every this many passes (about a minute at the node's 5 s) the granter re-reads every
# registered node's X25519 key: a node that exited needs no wrap, one that changed its key
# needs a new one. In between, only new nodes are read (one call each).
DEFAULT_REFRESH_PASSES = 12


def fetch_model_key(client: ChainClient, task: bytes, x25519: PrivateKey) -> ModelKey:
    """Our task model key, from the wraps posted for `client`'s account (AccessError with
    the reasons when none opens and matches the ledger's digest; ChainError for a public
    task)."""
    digest = client.model_key_digest(task)
    if digest == bytes(32):
        raise ChainError(f"task 0x{task.hex()} is not private: its models are not sealed")
    key = open_wraps(client.key_wraps(task, client.address), x25519, task, digest)
    return ModelKey(task, key)


def model_key_for(
    client: ChainClient, task: bytes, x25519: PrivateKey, data_dir: str | Path
) -> ModelKey | None:
    """The task model key a node or a buyer uses: None for a public task; else the one kept
    in `data_dir`, or else one unwrapped from the chain (then kept). AccessError while no
    wrap for us opens (not bought yet, or no key holder has posted ours yet)."""
    digest = client.model_key_digest(task)
    if digest == bytes(32):
        return None
    kept = load_model_key(data_dir, task, digest)
    if kept is not None:
        return kept
    key = ModelKey(task, open_wraps(client.key_wraps(task, client.address), x25519, task, digest))
    save_model_key(data_dir, key)
    return key


def kept_model_key(client: ChainClient, task: bytes, data_dir: str | Path) -> ModelKey | None:
    """The task model key kept in a node's (or a buyer's) data directory; None for a public
    task; AccessError saying what to do when a private task's key is not there."""
    digest = client.model_key_digest(task)
    if digest == bytes(32):
        return None
    key = load_model_key(data_dir, task, digest)
    if key is None:
        raise AccessError(
            f"task 0x{task.hex()} is private and {data_dir} holds no model key: use the data "
            "directory of a node of the task, or fetch the key into it with `p2pfl model get "
            "--manifest` (after `p2pfl buy-access`)"
        )
    return key


def entitled(client: ChainClient, task: bytes) -> dict[bytes, bytes]:
    """Who is entitled to the task model key, with the X25519 key to wrap it to: every
    buyer (the key it paid for) and every active registered node (its registered key)."""
    out: dict[bytes, bytes] = {}
    for address in client.registered_nodes():
        info = client.node_info(address)
        if info.active and info.enc_key != bytes(32):
            out[address] = info.enc_key
    for buyer, enc_key, _block in client.access_purchases(task):
        out[buyer] = enc_key  # a registered node that also bought: the key it paid for
    return out


@dataclass
class KeyGranter:
    """Posts the task model key, wrapped, for whoever is entitled and has no wrap yet.

    `step()` does one pass (blocking): learns who is entitled (`entitled`'s rule) and which
    (recipient, key) pairs already have a wrap, and posts the missing ones -- at once when
    we created the task, after `fallback_s` otherwise. A wrap someone else posted counts:
    replays and duplicates are never posted by us. Passes are incremental so that every
    node of a task can run one every few seconds: purchases and wraps are read from the
    block after the previous pass, nodes' keys only for new nodes, and every
    `refresh_passes` passes in full (a node that exited, or changed its X25519 key).
    """

    client: ChainClient
    model_key: ModelKey
    is_creator: bool
    fallback_s: float = DEFAULT_FALLBACK_S
    clock: Callable[[], float] = field(default=lambda: 0.0)
    count: Callable[[str], None] = field(default=lambda name: None)
    refresh_passes: int = DEFAULT_REFRESH_PASSES
    _missing_since: dict[tuple[bytes, bytes], float] = field(default_factory=dict)
    _node_keys: dict[bytes, bytes | None] = field(default_factory=dict)  # None: not entitled
    _buyers: dict[bytes, bytes] = field(default_factory=dict)
    _have: set[tuple[bytes, bytes]] = field(default_factory=set)
    _from_block: int = 0
    _passes: int = 0

    def _entitled(self) -> dict[bytes, bytes]:
        task = self.model_key.task
        if self._passes % self.refresh_passes == 0:
            self._node_keys.clear()
        self._passes += 1
        for address in self.client.registered_nodes():
            if address not in self._node_keys:
                info = self.client.node_info(address)
                usable = info.active and info.enc_key != bytes(32)
                self._node_keys[address] = info.enc_key if usable else None
        head = self.client.block_number()
        for buyer, enc_key, _block in self.client.access_purchases(task, self._from_block):
            self._buyers[buyer] = enc_key
        self._have.update(
            (w.recipient, w.enc_key) for w in self.client.key_wraps(task, None, self._from_block)
        )
        self._from_block = head + 1  # later events read twice are the same set members
        out = {a: k for a, k in self._node_keys.items() if k is not None}
        out.update(self._buyers)  # a registered node that also bought: the key it paid for
        return out

    def step(self) -> list[bytes]:
        """Post the wraps due now; returns the recipients we posted for."""
        task = self.model_key.task
        wanted = self._entitled()
        now = self.clock()
        posted: list[bytes] = []
        for recipient, enc_key in wanted.items():
            pair = (recipient, enc_key)
            if pair in self._have:
                self._missing_since.pop(pair, None)
                continue
            since = self._missing_since.setdefault(pair, now)
            if not self.is_creator and now - since < self.fallback_s:
                continue
            wrap = wrap_for(self.model_key.key, enc_key)
            try:
                self.client.post_key_wrap(task, recipient, enc_key, wrap)
            except ChainError as exc:  # e.g. the node exited meanwhile: try next pass
                self.count("key-wrap-failed")
                log.info("key wrap for 0x%s not posted: %s", recipient.hex(), exc)
                continue
            self.count("key-wraps-posted")
            posted.append(recipient)
            self._have.add(pair)
            self._missing_since.pop(pair, None)
        return posted


__all__ = [
    "AccessError",
    "KeyGranter",
    "entitled",
    "fetch_model_key",
    "kept_model_key",
    "model_key_for",
]
