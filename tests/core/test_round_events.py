"""`event_for`: the one mapping from a gossiped message to the machine's event."""

from __future__ import annotations

from p2pfl.core import round_events as ev
from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Commit, Heartbeat, Proposal, Update, Vote

TASK = b"\x07" * 32
CID_A = blob_cid(b"a").to_bytes()
ME, OTHER = b"\x01" * 20, b"\x02" * 20


def test_each_round_message_becomes_its_event_with_the_verified_signer():
    u = Update(TASK, 1, CID_A, CID_A, 10, 1.0, b"", ME)
    p = Proposal(TASK, 1, 0, 0, CID_A, (), (), "fedavg", CID_A, bytes(32), ME)
    v = Vote(TASK, 1, 0, 0, CID_A, CID_A, bytes(32), ME)
    c = Commit(TASK, 1, 0, 0, CID_A, CID_A, bytes(32), ())
    assert ev.event_for(u) == ev.UpdateReceived(u, ME)  # the validator checked it: message.signer
    assert ev.event_for(p, OTHER) == ev.ProposalReceived(p, OTHER)  # what the caller recovered
    assert ev.event_for(v, OTHER) == ev.VoteReceived(v, OTHER)
    assert ev.event_for(c) == ev.CommitSeen(c)


def test_a_heartbeat_is_a_liveness_event():
    h = Heartbeat(TASK, 1, 0, "collect", ME)
    assert ev.event_for(h) == ev.HeartbeatReceived(h, ME)
    assert ev.event_for(h, OTHER) == ev.HeartbeatReceived(h, OTHER)
    assert ev.event_for(object()) is None
