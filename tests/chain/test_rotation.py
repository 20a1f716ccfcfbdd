"""Key rotation (NodeRegistry.rotateKey): stake and reputation move to a new key from the
rotation's block on; earlier snapshots keep the old key; evidence against the old key
still reaches the stake; a rotation signed by the wrong key is refused."""

from __future__ import annotations

from eth_keys import keys

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import fund, mine_blocks

from .conftest import GENESIS, TASK, assert_reverts, commit, first_draw
from .test_ledger import _equivocate

NEW_KEY = b"\x5a" * 32
PEER = b"\x00\x25" + bytes(range(37))
ENC = b"\x77" * 32


def _address(key: bytes) -> bytes:
    return keys.PrivateKey(key).public_key.to_canonical_address()


def test_rotation_moves_stake_and_reputation_from_its_block_on(net: DevNet) -> None:
    old = net.clients[2]
    stake, reputation = old.node_info().stake, old.node_info().reputation
    total = net.admin.total_stake_at(net.w3.eth.block_number)
    before = net.w3.eth.block_number
    tx = old.rotate_key(NEW_KEY, PEER, ENC)
    new = _address(NEW_KEY)
    assert tx.event("KeyRotated")["successor"].lower() == "0x" + new.hex()
    info = old.node_info(new)
    assert (info.stake, info.reputation, info.peer_id, info.enc_key, info.active) == (
        stake,
        reputation,
        PEER,
        ENC,
        True,
    )
    assert old.node_info().stake == 0 and not old.node_info().banned
    # Snapshots before the rotation still hold the old key; after, the new one.
    assert old.stake_at(old.address, before) == stake and old.stake_at(new, before) == 0
    assert old.stake_at(new, tx.block_number) == stake
    assert old.stake_at(old.address, tx.block_number) == 0
    assert net.admin.total_stake_at(tx.block_number) == total  # nothing minted or lost
    assert new in old.registered_nodes()
    assert old.successor_of(old.address) == new and old.current_key(old.address) == new
    assert old.successor_of(new) is None and old.current_key(new) == new
    # The new key acts as the node: it tops up and could rotate again.
    client = ChainClient(net.w3, net.deployment, NEW_KEY)
    fund(net.w3, client.account.address, 10 * ETHER)
    client.top_up(ETHER)
    assert client.node_info().stake == stake + ETHER


def test_round_drawn_before_the_rotation_commits_with_the_old_key(net: DevNet) -> None:
    _, committee = first_draw(net, TASK, 1, GENESIS, 4)
    member = next(c for c in net.clients if c.address == committee[0])
    member.rotate_key(NEW_KEY, PEER, ENC)
    mine_blocks(net.w3, 1)
    # Round 1 reads stakes at the task's snapshot block, before the rotation: the old
    # key's vote still counts, and the old key signs it.
    r = commit(net, 1, GENESIS)
    assert r.tx.event("RoundCommitted")["signers"] == 4
    assert member.address in r.committee
    # Round 2's snapshot is round 1's commit block, after the rotation: the old key has
    # no stake there, the new key has it.
    block = r.tx.block_number
    assert member.stake_at(member.address, block) == 0
    assert member.stake_at(_address(NEW_KEY), block) > 0


def test_evidence_against_the_old_key_slashes_the_successor(net: DevNet) -> None:
    cheat, reporter = net.clients[3], net.clients[4]
    stake = cheat.node_info().stake
    cheat.rotate_key(NEW_KEY, PEER, ENC)
    tx = reporter.submit_equivocation(*_equivocate(net, 3))  # signed by the old key
    assert tx.event("EquivocationProven")["slashed"] == stake // 2
    new = cheat.node_info(_address(NEW_KEY))
    assert (new.stake, new.banned, new.reputation) == (0, True, 1000 - 500)
    assert new.unbonding == stake - stake // 2
    assert cheat.node_info().banned  # the retired key is banned too


def test_bad_rotations_are_refused_with_a_reason(net: DevNet) -> None:
    old, other = net.clients[5], net.clients[6]
    new = _address(NEW_KEY)
    # A possession proof by another key (here: the old key signs for the new address).
    proof = keys.PrivateKey(net.keys[5]).sign_msg_hash(old.rotation_digest(new)).to_bytes()
    fn = old.registry.functions.rotateKey(old.w3.to_checksum_address(new), PEER, ENC, proof)
    assert_reverts(lambda: old._tx("rotateKey", fn), "BadPossessionProof")
    assert_reverts(lambda: old.rotate_key(net.keys[6], PEER, ENC), "BadRotation")  # known key
    assert_reverts(lambda: old.rotate_key(net.keys[5], PEER, ENC), "BadRotation")  # itself
    assert_reverts(lambda: old.rotate_key(NEW_KEY, b"", ENC), "BadPeerId")
    outsider = ChainClient(net.w3, net.deployment, b"\x31" * 32)
    fund(net.w3, outsider.account.address, ETHER)
    assert_reverts(lambda: outsider.rotate_key(NEW_KEY, PEER, ENC), "NotActive")
    # A retired key cannot register again (it answers through its successor).
    old.rotate_key(NEW_KEY, PEER, ENC)
    assert_reverts(lambda: old.register(PEER, ENC, ETHER), "BadRotation")
    assert other.node_info().active
