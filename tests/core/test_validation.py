"""Stateless gossip checks: verdicts and reasons."""

from dataclasses import replace

from p2pfl.core.cid import blob_cid
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.messages import Commit, Vote
from p2pfl.core.signing import Domain
from p2pfl.core.validation import ACCEPT, IGNORE, REJECT, check_gossip

DOMAIN = Domain(chain_id=1, contract=b"\x01" * 20)
TASK = b"\x02" * 32
ALICE, BOB = NodeIdentity.from_seed(b"a"), NodeIdentity.from_seed(b"b")
BASE, RESULT = blob_cid(b"base").to_bytes(), blob_cid(b"result").to_bytes()


def vote(who, round_=3):
    v = Vote(
        task=TASK,
        round=round_,
        attempt=0,
        view=0,
        base=BASE,
        result=RESULT,
        contributors_root=b"\x00" * 32,
        signer=who.address,
    )
    return v.signed(who.private_key, DOMAIN)


def check(data, **kw):
    return check_gossip(data, task=TASK, domain=DOMAIN, **kw)


def test_round_window():
    assert check(vote(ALICE, 3).encode(), current_round=3).action == ACCEPT
    assert check(vote(ALICE, 2).encode(), current_round=3).action == ACCEPT  # last votes in flight
    assert check(vote(ALICE, 2).encode(), current_round=3).round == 2  # (what pulls select by)
    assert check(vote(ALICE, 4).encode(), current_round=3).action == ACCEPT  # faster nodes
    old = check(vote(ALICE, 1).encode(), current_round=3)
    assert (old.action, old.reason, old.blame) == (REJECT, "replayed-round", False)
    assert check(vote(ALICE, 5).encode(), current_round=3).action == IGNORE


def test_registration_and_certificates():
    unregistered = check(vote(ALICE).encode(), registered={BOB.address})
    assert (unregistered.reason, unregistered.blame) == ("unregistered-signer", True)
    cert = Commit(
        task=TASK,
        round=3,
        attempt=0,
        view=0,
        base=BASE,
        result=RESULT,
        contributors_root=b"\x00" * 32,
        votes=tuple(sorted((v.signer, v.signature) for v in (vote(ALICE), vote(BOB)))),
    )
    assert check(cert.encode(), registered={ALICE.address, BOB.address}).action == ACCEPT
    assert check(cert.encode(), registered={ALICE.address}).reason == "unregistered-signer"
    forged = replace(cert, result=BASE)
    assert check(forged.encode()).reason == "bad-signature"
    assert check(b"\xc1").reason == "malformed"
