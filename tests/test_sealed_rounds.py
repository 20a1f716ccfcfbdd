"""Sealed updates on real nodes (libp2p hosts, the contracts on the embedded EVM, a
stand-in trainer): who can open a round's deltas, a re-draw's fresh wraps, and bad input
(a tampered ciphertext, a wrap that does not open, an author silent at the re-draw).

Spec: protocol/spec/sealing.md. The task manifests here use the default `[privacy]`
(sealed = true)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.chain.devnet import DEFAULT_GAS_FUNDS
from p2pfl.chain.providers import fund
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Update
from p2pfl.core.sealed import delta_aad, wrap_for
from p2pfl.core.sortition import commit_quorum, committee_for, round_seed
from p2pfl.core.tensors import decode_tensors, encode_tensors
from p2pfl.errors import P2PFLError
from p2pfl.node import Node
from p2pfl.node.roundlog import Behaviour
from p2pfl.sealing import SealError, open_sealed, unwrap_key
from tests.realnodes import make_nodes, open_task, start_hosts, trainer_for

N_NODES = 5
COMMITTEE = 3
SIZE = 256
GENESIS = encode_tensors({"w": np.zeros(SIZE, np.float32)})


def recording_trainer(produced: dict[int, list[bytes]]) -> Any:
    """`trainer_for`, remembering each node's deltas as canonical bytes."""

    def make(index: int) -> Any:
        inner = trainer_for(index)

        async def train(base: Any, cfg: Any, seed: int) -> Any:
            result = await inner(base, cfg, seed)
            produced.setdefault(index, []).append(encode_tensors(result.delta))
            return result

        return train

    return make


async def run(nodes: list[Node], nets: list[Any], rounds: int, limit_s: float = 200) -> None:
    with trio.fail_after(limit_s):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.run, rounds)


def sealed_bytes(update: Update, nets: list[Any], nodes: list[Node]) -> bytes:
    """Every byte of an update's delta as any peer gets it: inline, or the blocks the
    author's block store serves to whoever asks."""
    if update.inline:
        return update.inline
    author = next(i for i, n in enumerate(nodes) if n.address == update.signer)
    return bytes(nets[author].store.read_blob(CID.parse(update.delta)))


def try_open(update: Update, sealed: bytes, identity: NodeIdentity) -> bytes | None:
    """What `identity` recovers of the delta with every wrap the update carries (None)."""
    aad = delta_aad(update.task, update.round, update.signer)
    for _, wrap in update.wraps:
        try:
            key = unwrap_key(wrap, identity.x25519_private_key)
        except SealError:
            continue
        return open_sealed(key, sealed, aad)
    return None


async def test_only_the_committee_opens_a_rounds_deltas(tmp_path: Path) -> None:
    """A member opens every delta wrapped to it; a registered node off the committee and a
    peer with no stake, holding every byte of every delta, recover none of them."""
    produced: dict[int, list[bytes]] = {}
    devnet, identities, manifest = open_task(
        GENESIS, n_nodes=N_NODES, committee=COMMITTEE, rounds=2, seed=11, name="sealed-privacy"
    )
    assert manifest.sealed and manifest.round_config().sealed
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, GENESIS)
        nodes = make_nodes(
            devnet, identities, nets, manifest, tmp_path, trainer=recording_trainer(produced)
        )
        await run(nodes, nets, 2)
        updates = [u for u in nodes[0].intake.updates.values() if u.round == 1]
        assert len({u.signer for u in updates}) == N_NODES
        outsider = NodeIdentity.from_seed(b"no stake")
        index = {n.address: i for i, n in enumerate(nodes)}
        opened = closed = 0
        for u in updates:
            sealed = sealed_bytes(u, nets, nodes)
            assert blob_cid(sealed) == CID.parse(u.delta)  # the CID names the ciphertext
            with pytest.raises(P2PFLError):
                decode_tensors(sealed)  # not tensors: sealed bytes
            author = index[u.signer]
            assert all(plain not in sealed for plain in produced[author])
            assert try_open(u, sealed, outsider) is None
            for i, ident in enumerate(identities):
                if i == author:
                    continue
                if wrap_for(u.wraps, ident.address) is None:  # registered, not a member
                    assert try_open(u, sealed, ident) is None
                    closed += 1
                else:  # a member of the round's committee
                    plain = try_open(u, sealed, ident)
                    assert plain in produced[author]
                    opened += 1
        assert opened and closed
        for u in updates:  # and the ciphertext opens only in its own (task, round, author)
            i = index[u.signer]
            member = next(m for m, _ in u.wraps if m != u.signer)
            key = unwrap_key(
                wrap_for(u.wraps, member), identities[index[member]].x25519_private_key
            )  # type: ignore[arg-type]
            sealed = sealed_bytes(u, nets, nodes)
            with pytest.raises(SealError):
                open_sealed(key, sealed, delta_aad(u.task, u.round + 1, u.signer))
            other = nodes[(i + 1) % N_NODES].address
            with pytest.raises(SealError):
                open_sealed(key, sealed, delta_aad(u.task, u.round, other))
    assert devnet.admin.task_info(manifest.task_id).last_round >= 2


async def test_bad_ciphertext_and_bad_wraps_are_rejected_and_the_round_commits(
    tmp_path: Path,
) -> None:
    """Node 1 publishes a tampered ciphertext (its CID names the tampered bytes, so only
    opening fails), node 2 wraps its key in boxes that do not open: every member rejects
    both with their reasons, counts them, leaves them out, and the rounds commit."""

    def flip(data: bytes) -> bytes:
        return data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]

    behaviours = {1: Behaviour(tamper_sealed=flip), 2: Behaviour(tamper_wrap=lambda m, w: flip(w))}
    devnet, identities, manifest = open_task(
        GENESIS, n_nodes=N_NODES, committee=COMMITTEE, rounds=2, seed=12, name="sealed-bad",
        quorum_percent=60,
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, GENESIS)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)
        for i, behaviour in behaviours.items():
            nodes[i].behaviour = behaviour
        await run(nodes, nets, 2)
    chain = devnet.admin
    assert chain.task_info(manifest.task_id).last_round >= 2
    bad = {nodes[1].address, nodes[2].address}
    counted = {"undecryptable": 0, "unwrap-failed": 0}
    for node in nodes:
        for reason in counted:
            counted[reason] += node.machine.counters[f"rejected:{reason}"]
            assert (
                node.counters.get(f"rejected-{reason}", 0)
                == (node.machine.counters[f"rejected:{reason}"])
            )
        if node.address in bad:
            continue  # a bad author's own computations include its own update (it can open it)
        for entry in node.rounds.values():
            assert not bad & set(entry.included), (entry.round, entry.included)
    assert counted["undecryptable"] >= 1 and counted["unwrap-failed"] >= 1, counted
    for event in chain.commits(0, chain.block_number(), manifest.task_id):
        proposal = next(
            p
            for (r, _, root), p in nodes[0].intake.proposals.items()
            if r == event.round and root == event.contributors_root
        )
        assert not bad & {a for a, _ in proposal.included}


def stalled_first_draw(
    devnet: Any, manifest: Any
) -> tuple[Any, list[bytes], list[bytes], set[bytes], bytes]:
    """A variant of `manifest` (another name, short timers) whose round 1 draws a full
    committee at attempt 0 and, at attempt 1, one with a member off attempt 0: with all but
    one of attempt 0's members silent, attempt 0 cannot certify and is re-drawn after
    `redraw_timeout_s`; every update's own wraps (for attempt 0's committee) miss the
    newcomer, so the round commits only through Rewraps. Also returns the silent nodes and
    a live author off attempt 1 whose wraps miss the newcomer (the one to withhold its
    Rewrap). (A draw below quorum is no re-draw any more: it is left at once, and the round
    opens at the next draw, which the updates' wraps cover.)"""
    _, stakes = devnet.admin.committee_stakes(manifest.task_id)
    base = CID.parse(manifest.initial_model).digest
    quorum = commit_quorum(COMMITTEE, 0)
    timers = {"collect_deadline_s": 4.0, "view_timeout_s": 3.0, "redraw_timeout_s": 12.0}
    for i in range(5000):
        variant = replace(manifest, name=f"sealed-redraw-{i}", **timers)
        first, second = (
            committee_for(round_seed(variant.task_id, 1, base, a), stakes, COMMITTEE)
            for a in (0, 1)
        )
        if len(first) < quorum or len(second) < quorum:
            continue
        silent = set(first[: len(first) - quorum + 1])  # quorum - 1 of attempt 0 answer
        newcomers = set(second) - set(first)
        quiet = [a for a in stakes if a not in silent and a not in second and newcomers - {a}]
        if not set(second) & silent and newcomers and quiet:
            return variant, first, second, silent, quiet[0]
    raise AssertionError("no task name gives a first draw that stalls")


async def test_a_redraw_commits_with_fresh_wraps_and_leaves_a_silent_author_out(
    tmp_path: Path,
) -> None:
    """Round 1's first draw cannot certify (its members but one are silent), so it is
    re-drawn: authors send Rewraps for the new committee (never the delta again) and the
    round commits at attempt 1. An author that sends no Rewrap (node `quiet`) is left out
    of that attempt without stalling it."""
    devnet, identities, manifest = open_task(
        GENESIS, n_nodes=N_NODES, committee=COMMITTEE, rounds=1, seed=13, name="sealed-redraw",
        quorum_percent=60,
    )  # fmt: skip
    manifest, first, second, silent, quiet_address = stalled_first_draw(devnet, manifest)
    reward = manifest.reward_per_round_wei
    fund(devnet.w3, devnet.admin.address, reward + DEFAULT_GAS_FUNDS)
    devnet.admin.create_task(
        manifest.task_id, CID.parse(manifest.initial_model).digest, COMMITTEE, 0, reward,
        reward, redraw_delay_s=0,
    )  # fmt: skip
    live = [ident for ident in identities if ident.address not in silent]
    addresses = [ident.address for ident in live]
    quiet = addresses.index(quiet_address)
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, live, tmp_path, GENESIS)
        nodes = make_nodes(devnet, live, nets, manifest, tmp_path)
        nodes[quiet].behaviour = Behaviour(withhold_rewraps=True)
        await run(nodes, nets, 1)
    chain = devnet.admin
    (event,) = chain.commits(0, chain.block_number(), manifest.task_id)[:1]
    assert event.attempt >= 1
    proposal = next(
        p
        for (r, _, root), p in nodes[0].intake.proposals.items()
        if r == 1 and root == event.contributors_root
    )
    included = {a for a, _ in proposal.included}
    assert quiet_address not in included
    assert len(included) >= 2, included  # others' updates made it through their Rewraps
    assert sum(n.machine.counters["rewraps-sent"] for n in nodes) >= 1
    assert sum(n.machine.counters["rewraps-accepted"] for n in nodes) >= 1
    assert nodes[quiet].counters.get("rewrap-without-key", 0) == 0


async def test_a_node_registered_with_an_unusable_x25519_key_stalls_nothing(
    tmp_path: Path,
) -> None:
    """Node 4 re-registers the all-zero X25519 key (a low-order point: nothing can be
    wrapped to it). Authors wrap to the rest of the committee, the committee does without
    node 4 as without a silent member, and the rounds commit (it used to crash authors)."""
    from p2pfl.chain.client import ChainClient
    from p2pfl.core.identity import peer_id_bytes_from_public

    devnet, identities, manifest = open_task(
        GENESIS, n_nodes=N_NODES, committee=COMMITTEE, rounds=2, seed=14, name="sealed-zero-key",
        quorum_percent=60,
    )  # fmt: skip
    broken = identities[4]
    ChainClient(devnet.w3, devnet.deployment, broken.private_key).update_keys(
        peer_id_bytes_from_public(broken.compressed_public_key), bytes(32)
    )
    assert devnet.admin.node_info(broken.address).enc_key == bytes(32)
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, GENESIS)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)
        await run(nodes, nets, 2)
    assert devnet.admin.task_info(manifest.task_id).last_round >= 2
    assert all(n.counters.get("unsealable-registered-key", 0) >= 1 for n in nodes)
    for node in nodes:
        for u in node.intake.updates.values():
            assert broken.address not in {m for m, _ in u.wraps} or u.signer == broken.address
