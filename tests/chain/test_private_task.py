"""Private tasks on the RoundLedger: buying access, the payment in reward claims, key wraps.

A real EVM (eth-tester); the outsider is a funded account that never registered.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from nacl.public import PrivateKey

from p2pfl.chain.access import KeyGranter, fetch_model_key
from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund
from p2pfl.core.merkle import ROLE_REJECTED
from p2pfl.sealing import SealError, new_key
from p2pfl.task_access import (
    AccessError,
    ModelKey,
    key_digest,
    open_model,
    open_wraps,
    seal_model,
    wrap_for,
)

from .conftest import GENESIS, N_NODES, REWARD, TASK, K, assert_reverts, commit

PRIVATE = bytes.fromhex("5e" * 32)
PRICE = REWARD  # one purchase pays one round's reward
MODEL_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def module_net() -> DevNet:
    """The shared devnet with a public task (TASK) and a private one with no escrow: every
    wei its rounds pay comes from purchases."""
    net = DevNet.create(embedded_web3(), N_NODES, unbonding_blocks=5)
    net.clients[0].create_task(TASK, GENESIS, K, 0, REWARD, 10 * ETHER, redraw_delay_s=60)
    net.clients[0].create_private_task(
        PRIVATE, GENESIS, K, 0, REWARD, 0, 60, PRICE, key_digest(PRIVATE, MODEL_KEY)
    )
    return net


def outsider(net: DevNet, seed: int = 1) -> ChainClient:
    """A funded account that is not a registered node."""
    acct = Account.create(f"outsider {seed}")
    fund(net.w3, acct.address, 10 * ETHER)
    return ChainClient(net.w3, net.deployment, acct.key)


# ---------------------------------------------------------------- creation


def test_private_task_records_price_and_key_digest(net: DevNet) -> None:
    assert net.admin.access_price(PRIVATE) == PRICE
    assert net.admin.model_key_digest(PRIVATE) == key_digest(PRIVATE, MODEL_KEY)
    assert net.admin.access_price(TASK) == 0  # public
    assert net.admin.task_info(PRIVATE).escrow == 0


def test_create_private_task_reverts(net: DevNet) -> None:
    c = net.clients[1]
    other = b"\x01" * 32
    digest = key_digest(other, MODEL_KEY)
    assert_reverts(
        lambda: c.create_private_task(other, GENESIS, K, 0, 1, 0, 60, 0, digest), "BadAccessParams"
    )
    assert_reverts(
        lambda: c.create_private_task(other, GENESIS, K, 0, 1, 0, 60, 1, bytes(32)),
        "BadAccessParams",
    )
    assert_reverts(
        lambda: c.create_private_task(PRIVATE, GENESIS, K, 0, 1, 0, 60, 1, digest), "TaskExists"
    )


# ---------------------------------------------------------------- buying


def test_buy_access_at_the_price_funds_the_escrow(net: DevNet) -> None:
    buyer, x25519 = outsider(net), PrivateKey.generate()
    before = buyer.balance()
    tx = buyer.buy_access(PRIVATE, bytes(x25519.public_key), PRICE)
    ev = tx.event("AccessBought")
    assert (ev["price"], ev["escrow"], bytes(ev["encKey"])) == (
        PRICE,
        PRICE,
        bytes(x25519.public_key),
    )
    assert net.admin.task_info(PRIVATE).escrow == PRICE
    assert net.admin.buyer_key(PRIVATE, buyer.address) == bytes(x25519.public_key)
    assert before - buyer.balance() >= PRICE
    assert net.admin.access_purchases(PRIVATE) == [
        (buyer.address, bytes(x25519.public_key), tx.block_number)
    ]


def test_buy_access_reverts_with_its_reason(net: DevNet) -> None:
    buyer, enc = outsider(net), bytes(PrivateKey.generate().public_key)
    assert_reverts(lambda: buyer.buy_access(TASK, enc, PRICE), "NotPrivate(task=0x" + TASK.hex())
    assert_reverts(lambda: buyer.buy_access(b"\x09" * 32, enc, PRICE), "UnknownTask")
    assert_reverts(
        lambda: buyer.buy_access(PRIVATE, enc, PRICE - 1),
        f"WrongPrice(price={PRICE}, sent={PRICE - 1})",
    )
    assert_reverts(
        lambda: buyer.buy_access(PRIVATE, enc, PRICE + 1),
        f"WrongPrice(price={PRICE}, sent={PRICE + 1})",
    )
    assert_reverts(lambda: buyer.buy_access(PRIVATE, bytes(32), PRICE), "BadEncKey")
    buyer.buy_access(PRIVATE, enc, PRICE)
    assert_reverts(lambda: buyer.buy_access(PRIVATE, enc, PRICE), "AlreadyBought")
    assert net.admin.task_info(PRIVATE).escrow == PRICE  # only the one purchase counted


def test_the_payment_shows_up_in_the_contributors_claims(net: DevNet) -> None:
    """No escrow: round 1 pays nothing. A purchase funds the escrow, and round 2's reward
    tree (the existing claim path) pays it out to contributors and committee."""
    r1 = commit(net, 1, GENESIS, task=PRIVATE)
    assert r1.tx.event("RoundCommitted")["reward"] == 0
    outsider(net).buy_access(PRIVATE, bytes(PrivateKey.generate().public_key), PRICE)
    r2 = commit(net, 2, r1.result, task=PRIVATE)
    assert r2.tx.event("RoundCommitted")["reward"] == PRICE
    paid = 0
    for leaf in r2.tree.leaves:
        if leaf.role == ROLE_REJECTED:
            continue
        before = net.admin.balance(leaf.account)
        net.admin.claim(PRIVATE, 2, leaf, r2.tree.proof(leaf.index))
        assert net.admin.balance(leaf.account) == before + leaf.amount
        paid += leaf.amount
    assert 0 < paid <= PRICE
    assert net.admin.round_remaining(PRIVATE, 2) == PRICE - paid


# ---------------------------------------------------------------- key wraps


def test_outsider_decrypts_only_after_paying_and_a_wrap(net: DevNet) -> None:
    blob = b"safetensors bytes of a committed model" * 10
    sealed = seal_model(MODEL_KEY, blob)
    assert blob not in sealed and seal_model(MODEL_KEY, blob) == sealed  # deterministic
    buyer, x25519 = outsider(net), PrivateKey.generate()
    digest = net.admin.model_key_digest(PRIVATE)
    # Without paying: no wrap for it, and no key opens the model.
    with pytest.raises(AccessError, match="no key wrap posted"):
        open_wraps(net.admin.key_wraps(PRIVATE, buyer.address), x25519, PRIVATE, digest)
    with pytest.raises(SealError):
        open_model(new_key(), sealed)
    # A wrap before paying is refused: the outsider is entitled to nothing.
    enc = bytes(x25519.public_key)
    assert_reverts(
        lambda: net.clients[0].post_key_wrap(PRIVATE, buyer.address, enc, wrap_for(MODEL_KEY, enc)),
        "NotEntitled",
    )
    buyer.buy_access(PRIVATE, enc, PRICE)
    tx = net.clients[3].post_key_wrap(PRIVATE, buyer.address, enc, wrap_for(MODEL_KEY, enc))
    assert tx.event("KeyWrapped")["poster"].lower() == "0x" + net.clients[3].address.hex()
    key = open_wraps(net.admin.key_wraps(PRIVATE, buyer.address), x25519, PRIVATE, digest)
    assert open_model(key, sealed) == blob
    with pytest.raises(SealError):  # a flipped byte
        open_model(key, sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_wrap_reverts_with_its_reason(net: DevNet) -> None:
    buyer, x25519 = outsider(net), PrivateKey.generate()
    enc = bytes(x25519.public_key)
    buyer.buy_access(PRIVATE, enc, PRICE)
    wrap = wrap_for(MODEL_KEY, enc)
    creator = net.clients[0]
    other = bytes(PrivateKey.generate().public_key)
    err = assert_reverts(
        lambda: creator.post_key_wrap(PRIVATE, buyer.address, other, wrap), "WrongRecipientKey"
    )
    assert other.hex() in err.revert_reason
    assert_reverts(lambda: creator.post_key_wrap(PRIVATE, buyer.address, enc, wrap[:79]), "BadWrap")
    assert_reverts(lambda: creator.post_key_wrap(TASK, buyer.address, enc, wrap), "NotPrivate")
    # Only the creator or a staked node posts: a buyer cannot hand the key on on-chain.
    stranger = outsider(net, 2)
    assert_reverts(
        lambda: stranger.post_key_wrap(PRIVATE, buyer.address, enc, wrap), "NotKeyHolder"
    )


def test_registered_participants_receive_wraps_to_their_registered_key(net: DevNet) -> None:
    node = net.clients[5]
    registered = net.admin.node_info(node.address).enc_key
    net.clients[0].post_key_wrap(PRIVATE, node.address, registered, wrap_for(MODEL_KEY, registered))
    assert_reverts(
        lambda: net.clients[0].post_key_wrap(
            PRIVATE, node.address, b"\x07" * 32, wrap_for(MODEL_KEY, b"\x07" * 32)
        ),
        "WrongRecipientKey",
    )
    (posted,) = net.admin.key_wraps(PRIVATE, node.address)
    assert (posted.recipient, posted.enc_key) == (node.address, registered)


def test_replayed_and_foreign_wraps_are_harmless(net: DevNet) -> None:
    buyer, x25519 = outsider(net), PrivateKey.generate()
    enc = bytes(x25519.public_key)
    buyer.buy_access(PRIVATE, enc, PRICE)
    digest = net.admin.model_key_digest(PRIVATE)
    # A lying key holder posts another task's key, then garbage; then the right wrap twice.
    net.clients[1].post_key_wrap(PRIVATE, buyer.address, enc, wrap_for(new_key(), enc))
    net.clients[2].post_key_wrap(PRIVATE, buyer.address, enc, bytes(80))
    with pytest.raises(AccessError) as info:
        open_wraps(net.admin.key_wraps(PRIVATE, buyer.address), x25519, PRIVATE, digest)
    assert "not this task's" in str(info.value) and "does not open" in str(info.value)
    good = wrap_for(MODEL_KEY, enc)
    net.clients[0].post_key_wrap(PRIVATE, buyer.address, enc, good)
    net.clients[0].post_key_wrap(PRIVATE, buyer.address, enc, good)  # replay: accepted, inert
    wraps = net.admin.key_wraps(PRIVATE, buyer.address)
    assert len(wraps) == 4
    assert open_wraps(wraps, x25519, PRIVATE, digest) == MODEL_KEY
    assert net.admin.task_info(PRIVATE).escrow == PRICE  # wraps move no money


def test_granter_creator_posts_at_once_others_after_the_fallback(net: DevNet) -> None:
    buyer, x25519 = outsider(net), PrivateKey.generate()
    enc = bytes(x25519.public_key)
    buyer.buy_access(PRIVATE, enc, PRICE)
    model_key = ModelKey(PRIVATE, MODEL_KEY)
    now = [0.0]
    other = KeyGranter(
        net.clients[4], model_key, is_creator=False, fallback_s=10, clock=lambda: now[0]
    )
    assert other.step() == []  # the creator's node should serve first
    creator = KeyGranter(net.clients[0], model_key, is_creator=True)
    posted = creator.step()
    # Everyone entitled: each registered node (its registered key) and the buyer.
    assert sorted(posted) == sorted([*(c.address for c in net.clients), buyer.address])
    assert creator.step() == []  # nothing missing any more: never a second wrap
    now[0] = 11.0
    assert other.step() == []  # the creator covered it
    key = open_wraps(net.admin.key_wraps(PRIVATE, buyer.address), x25519, PRIVATE, model_key.digest)
    assert key == MODEL_KEY


def test_a_non_creator_covers_for_an_offline_creator(net: DevNet) -> None:
    buyer, x25519 = outsider(net), PrivateKey.generate()
    buyer.buy_access(PRIVATE, bytes(x25519.public_key), PRICE)
    now = [0.0]
    other = KeyGranter(
        net.clients[4], ModelKey(PRIVATE, MODEL_KEY), is_creator=False, fallback_s=10,
        clock=lambda: now[0],
    )  # fmt: skip
    assert other.step() == []
    now[0] = 10.0
    assert buyer.address in other.step()
    assert fetch_model_key(buyer, PRIVATE, x25519).key == MODEL_KEY


def test_a_node_that_changes_its_key_gets_a_new_wrap_at_the_next_refresh(net: DevNet) -> None:
    granter = KeyGranter(net.clients[0], ModelKey(PRIVATE, MODEL_KEY), True, refresh_passes=2)
    assert len(granter.step()) == N_NODES  # pass 1 (a full read): every registered node
    node = net.clients[5]
    new_enc = bytes(PrivateKey.generate().public_key)
    node.update_keys(net.admin.node_info(node.address).peer_id, new_enc)
    assert granter.step() == []  # pass 2: known nodes' keys are not re-read
    assert granter.step() == [node.address]  # pass 3: a full read
    assert [w.enc_key for w in net.admin.key_wraps(PRIVATE, node.address)][-1] == new_enc
