"""The pure audit checks: votes against a committee, and the round record's codec."""

from __future__ import annotations

import pytest

from p2pfl.core.audit import Commit, check_votes, decode_round_record, encode_round_record
from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Proposal, Update
from p2pfl.core.signing import Domain, address_of, sign_digest, vote_digest
from p2pfl.errors import InvalidMessage

DOMAIN = Domain(31337, bytes(range(20)))
KEYS = [bytes([i + 1]) * 32 for i in range(4)]
MEMBERS = [address_of(k) for k in KEYS]
TASK = b"\x07" * 32


def commit_signed_by(keys: list[bytes], extra: bytes = b"") -> Commit:
    fields = (TASK, 3, 1, 0, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    digest = vote_digest(DOMAIN, *fields)
    return Commit(*fields, b"".join(sign_digest(k, digest) for k in keys) + extra)


def test_votes_by_a_quorum_of_members_hold() -> None:
    assert check_votes(DOMAIN, commit_signed_by(KEYS[:3]), MEMBERS, 3) == []


def test_votes_by_outsiders_twice_or_too_few_fail_with_their_reason() -> None:
    reasons = check_votes(DOMAIN, commit_signed_by(KEYS[:3]), MEMBERS[:2], 2)
    assert reasons == [f"vote by 0x{MEMBERS[2].hex()}, who is not on the round's committee"]
    reasons = check_votes(DOMAIN, commit_signed_by([KEYS[0], KEYS[0], KEYS[1]]), MEMBERS, 3)
    assert f"0x{MEMBERS[0].hex()} voted twice" in reasons
    assert reasons[-1] == "2 valid votes by committee members, below the quorum of 3"
    reasons = check_votes(DOMAIN, commit_signed_by(KEYS[:3], bytes(65)), MEMBERS, 3)
    assert reasons[0].startswith("vote 3 is not a valid signature")
    assert check_votes(DOMAIN, commit_signed_by(KEYS[:3], b"x"), MEMBERS, 3) == [
        "votes are 196 bytes, not a multiple of 65"
    ]


def test_the_round_record_round_trips_and_refuses_anything_else() -> None:
    cid = blob_cid(b"delta").to_bytes()
    update = Update(TASK, 1, cid, cid, 5, 0.5, b"", MEMBERS[0])
    proposal = Proposal(
        TASK, 1, 0, 0, update.base, ((MEMBERS[0], update.delta),), (), "fedavg",
        update.base, bytes(32), MEMBERS[1],
    )  # fmt: skip
    update = update.signed(KEYS[0], DOMAIN)  # type: ignore[assignment]
    proposal = proposal.signed(KEYS[1], DOMAIN)  # type: ignore[assignment]
    assert decode_round_record(encode_round_record(proposal, [update])) == (proposal, [update])
    for bad in (b"", b"\x90", b"\xc0", encode_round_record(proposal, [update])[:-3]):
        with pytest.raises(InvalidMessage):
            decode_round_record(bad)
    import msgpack

    with pytest.raises(InvalidMessage, match="a proposal, then updates"):
        decode_round_record(msgpack.packb([update.encode()]))
