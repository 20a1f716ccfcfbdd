"""Skip re-verifying a peer's unchanged signed peer record on every pubsub RPC (py-libp2p 0.8.1).

py-libp2p's gossipsub attaches the sender's signed peer record (a libp2p Envelope, ~200 bytes
with a secp256k1 signature) to every RPC it sends, and on receipt `maybe_consume_signed_record`
parses it, checks the signature and stores it in the certified address book — for every RPC,
although a peer's record only changes when its addresses do. In a 10-node simulation that
was ~7% of all CPU.

Fix: remember, per sending peer, the exact record bytes last accepted from it. An RPC carrying
those same bytes from that same peer is accepted without verifying again: the same bytes give
the same signature check and the same (already stored) record, so the outcome is identical. Any
other bytes go through the library's full check. Memory: one record per connected peer ever
seen, bounded by `MAX_REMEMBERED_PEERS` (cleared when full).

Version-guarded like `yamux_tuning`: the names are replaced only in the modules that imported
the function, only for a libp2p version this was read against.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

from p2pfl.net.yamux_tuning import TESTED_LIBP2P_VERSIONS

log = logging.getLogger(__name__)

# Peers whose last record is remembered; past this the memory is cleared (cost: one
# re-verification per peer), so a flood of fresh identities cannot grow it.
MAX_REMEMBERED_PEERS = 4096
# Modules of py-libp2p 0.8.1 that call `maybe_consume_signed_record` by its imported name.
_CALLERS = ("libp2p.pubsub.pubsub", "libp2p.pubsub.gossipsub", "libp2p.pubsub.floodsub")

_applied = False


def make_cached(check: Any) -> Any:
    """Wrap `maybe_consume_signed_record(rpc, host, peer_id) -> bool` with the per-peer memo."""
    accepted: dict[Any, bytes] = {}  # peer ID -> record bytes last accepted from it

    def maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        if accepted.get(peer_id) == record:
            return True
        ok = bool(check(msg, host, peer_id))
        if ok:
            if len(accepted) >= MAX_REMEMBERED_PEERS:
                accepted.clear()
            accepted[peer_id] = record
        return ok

    return maybe_consume_signed_record


def apply() -> bool:
    """Install the memoised record check once per process; False if this libp2p is untested."""
    global _applied
    if _applied:
        return True
    if version("libp2p") not in TESTED_LIBP2P_VERSIONS:
        log.warning(
            "libp2p %s untested: signed peer records are verified on every RPC", version("libp2p")
        )
        return False
    import importlib

    from libp2p.pubsub import utils

    cached = make_cached(utils.maybe_consume_signed_record)
    for name in _CALLERS:
        module = importlib.import_module(name)
        if (
            getattr(module, "maybe_consume_signed_record", None)
            is utils.maybe_consume_signed_record
        ):
            module.maybe_consume_signed_record = cached  # type: ignore[attr-defined]
    _applied = True
    return True
