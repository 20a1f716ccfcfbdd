"""RoundLedger: tasks, commits (with core-signed votes), rewards, rejections, evidence."""

from __future__ import annotations

import pytest
from eth_account import Account

from p2pfl.chain.client import ChainClient
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import fund, increase_time, mine_blocks
from p2pfl.core.merkle import ROLE_CONTRIBUTOR, ROLE_REJECTED, RewardLeaf, RewardTree, build_leaves
from p2pfl.core.signing import (
    SECP256K1_N,
    Kind,
    address_of,
    sign_digest,
    statement_digest,
    vote_body,
)
from p2pfl.errors import ChainError

from .conftest import ESCROW, GENESIS, REWARD, TASK, K, assert_reverts, commit, first_draw, pairs

# ---------------------------------------------------------------- tasks


def test_create_task_records_parameters_and_escrow(net: DevNet) -> None:
    info = net.admin.task_info(TASK)
    assert (info.last_round, info.last_result, info.committee_size) == (0, GENESIS, K)
    assert info.quorum == 4  # ceil(2*6/3), raised from the 0 we passed
    assert info.escrow == ESCROW and info.reward_per_round == REWARD
    assert info.creator == net.clients[0].address


def test_create_task_reverts(net: DevNet) -> None:
    c = net.clients[1]
    assert_reverts(lambda: c.create_task(TASK, GENESIS, K, 0, 1, 0), "TaskExists")
    other = b"\x01" * 32
    assert_reverts(lambda: c.create_task(other, GENESIS, 0, 0, 1, 0), "BadTaskParams")
    assert_reverts(lambda: c.create_task(other, GENESIS, 3, 4, 1, 0), "BadTaskParams")  # quorum > k


def test_fund_task(net: DevNet) -> None:
    tx = net.clients[2].fund_task(TASK, ETHER)
    assert tx.event("TaskFunded")["escrow"] == ESCROW + ETHER
    assert_reverts(lambda: net.clients[2].fund_task(b"\x02" * 32, 1), "UnknownTask")


# ---------------------------------------------------------------- commit


def test_commit_two_rounds_end_to_end(net: DevNet) -> None:
    r1 = commit(net, 1, GENESIS)
    ev = r1.tx.event("RoundCommitted")
    assert (ev["round"], ev["base"], ev["result"], ev["reward"]) == (1, GENESIS, r1.result, REWARD)
    info = net.admin.task_info(TASK)
    assert (info.last_round, info.last_result) == (1, r1.result)
    assert info.escrow == ESCROW - REWARD
    assert net.admin.round_root(TASK, 1) == r1.tree.root
    assert info.snapshot_block == r1.tx.block_number - 1
    r2 = commit(net, 2, r1.result)
    assert net.admin.task_info(TASK).last_result == r2.result


def test_committee_stakes_after_a_followed_commit_need_no_snapshot_reads(
    net: DevNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit the follower read names the next round's snapshot (the block before
    it): the same block and stakes as the ledger's `snapshotBlock` answer, read without it,
    and a snapshot nobody holds yet is read once however many clients ask at once."""
    import threading

    from p2pfl.chain import client as client_module

    r1 = commit(net, 1, GENESIS)
    (event,) = net.admin.commits(0, net.admin.block_number(), TASK)
    assert event.round == 1 and event.block_hash == bytes(
        net.admin.w3.eth.get_block(r1.tx.block_number)["hash"]
    )
    asked = net.clients[3].committee_stakes(TASK)
    assert asked[0] == event.block_number - 1
    calls: list[str] = []
    sender = net.clients[2]._sender
    real_call = sender.call
    monkeypatch.setattr(sender, "call", lambda what, fn: calls.append(what) or real_call(what, fn))
    assert net.clients[2].committee_stakes(TASK, event) == asked
    assert "snapshotBlock" not in calls and "block hash" not in calls

    monkeypatch.setattr(client_module, "_SNAPSHOT_CACHE", {})
    reads: list[int] = []
    real_stakes_at = ChainClient.stakes_at

    def stakes_at(self: ChainClient, block: int, addresses: object = None) -> object:
        reads.append(block)
        return real_stakes_at(self, block)

    monkeypatch.setattr(ChainClient, "stakes_at", stakes_at)
    answers: list[object] = []
    threads = [
        threading.Thread(target=lambda c=c: answers.append(c.committee_stakes(TASK, event)))
        for c in net.clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [asked] * len(net.clients) and reads == [event.block_number - 1]


def test_commit_wrong_round(net: DevNet) -> None:
    err = _try_commit(net, rnd=2)
    assert err.revert_reason == "WrongRound(expected=1, got=2)"


def test_commit_wrong_base(net: DevNet) -> None:
    err = _try_commit(net, base=b"\x99" * 32)
    assert err.revert_reason.startswith("WrongBase(expected=0x" + GENESIS.hex())


def test_commit_unknown_task(net: DevNet) -> None:
    assert _try_commit(net, task=b"\x55" * 32).revert_reason.startswith("UnknownTask")


def test_commit_too_few_signatures(net: DevNet) -> None:
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    sigs = pairs(
        committee[:3],
        net.votes(committee[:3], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, b"\x00" * 32),
    )
    _advance_for(net, attempt)
    c = net.clients[0]
    assert_reverts(
        lambda: c.commit_round(TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, b"\x00" * 32, sigs),
        "TooFewSignatures(got=3, quorum=4)",
    )


def test_commit_non_member_signer(net: DevNet) -> None:
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    outsider = next(c.address for c in net.clients if c.address not in committee)
    signers = committee[:3] + [outsider]
    sigs = pairs(
        signers, net.votes(signers, TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, b"\x00" * 32)
    )
    _advance_for(net, attempt)
    err = assert_reverts(
        lambda: net.clients[0].commit_round(
            TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, b"\x00" * 32, sigs
        ),
        "NotEligible",
    )
    assert Account.from_key(net.key_of(outsider)).address in err.revert_reason


def test_commit_unregistered_signer(net: DevNet) -> None:
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    stranger = b"\x77" * 32
    digest = statement_digest(
        net.deployment.domain(),
        Kind.VOTE,
        TASK,
        1,
        attempt,
        0,
        vote_body(GENESIS, b"\x03" * 32, bytes(32)),
    )
    sigs = pairs(
        committee[:3],
        net.votes(committee[:3], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32)),
    )
    sigs.append((address_of(stranger), sign_digest(stranger, digest)))
    _advance_for(net, attempt)
    assert_reverts(
        lambda: net.clients[0].commit_round(
            TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32), sigs
        ),
        "NotEligible",
    )


def test_commit_duplicate_signer_rejected_by_contract(net: DevNet) -> None:
    """The client de-duplicates; the contract must refuse duplicates on its own."""
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    votes = net.admin.sort_votes(
        TASK,
        1,
        attempt,
        0,
        GENESIS,
        b"\x03" * 32,
        bytes(32),
        net.votes(committee[:3], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32)),
    )
    packed = b"".join(v.signature for v in votes + votes[-1:])  # last signer twice
    _advance_for(net, attempt)
    assert_reverts(lambda: _raw_commit(net, attempt, packed), "SignersNotAscending(index=3)")
    unsorted = b"".join(v.signature for v in [votes[1], votes[0], votes[2], votes[2]])
    assert_reverts(lambda: _raw_commit(net, attempt, unsorted), "SignersNotAscending(index=1)")


def test_commit_rejects_high_s_and_malformed_signatures(net: DevNet) -> None:
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    votes = net.admin.sort_votes(
        TASK,
        1,
        attempt,
        0,
        GENESIS,
        b"\x03" * 32,
        bytes(32),
        net.votes(committee[:4], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32)),
    )
    sig = votes[0].signature
    s = int.from_bytes(sig[32:64], "big")
    high_s = (
        sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])
    )  # same signer, malleated
    _advance_for(net, attempt)
    packed = high_s + b"".join(v.signature for v in votes[1:])
    assert_reverts(lambda: _raw_commit(net, attempt, packed), "BadSignature(index=0)")
    assert_reverts(
        lambda: _raw_commit(net, attempt, packed[:-1]), "BadSignature"
    )  # not a multiple of 65


def test_redraw_attempt_needs_the_delay(net: DevNet) -> None:
    attempt = next(a for a in range(1, 100) if len(net.committee(TASK, 1, GENESIS, a, K)) >= 4)
    committee = net.committee(TASK, 1, GENESIS, attempt, K)
    sigs = pairs(
        committee[:4],
        net.votes(committee[:4], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32)),
    )
    c = net.clients[0]

    def commit_it():
        return c.commit_round(TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32), sigs)

    assert_reverts(commit_it, f"RedrawTooEarly(attempt={attempt}")
    increase_time(net.w3, 60 * attempt + 1)
    assert commit_it().event("RoundCommitted")["attempt"] == attempt


def test_stake_snapshot_ignores_registrations_after_it(net: DevNet) -> None:
    """A node registering after the snapshot block is not eligible for the next round."""
    key = b"\x66" * 32
    late = ChainClient(net.w3, net.deployment, key)
    fund(net.w3, late.account.address, 1000 * ETHER)
    late.register(
        b"\x00\x25" + bytes(37), bytes(32), 500 * ETHER
    )  # huge stake: k*stake >= total now
    snap = net.admin.snapshot_block(TASK)
    assert net.admin.stake_at(late.address, snap) == 0
    net.keys.append(key)
    try:
        attempt, committee = first_draw(net, TASK, 1, GENESIS, 3)
        assert late.address not in committee
        signers = committee[:3] + [late.address]
        sigs = pairs(
            signers, net.votes(signers, TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32))
        )
        _advance_for(net, attempt)
        assert_reverts(
            lambda: late.commit_round(TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32), sigs),
            "NotEligible",
        )
    finally:
        net.keys.pop()


def test_exited_node_keeps_snapshot_eligibility(net: DevNet) -> None:
    _, committee = first_draw(net, TASK, 1, GENESIS, 4)
    leaver = next(c for c in net.clients if c.address == committee[0])
    leaver.exit()
    assert leaver.node_info().active is False
    r = commit(net, 1, GENESIS)  # still uses the snapshot before the exit
    assert r.tx.event("RoundCommitted")["signers"] == 4


# ---------------------------------------------------------------- rewards


def test_claims_pay_once_and_respect_the_round_reward(net: DevNet) -> None:
    r = commit(net, 1, GENESIS)
    tree = r.tree
    total = 0
    for leaf in tree.leaves:
        if leaf.role == ROLE_REJECTED:
            continue
        before = net.admin.balance(leaf.account)
        tx = net.admin.claim(
            TASK, 1, leaf, tree.proof(leaf.index)
        )  # anyone may send; paid to account
        assert tx.event("RewardClaimed")["amount"] == leaf.amount
        assert net.admin.balance(leaf.account) == before + leaf.amount
        total += leaf.amount
        assert_reverts(
            lambda leaf=leaf: net.admin.claim(TASK, 1, leaf, tree.proof(leaf.index)),
            "AlreadyClaimed",
        )
    assert total <= REWARD
    assert net.admin.round_remaining(TASK, 1) == REWARD - total


def test_claim_bad_proof_role_and_unknown_round(net: DevNet) -> None:
    r = commit(net, 1, GENESIS)
    leaf = r.tree.leaves[0]
    forged = RewardLeaf(leaf.index, leaf.role, leaf.account, leaf.amount + 1)
    assert_reverts(lambda: net.admin.claim(TASK, 1, forged, r.tree.proof(0)), "BadProof")
    assert_reverts(lambda: net.admin.claim(TASK, 2, leaf, r.tree.proof(0)), "UnknownRound")
    rej = RewardLeaf(0, ROLE_REJECTED, leaf.account, 0)
    assert_reverts(lambda: net.admin.claim(TASK, 1, rej, []), "BadRole")


def test_over_withdrawal_is_impossible(net: DevNet) -> None:
    """A committee that puts more than the round reward in its tree cannot drain the escrow."""
    a, b = net.clients[0].address, net.clients[1].address
    leaves = build_leaves([(ROLE_CONTRIBUTOR, a, REWARD), (ROLE_CONTRIBUTOR, b, REWARD)])
    tree = RewardTree.build(leaves)
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    _advance_for(net, attempt)
    sigs = pairs(
        committee[:4],
        net.votes(committee[:4], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, tree.root),
    )
    net.admin.commit_round(TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, tree.root, sigs)
    net.admin.claim(TASK, 1, tree.leaves[0], tree.proof(0))
    assert_reverts(
        lambda: net.admin.claim(TASK, 1, tree.leaves[1], tree.proof(1)),
        f"ExceedsRoundReward(amount={REWARD}, remaining=0)",
    )


def test_round_reward_is_capped_by_escrow(net: DevNet) -> None:
    small = b"\x33" * 32
    net.clients[0].create_task(small, GENESIS, K, 0, REWARD, REWARD // 2, 0)
    r = commit(net, 1, GENESIS, task=small)
    assert r.tx.event("RoundCommitted")["reward"] == REWARD // 2
    assert net.admin.task_info(small).escrow == 0
    r2 = commit(net, 2, r.result, task=small)
    assert r2.tx.event("RoundCommitted")["reward"] == 0


def test_many_leaves_use_the_overflow_bitmap(net: DevNet) -> None:
    accounts = [i.to_bytes(20, "big") for i in range(1, 301)]
    leaves = build_leaves([(ROLE_CONTRIBUTOR, acc, 1) for acc in accounts])
    tree = RewardTree.build(leaves)
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    _advance_for(net, attempt)
    sigs = pairs(
        committee[:4],
        net.votes(committee[:4], TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, tree.root),
    )
    net.admin.commit_round(TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, tree.root, sigs)
    for index in (0, 143, 144, 299):
        net.admin.claim(TASK, 1, tree.leaves[index], tree.proof(index))
        assert net.admin.is_consumed(TASK, 1, index)
        assert_reverts(
            lambda i=index: net.admin.claim(TASK, 1, tree.leaves[i], tree.proof(i)),
            f"AlreadyClaimed(index={index})",
        )
    assert not net.admin.is_consumed(TASK, 1, 145)


def test_report_rejected_lowers_reputation_once(net: DevNet) -> None:
    victim = net.clients[5].address
    r = commit(net, 1, GENESIS, rejected=(victim,))
    leaf = next(lf for lf in r.tree.leaves if lf.role == ROLE_REJECTED)
    before = net.admin.node_info(victim).reputation
    tx = net.clients[0].report_rejected(TASK, 1, leaf, r.tree.proof(leaf.index))
    assert tx.event("RejectionRecorded")["node"] == net.clients[5].account.address
    assert net.admin.node_info(victim).reputation == before - 10
    assert_reverts(
        lambda: net.clients[0].report_rejected(TASK, 1, leaf, r.tree.proof(leaf.index)),
        "AlreadyClaimed",
    )
    other = next(lf for lf in r.tree.leaves if lf.role != ROLE_REJECTED)
    assert_reverts(
        lambda: net.clients[0].report_rejected(
            TASK, 1, RewardLeaf(other.index, 3, other.account, 0), r.tree.proof(other.index)
        ),
        "BadProof",
    )


# ---------------------------------------------------------------- evidence


def _equivocate(net: DevNet, who: int, kind: int = Kind.VOTE, rnd: int = 1) -> tuple:
    dom = net.deployment.domain()
    bodies = (b"\xaa" * 32, b"\xbb" * 32)
    sigs = [
        sign_digest(net.keys[who], statement_digest(dom, kind, TASK, rnd, 0, 0, b)) for b in bodies
    ]
    return (kind, TASK, rnd, 0, 0, bodies[0], sigs[0], bodies[1], sigs[1])


def test_equivocation_slashes_pays_reporter_and_rejects_replay(net: DevNet) -> None:
    cheat, reporter = net.clients[3], net.clients[4]
    stake = cheat.node_info().stake
    total_before = net.admin.registry.functions.totalStake().call()
    rep_before = reporter.balance()
    tx = reporter.submit_equivocation(*_equivocate(net, 3))
    slashed = tx.event("EquivocationProven")["slashed"]
    assert slashed == stake // 2
    info = cheat.node_info()
    # ejected and banned: what survives the slash unbonds (still slashable), stake is 0
    assert (info.stake, info.active, info.banned) == (0, False, True)
    assert info.unbonding == stake - slashed and info.reputation == 1000 - 500
    assert net.admin.registry.functions.totalStake().call() == total_before - stake
    assert cheat.stake_at(cheat.address, net.w3.eth.block_number) == 0
    gas_cost = tx.gas_used * net.w3.eth.get_transaction(tx.tx_hash)["gasPrice"]
    assert reporter.balance() == rep_before + slashed // 5 - gas_cost
    assert_reverts(
        lambda: reporter.submit_equivocation(*_equivocate(net, 3)), "EvidenceAlreadyUsed"
    )
    # a third body for the same (signer, kind, task, round, attempt, view) is the same offence
    args = list(_equivocate(net, 3))
    args[5] = b"\xcc" * 32
    args[6] = sign_digest(
        net.keys[3], statement_digest(net.deployment.domain(), Kind.VOTE, TASK, 1, 0, 0, args[5])
    )
    assert_reverts(lambda: reporter.submit_equivocation(*args), "EvidenceAlreadyUsed")


def test_equivocation_reaches_unbonding_stake(net: DevNet) -> None:
    cheat = net.clients[3]
    stake = cheat.node_info().stake
    cheat.exit()
    net.clients[4].submit_equivocation(*_equivocate(net, 3, Kind.UPDATE))
    info = cheat.node_info()
    assert info.unbonding == stake - stake // 2 and info.stake == 0 and info.banned
    mine_blocks(net.w3, 6)
    before = cheat.balance()
    tx = cheat.withdraw()
    gas_cost = tx.gas_used * net.w3.eth.get_transaction(tx.tx_hash)["gasPrice"]
    assert cheat.balance() == before + stake - stake // 2 - gas_cost
    # a banned address never comes back
    assert_reverts(lambda: cheat.register(b"\x01" * 38, b"\x02" * 32, stake), "Banned")


def test_second_offence_slashes_the_unbonding_stake(net: DevNet) -> None:
    cheat, reporter = net.clients[3], net.clients[4]
    stake = cheat.node_info().stake
    reporter.submit_equivocation(*_equivocate(net, 3, Kind.UPDATE))
    tx = reporter.submit_equivocation(*_equivocate(net, 3, Kind.VOTE))
    left = stake - stake // 2
    assert tx.event("EquivocationProven")["slashed"] == left // 2
    info = cheat.node_info()
    assert (info.stake, info.unbonding, info.banned) == (0, left - left // 2, True)


def test_equivocation_reverts(net: DevNet) -> None:
    rep = net.clients[4]
    same = list(_equivocate(net, 3))
    same[7], same[8] = same[5], same[6]
    assert_reverts(lambda: rep.submit_equivocation(*same), "SameBody")
    mixed = list(_equivocate(net, 3))
    mixed[8] = _equivocate(net, 2)[8]
    assert_reverts(lambda: rep.submit_equivocation(*mixed), "DifferentSigners")
    hb = list(_equivocate(net, 3, kind=Kind.HEARTBEAT))
    assert_reverts(lambda: rep.submit_equivocation(*hb), "BadKind(kind=5)")
    bad = list(_equivocate(net, 3))
    bad[6] = bad[6][:64] + b"\x00"
    assert_reverts(lambda: rep.submit_equivocation(*bad), "BadSignature(index=0)")
    stranger = b"\x55" * 32
    dom = net.deployment.domain()
    s1 = sign_digest(stranger, statement_digest(dom, Kind.VOTE, TASK, 1, 0, 0, b"\x01" * 32))
    s2 = sign_digest(stranger, statement_digest(dom, Kind.VOTE, TASK, 1, 0, 0, b"\x02" * 32))
    assert_reverts(
        lambda: rep.submit_equivocation(
            Kind.VOTE, TASK, 1, 0, 0, b"\x01" * 32, s1, b"\x02" * 32, s2
        ),
        "NotRegistered",
    )


# ---------------------------------------------------------------- helpers


def _advance_for(net: DevNet, attempt: int) -> None:
    if attempt:
        increase_time(net.w3, attempt * 60 + 1)


def _try_commit(net: DevNet, rnd: int = 1, base: bytes = GENESIS, task: bytes = TASK) -> ChainError:
    attempt, committee = first_draw(net, TASK, 1, GENESIS, 4)
    _advance_for(net, attempt)
    sigs = pairs(
        committee[:4],
        net.votes(committee[:4], task, rnd, attempt, 0, base, b"\x03" * 32, bytes(32)),
    )
    with pytest.raises(ChainError) as info:
        net.clients[0].commit_round(task, rnd, attempt, 0, base, b"\x03" * 32, bytes(32), sigs)
    assert info.value.revert_reason is not None
    return info.value


def _raw_commit(net: DevNet, attempt: int, packed: bytes):
    fn = net.admin.ledger.functions.commitRound(
        TASK, 1, attempt, 0, GENESIS, b"\x03" * 32, bytes(32), packed
    )
    return net.admin._tx("commitRound", fn)
