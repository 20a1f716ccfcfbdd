"""The round state machine: whole rounds over a simulated network, and its message checks."""

from __future__ import annotations

import ast
import inspect
import math
import random
import typing
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pfl.core import round as round_module
from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Commit, Proposal, Update, Vote
from p2pfl.core.round import (
    CHAIN_CLOCK_MARGIN_S,
    HANDLERS,
    SMALL_DRAWS_SKIPPED_AT_ONCE,
    TIMERS,
    TRANSITIONS,
    Phase,
    RoundConfig,
    RoundMachine,
    RoundStateError,
    Timer,
    Trigger,
    collect_quorum,
    next_phase,
)
from p2pfl.core.round_events import (
    Advance,
    AggregateComputed,
    ChainCommitted,
    CommitSeen,
    ComputeAggregate,
    DeltaAvailable,
    Event,
    Evidence,
    Fetch,
    LocalUpdateReady,
    ProposalReceived,
    Publish,
    Rejected,
    ReportEvidence,
    RoundStarted,
    StartTraining,
    SubmitCommit,
    Tick,
    UpdateReceived,
    VoteReceived,
)
from p2pfl.errors import ConfigError, P2PFLError

from .round_sim import (
    ADDRS,
    DOMAIN,
    GENESIS,
    KEY_OF,
    RULE,
    STAKES,
    TASK_SMALL,
    Sim,
    committee,
    delta_cid,
    fake_aggregate,
    find_task,
    received,
)

K = 7
# A task whose round-1 draw (attempt 0) seats exactly 7 of the 10 equal-stake nodes.
TASK7 = find_task(lambda t: len(committee(t, 1, GENESIS)) == 7)
C7 = committee(TASK7, 1, GENESIS)
NON_MEMBERS = [a for a in ADDRS if a not in C7]
# A task whose attempt-0 draw is below quorum (5 of k=7) but attempt 1 is not.


def config(task: bytes = TASK7, **kw) -> RoundConfig:
    return RoundConfig(task=task, committee_size=K, rule=RULE, **kw)


def by_type(actions, cls):
    return [a for a in actions if isinstance(a, cls)]


def assert_single_commit(sim: Sim, round_: int = 1) -> ChainCommitted:
    """Every honest node followed the chain's one commit for `round_`."""
    chained = sim.chain[round_]
    for a in sim.honest():
        adv = [x for x in sim.advances[a] if x.round == round_ + 1]
        assert adv and adv[0].base == chained.result, f"node {a.hex()} did not follow"
    return chained


def honest_result(sim: Sim, commit: Commit) -> bytes:
    """What an honest aggregator gets over the certificate's included set."""
    proposal = next(
        m
        for _, _, m in sim.published
        if isinstance(m, Proposal) and m.view == commit.view and m.result == commit.result
    )
    updates = tuple(
        next(m for _, _, m in sim.published if isinstance(m, Update) and (m.signer, m.delta) == key)
        for key in proposal.included
    )
    req = ComputeAggregate(commit.round, commit.attempt, commit.base, RULE, tuple(C7), updates)
    return fake_aggregate(req).result


# --- whole rounds ------------------------------------------------------------------------


def test_committee_of_seven_with_silent_and_lying_member_commits():
    silent, liar = C7[2], C7[3]
    sim = Sim(config(), silent={silent}, liars={liar})
    sim.start()
    sim.run()
    chained = assert_single_commit(sim)
    cert = sim.chain_certs[1]
    signers = {s for s, _ in cert.votes}
    assert chained.view == 0 and chained.attempt == 0
    assert len(signers) >= config().quorum == 5
    assert liar not in signers and silent not in signers
    assert signers <= set(C7)
    assert chained.result == honest_result(sim, cert)
    # The liar's wrong vote was accepted as a vote but never joined the certificate.
    assert any(isinstance(m, Vote) and m.signer == liar for _, _, m in sim.published)
    # The leader submitted first; nobody equivocated.
    assert sim.submissions[0][1] == C7[0]
    assert sim.evidence == []


def test_lying_leader_causes_view_change_and_next_leader_commits():
    liar, silent = C7[0], C7[2]
    sim = Sim(config(), silent={silent}, liars={liar})
    sim.start()
    sim.run()
    chained = assert_single_commit(sim)
    lie = next(m for _, _, m in sim.published if isinstance(m, Proposal) and m.signer == liar)
    assert lie.view == 0
    assert chained.view == 1 and chained.result != lie.result
    assert chained.result == honest_result(sim, sim.chain_certs[1])
    assert {s for s, _ in sim.chain_certs[1].votes} <= set(C7) - {liar, silent}
    for a in sim.honest():
        if a in C7:
            assert sim.machines[a].counters["proposal-mismatch"] == 1
            assert sim.machines[a].counters["view-changes"] >= 1


def test_silent_leader_causes_view_change():
    sim = Sim(config(), silent={C7[0]})
    sim.start()
    sim.run()
    chained = assert_single_commit(sim)
    assert chained.view == 1
    assert not any(m for _, s, m in sim.published if s == C7[0])
    assert sim.submissions[0][1] == C7[1]  # the view-1 leader submits first


def test_collection_closes_at_quorum_before_the_deadline():
    # Everyone trains within ~15 s: 80% of 10 arrive long before the 60 s deadline.
    sim = Sim(config())
    sim.start()
    sim.run()
    assert_single_commit(sim)
    first = min(t for t, _, m in sim.published if isinstance(m, Proposal))
    assert first < config().collect_deadline_s
    assert sim.machines[C7[0]].counters["collect-closed:quorum"] == 1
    assert sim.machines[C7[0]].counters["collect-closed:deadline"] == 0
    proposal = next(m for _, _, m in sim.published if isinstance(m, Proposal))
    assert len(proposal.included) >= collect_quorum(80, 10) == 8


def test_collection_closes_at_the_deadline_without_quorum():
    # Only 7 of 10 ever finish training: 70% < 80%, so the 60 s deadline closes collection.
    idle = set(ADDRS[:3])
    sim = Sim(config(), idle=idle)
    sim.start()
    sim.run()
    assert_single_commit(sim)
    first = min(t for t, _, m in sim.published if isinstance(m, Proposal))
    assert first >= config().collect_deadline_s
    leader = sim.machines[C7[0]]
    assert leader.counters["collect-closed:deadline"] == 1
    proposal = next(m for _, _, m in sim.published if isinstance(m, Proposal))
    assert {a for a, _ in proposal.included} == set(ADDRS) - idle


def test_filter_rejections_and_unavailable_deltas_are_agreed_in_the_proposal():
    sim = Sim(config(), high_norm={ADDRS[4]}, bad_deltas={ADDRS[5]})
    sim.start()
    sim.run()
    assert_single_commit(sim)
    p = next(m for _, _, m in sim.published if isinstance(m, Proposal))
    assert dict(p.rejected)[ADDRS[4]] == "norm-too-large"
    assert dict(p.rejected)[ADDRS[5]] == "unavailable"
    assert ADDRS[4] not in dict(p.included) and ADDRS[5] not in dict(p.included)


def test_a_draw_below_quorum_is_left_at_once_and_the_commit_waits_for_the_contract():
    """Everyone draws alike, so a draw below quorum is known to be re-drawn the moment it is
    drawn: attempt 1 starts with the round, and only its commit waits for the contract's
    bound (attempt x redrawDelay after the last commit; the Sim's chain asserts it)."""
    cfg = config(TASK_SMALL)
    sim = Sim(cfg, train_s=lambda i: 0.5 + 0.1 * i)  # every update out within 2 s
    assert len(committee(TASK_SMALL, 1, GENESIS, 0)) < cfg.quorum
    sim.start()
    sim.run(until=0.1)
    assert all(m.attempt == 1 and m.phase != Phase.REDRAWING for m in sim.machines.values())
    assert all(m.counters["draws-skipped:small"] == 1 for m in sim.machines.values())
    sim.run()
    chained = assert_single_commit(sim)
    assert chained.attempt == 1
    assert {s for s, _ in sim.chain_certs[1].votes} <= set(committee(TASK_SMALL, 1, GENESIS, 1))
    # Certified before the bound, submitted at it (the round started at t = 0).
    bound = cfg.small_redraw_delay_s + CHAIN_CLOCK_MARGIN_S
    first_submit = min(t for t, _, _ in sim.submissions)
    assert first_submit == pytest.approx(bound)
    assert sum(m.counters["commits-deferred:redraw-bound"] for m in sim.machines.values()) == 1


def test_draws_below_quorum_are_left_at_once_only_a_bounded_number_of_times():
    """A registry that can never seat a quorum (4 nodes, quorum 5) does not spin: after
    SMALL_DRAWS_SKIPPED_AT_ONCE draws left at once, each waits `small_redraw_delay_s`."""
    few = dict(list(STAKES.items())[:4])
    cfg = config()
    m = RoundMachine(cfg, KEY_OF[next(iter(few))], DOMAIN)
    m.handle(RoundStarted(1, GENESIS, few, 10.0))
    assert m.attempt == SMALL_DRAWS_SKIPPED_AT_ONCE and m.phase == Phase.REDRAWING
    assert m.counters["draws-skipped:small"] == SMALL_DRAWS_SKIPPED_AT_ONCE
    assert m.next_deadline() == 10.0 + cfg.small_redraw_delay_s
    m.handle(Tick(10.0 + cfg.small_redraw_delay_s))
    assert m.attempt == SMALL_DRAWS_SKIPPED_AT_ONCE + 1 and m.phase == Phase.REDRAWING


def test_stuck_attempt_is_redrawn():
    # Three silent members of seven: 4 < quorum 5 votes. Attempt 1 draws anew.
    silent = set(C7[:3])
    attempt1 = committee(TASK7, 1, GENESIS, 1)
    assert len(set(attempt1) - silent) >= 5, "test premise: attempt 1 can reach quorum"
    sim = Sim(config(), silent=silent)
    sim.start()
    sim.run()
    chained = assert_single_commit(sim)
    assert chained.attempt == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), latency=st.floats(0.01, 8.0), liar_pos=st.integers(0, 6))
def test_any_delivery_order_gives_one_commit_for_all_honest(seed, latency, liar_pos):
    """Shuffled delivery (random per-message latencies), a liar anywhere, two rounds."""
    liar = C7[liar_pos]
    silent = C7[(liar_pos + 3) % 7]
    sim = Sim(
        config(),
        rng=random.Random(seed),
        max_latency_s=latency,
        liars={liar},
        silent={silent},
        rounds=2,
    )
    sim.start()
    sim.run(until=5000)
    assert_single_commit(sim, 1)
    assert_single_commit(sim, 2)
    for r in (1, 2):
        cert = sim.chain_certs[r]
        assert liar not in {s for s, _ in cert.votes}
    assert sim.evidence == []
    assert all(m.counters["chain-differs-from-certificate"] == 0 for m in sim.machines.values())


# --- single machine: checks on incoming messages -------------------------------------------


def started(
    addr: bytes, cfg: RoundConfig | None = None, now: float = 0.0
) -> tuple[RoundMachine, list]:
    m = RoundMachine(cfg or config(), KEY_OF[addr], DOMAIN)
    actions = m.handle(RoundStarted(1, GENESIS, STAKES, now))
    return m, actions


def update(author: bytes, round_: int = 1, salt: bytes = b"", **kw) -> Update:
    fields = dict(
        task=TASK7,
        round=round_,
        base=GENESIS,
        delta=blob_cid(b"d" + author + salt + bytes([round_])).to_bytes(),
        n_samples=10,
        norm=1.0,
        inline=b"",
        signer=author,
    )
    fields.update(kw)
    return Update(**fields).signed(KEY_OF[author], DOMAIN)  # type: ignore[return-value]


def vote(signer: bytes, result: bytes, view: int = 0, round_: int = 1, **kw) -> Vote:
    fields = dict(
        task=TASK7,
        round=round_,
        attempt=0,
        view=view,
        base=GENESIS,
        result=result,
        contributors_root=bytes(32),
        signer=signer,
    )
    fields.update(kw)
    return Vote(**fields).signed(KEY_OF[signer], DOMAIN)  # type: ignore[return-value]


def rejected_reasons(actions) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Rejected)]


def test_round_start_trains_and_member_fetches_updates():
    m, actions = started(C7[1])
    assert by_type(actions, StartTraining) == [StartTraining(1, GENESIS)]
    assert m.phase == Phase.COLLECTING and m.is_member and m.committee == tuple(C7)
    u = update(ADDRS[0])
    assert by_type(m.handle(UpdateReceived(u, u.signer)), Fetch) == [Fetch(u.signer, u.delta)]
    f, _ = started(NON_MEMBERS[0])
    assert f.phase == Phase.FOLLOWING
    assert f.handle(UpdateReceived(u, u.signer)) == []  # stored, not fetched


def test_equivocating_update_gives_evidence_and_duplicate_is_ignored():
    m, _ = started(C7[1])
    a = update(ADDRS[0])
    b = update(ADDRS[0], salt=b"other")
    m.handle(UpdateReceived(a, a.signer))
    assert rejected_reasons(m.handle(UpdateReceived(a, a.signer))) == ["duplicate"]
    out = m.handle(UpdateReceived(b, b.signer))
    (report,) = by_type(out, ReportEvidence)
    assert report.evidence == Evidence(a, b)
    args = report.evidence.contract_args()
    kind, task, round_, attempt, view, body_a, sig_a, body_b, sig_b = args
    assert (kind, task, round_, attempt, view) == (1, TASK7, 1, 0, 0)
    assert (body_a, sig_a, body_b, sig_b) == (a.body(), a.signature, b.body(), b.signature)
    # A third version is counted but reported only once.
    c = update(ADDRS[0], salt=b"third")
    assert by_type(m.handle(UpdateReceived(c, c.signer)), ReportEvidence) == []
    assert m.counters["evidence"] == 1 and m.counters["rejected:equivocation"] == 2
    # An equivocator is left out of the leader's candidates.
    assert ADDRS[0] not in {u.signer for u in m._collected()}


def test_equivocating_vote_gives_evidence_and_counts_once():
    m, _ = started(NON_MEMBERS[0])
    r1, r2 = blob_cid(b"r1").to_bytes(), blob_cid(b"r2").to_bytes()
    v1, v2 = vote(C7[0], r1), vote(C7[0], r2)
    m.handle(VoteReceived(v1, v1.signer))
    out = m.handle(VoteReceived(v2, v2.signer))
    assert by_type(out, ReportEvidence) == [ReportEvidence(Evidence(v1, v2))]
    assert m.counters["votes-accepted"] == 1
    # Votes in different views are not equivocation.
    v3 = vote(C7[0], r2, view=1)
    assert by_type(m.handle(VoteReceived(v3, v3.signer)), ReportEvidence) == []


def test_evidence_requires_a_real_conflict():
    a = update(ADDRS[0])
    with pytest.raises(P2PFLError):
        Evidence(a, a)
    with pytest.raises(P2PFLError):
        Evidence(a, update(ADDRS[1]))


def test_invalid_and_stale_messages_are_rejected_and_counted():
    m, _ = started(C7[1])
    result = blob_cid(b"r").to_bytes()
    other_base = blob_cid(b"other base").to_bytes()
    cases = [
        (UpdateReceived(update(ADDRS[0]), ADDRS[1]), "bad-signer"),
        (UpdateReceived(update(ADDRS[0], task=bytes(32)), ADDRS[0]), "wrong-task"),
        (UpdateReceived(update(ADDRS[0], base=other_base), ADDRS[0]), "wrong-base"),
        (UpdateReceived(update(ADDRS[0], round_=0), ADDRS[0]), "stale-round"),
        (UpdateReceived(update(ADDRS[0], round_=5), ADDRS[0]), "future-round"),
        (UpdateReceived(update(ADDRS[0], n_samples=10**12), ADDRS[0]), "bad-bounds"),
        (VoteReceived(vote(NON_MEMBERS[0], result), NON_MEMBERS[0]), "not-member"),
        (VoteReceived(vote(C7[0], result, attempt=3), C7[0]), "future-attempt"),
    ]
    stranger = (99).to_bytes(32, "big")
    from p2pfl.core.signing import address_of

    outsider = address_of(stranger)
    u = Update(TASK7, 1, GENESIS, delta_cid(outsider, 1), 5, 1.0, b"", outsider)
    u = u.signed(stranger, DOMAIN)
    cases.append((UpdateReceived(u, outsider), "not-registered"))
    for event, reason in cases:
        assert rejected_reasons(m.handle(event)) == [reason], reason
        assert m.counters[f"rejected:{reason}"] == 1
    penalized = {a.reason: a.penalize for e, _ in cases for a in by_type(m.handle(e), Rejected)}
    assert penalized["wrong-base"] and not penalized["stale-round"]


def test_replayed_messages_from_a_committed_round_are_stale():
    sim = Sim(config(), rounds=2)
    sim.start()
    sim.run()
    m = sim.machines[C7[1]]
    assert m.round == 2 and m.phase == Phase.ADVANCED
    old = [
        received(msg)
        for _, _, msg in sim.published
        if msg.round == 1 and not isinstance(msg, Commit)
    ]
    before = m.counters["rejected:stale-round"]
    for event in old:
        assert rejected_reasons(m.handle(event)) == ["stale-round"]
    assert m.counters["rejected:stale-round"] == before + len(old)


def test_proposal_checks_leader_rule_and_authors():
    m, _ = started(C7[1])
    leader = C7[0]
    good = Proposal(
        TASK7,
        1,
        0,
        0,
        GENESIS,
        ((ADDRS[0], delta_cid(ADDRS[0], 1)),),
        (),
        RULE,
        blob_cid(b"x").to_bytes(),
        bytes(32),
        leader,
    )

    def offer(p: Proposal) -> list[str]:
        p = p.signed(KEY_OF[p.signer], DOMAIN)
        return rejected_reasons(m.handle(ProposalReceived(p, p.signer)))

    assert offer(replace(good, signer=C7[2])) == ["not-leader"]
    assert offer(replace(good, rule="median")) == ["wrong-rule"]
    stranger = bytes(19) + b"\x01"
    assert offer(replace(good, rejected=((stranger, "x"),))) == ["bad-proposal"]
    # The leader's proposal closes our collection and asks for a fetch of what it names.
    out = m.handle(ProposalReceived(good.signed(KEY_OF[leader], DOMAIN), leader))
    assert m.phase == Phase.VOTING and m.counters["collect-closed:proposal"] == 1
    # We never saw that Update message: nothing to verify yet, so no vote.
    assert by_type(out, Publish) == []


def test_member_votes_only_for_an_identical_recomputation():
    m, _ = started(C7[2])
    u = update(ADDRS[0])
    m.handle(UpdateReceived(u, u.signer))
    m.handle(DeltaAvailable(u.signer, u.delta, True))
    honest = fake_aggregate(ComputeAggregate(1, 0, GENESIS, RULE, tuple(C7), (u,)))

    def proposal(view: int, result: bytes) -> Proposal:
        p = Proposal(
            TASK7,
            1,
            0,
            view,
            GENESIS,
            honest.included,
            (),
            RULE,
            result,
            honest.contributors_root,
            C7[view],
        )
        return p.signed(KEY_OF[C7[view]], DOMAIN)  # type: ignore[return-value]

    wrong = proposal(0, blob_cid(b"wrong").to_bytes())
    out = m.handle(ProposalReceived(wrong, wrong.signer))
    (compute,) = by_type(out, ComputeAggregate)
    assert compute.updates == (u,) and compute.candidates == honest.candidates
    assert by_type(m.handle(honest), Publish) == []  # mismatch: no vote
    assert m.counters["proposal-mismatch"] == 1
    # A view-1 proposal arriving early is buffered until the view changes.
    right = proposal(1, honest.result)
    assert m.handle(ProposalReceived(right, right.signer)) == []
    out = m.handle(Tick(m.next_deadline()))
    assert m.view == 1
    # Same input set as before: the cached computation answers, the vote goes out at once.
    (published,) = by_type(out, Publish)
    assert isinstance(published.message, Vote)
    assert (published.message.view, published.message.result) == (1, honest.result)
    assert published.message.verify(DOMAIN) == m.address


def test_non_member_follows_certificate_and_chain():
    f, _ = started(NON_MEMBERS[0])
    result = blob_cid(b"agreed").to_bytes()
    votes = [vote(s, result) for s in C7[:5]]
    signatures = tuple(sorted((v.signer, v.signature) for v in votes))
    cert = Commit(TASK7, 1, 0, 0, GENESIS, result, bytes(32), signatures)
    short = replace(cert, votes=cert.votes[:4])
    assert rejected_reasons(f.handle(CommitSeen(short))) == ["bad-certificate"]
    forged = replace(cert, votes=((cert.votes[0][0], cert.votes[1][1]), *cert.votes[1:]))
    assert rejected_reasons(f.handle(CommitSeen(forged))) == ["bad-certificate"]
    assert f.handle(CommitSeen(cert)) == []  # followers never submit
    assert f.phase == Phase.CERTIFIED and f.certificate == cert
    out = f.handle(ChainCommitted(1, 0, 0, GENESIS, result, bytes(32)))
    assert [(a.round, a.base) for a in out] == [(2, result)]
    assert f.phase == Phase.ADVANCED
    assert f.handle(ChainCommitted(1, 0, 0, GENESIS, result, bytes(32))) == []


def test_member_with_certificate_submits_by_rank():
    me = C7[3]
    m, _ = started(me)
    result = blob_cid(b"agreed").to_bytes()
    out = []
    for s in C7[:5]:
        v = vote(s, result)
        out += m.handle(VoteReceived(v, s))
    assert m.phase == Phase.CERTIFIED and by_type(out, SubmitCommit) == []
    assert m.next_deadline() == 3 * config().commit_fallback_delay_s  # rank 3 after leader 0
    out = m.handle(Tick(m.next_deadline()))
    (submit,) = by_type(out, SubmitCommit)
    assert {s for s, _ in submit.commit.votes} == set(C7[:5])
    assert m.next_deadline() is None


def test_future_round_messages_are_buffered_until_the_round_starts():
    m, _ = started(C7[1])
    result = blob_cid(b"r").to_bytes()
    base2 = blob_cid(b"model after round 1").to_bytes()
    assert m.handle(ChainCommitted(1, 0, 0, GENESIS, result, bytes(32)))[0].base == result
    early = update(ADDRS[0], round_=2, base=base2)
    assert m.handle(UpdateReceived(early, early.signer)) == []
    out = m.handle(RoundStarted(2, base2, STAKES, 500.0))
    assert m.counters["updates-accepted"] == 1
    assert (Fetch(early.signer, early.delta) in out) == m.is_member


def test_buffer_is_bounded():
    m = RoundMachine(config(max_buffered=2), KEY_OF[C7[1]], DOMAIN)
    events = [UpdateReceived(u, u.signer) for u in (update(a) for a in ADDRS[:3])]
    outs = [m.handle(e) for e in events]  # before any round: buffered
    assert rejected_reasons(outs[2]) == ["buffer-full"]
    m.handle(RoundStarted(1, GENESIS, STAKES, 0.0))
    assert m.counters["updates-accepted"] == 2


# --- the table and the configuration --------------------------------------------------------


def test_transition_table_is_closed_and_illegal_moves_raise():
    for phase, moves in TRANSITIONS.items():
        for trigger, target in moves.items():
            assert isinstance(trigger, Trigger) and target in TRANSITIONS, phase
    assert Trigger.CERTIFIED not in TRANSITIONS[Phase.ADVANCED]
    m, _ = started(C7[1])
    with pytest.raises(RoundStateError):
        m.handle(RoundStarted(1, GENESIS, STAKES, 1.0))
    with pytest.raises(RoundStateError):
        m._goto(Trigger.VIEW_TIMEOUT)  # COLLECTING has no views yet
    assert m.phase == Phase.COLLECTING


def test_every_phase_trigger_pair_is_in_the_table_or_raises():
    for phase in Phase:
        for trigger in Trigger:
            if trigger in TRANSITIONS[phase]:
                assert next_phase(phase, trigger) == TRANSITIONS[phase][trigger]
            else:
                with pytest.raises(RoundStateError, match="illegal transition"):
                    next_phase(phase, trigger)
    # Whatever the phase, a new round resets to IDLE and a chain commit is followed.
    assert all(TRANSITIONS[p][Trigger.ROUND_STARTED] == Phase.IDLE for p in Phase)
    assert all(TRANSITIONS[p][Trigger.CHAIN_COMMITTED] == Phase.ADVANCED for p in Phase)


def test_handlers_name_a_handler_for_every_event_type_in_every_phase():
    """What each phase does with each event is decided in HANDLERS, deliberately: no
    event type and no phase is left to a default."""
    assert set(HANDLERS) == set(typing.get_args(Event))
    for event_type, by_phase in HANDLERS.items():
        assert set(by_phase) == set(Phase), event_type.__name__
        assert all(callable(handler) for handler in by_phase.values())
    assert set(TIMERS) == set(Phase) and all(set(t) <= set(Timer) for t in TIMERS.values())
    with pytest.raises(RoundStateError, match="unknown event"):
        RoundMachine(config(), KEY_OF[C7[1]], DOMAIN).handle(object())  # type: ignore[arg-type]


def test_only_goto_changes_the_phase():
    """The phase is read-only from outside, and inside only `_goto` (checked against the
    table) assigns it after `__init__`'s initial IDLE."""
    m, _ = started(C7[1])
    with pytest.raises(AttributeError):
        m.phase = Phase.VOTING  # type: ignore[misc]
    tree = ast.parse(inspect.getsource(round_module))
    writers = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                targets = (
                    node.targets
                    if isinstance(node, ast.Assign)
                    else [getattr(node, "target", None)]
                )
                if any(
                    isinstance(t, ast.Attribute) and t.attr in ("phase", "_phase") for t in targets
                ):
                    writers.add(fn.name)
    assert writers == {"__init__", "_goto"}


def test_a_machine_that_followed_the_chain_ignores_what_only_a_running_round_takes():
    """ADVANCED (here straight from IDLE): a local update is ignored and counted, gossip
    for the committed round is stale, and only a later chain commit moves it."""
    m = RoundMachine(config(), KEY_OF[C7[1]], DOMAIN)
    (advance,) = m.handle(ChainCommitted(1, 0, 0, GENESIS, GENESIS, bytes(32)))
    assert advance.round == 2 and m.phase == Phase.ADVANCED
    assert m.handle(LocalUpdateReady(1, delta_cid(C7[1], 1), 10, 1.0)) == []
    assert m.counters["local-update-ignored"] == 1
    u = update(ADDRS[0])
    assert m.handle(UpdateReceived(u, u.signer)) == [Rejected("stale-round", u.signer, False)]
    assert m.handle(ChainCommitted(1, 0, 0, GENESIS, GENESIS, bytes(32))) == []
    assert [type(a) for a in m.handle(ChainCommitted(2, 0, 0, GENESIS, GENESIS, bytes(32)))] == [
        Advance
    ]


def test_config_validation_and_quorums():
    assert config().quorum == math.ceil(2 * K / 3) == 5
    assert config(task_quorum=6).quorum == 6
    assert collect_quorum(80, 10) == 8 and collect_quorum(80, 3) == 3 and collect_quorum(80, 0) == 1
    with pytest.raises(ConfigError):
        config(redraw_timeout_s=10.0)
    with pytest.raises(ConfigError):
        config(collect_quorum_percent=0)
    with pytest.raises(ConfigError):
        RoundConfig(task=b"short", committee_size=7, rule=RULE)


def test_machine_never_signs_two_different_votes_for_one_view():
    m, _ = started(C7[1])
    m.handle(Tick(m.config.collect_deadline_s))  # collection closes: views run
    assert m.phase == Phase.VOTING
    m._vote(0, blob_cid(b"a").to_bytes(), bytes(32))
    with pytest.raises(RoundStateError):
        m._vote(0, blob_cid(b"b").to_bytes(), bytes(32))


def test_aggregate_answer_for_a_left_attempt_is_ignored():
    m, _ = started(C7[1])
    stale = AggregateComputed(1, 5, ((ADDRS[0], delta_cid(ADDRS[0], 1)),))
    assert m.handle(stale) == []


def test_member_refuses_a_proposal_that_includes_a_known_equivocator():
    """The leader may not have seen an author's second update yet; a member who has
    must not vote to commit the equivocator's contribution."""
    m, _ = started(C7[2])
    u = update(ADDRS[0])
    m.handle(UpdateReceived(u, u.signer))
    m.handle(DeltaAvailable(u.signer, u.delta, True))
    honest = fake_aggregate(ComputeAggregate(1, 0, GENESIS, RULE, tuple(C7), (u,)))
    second = update(ADDRS[0], salt=b"second version")
    assert by_type(m.handle(UpdateReceived(second, second.signer)), ReportEvidence)
    p = Proposal(
        TASK7,
        1,
        0,
        0,
        GENESIS,
        honest.included,
        (),
        RULE,
        honest.result,
        honest.contributors_root,
        C7[0],
    ).signed(KEY_OF[C7[0]], DOMAIN)
    out = m.handle(ProposalReceived(p, p.signer))
    assert by_type(out, ComputeAggregate) == [] and by_type(out, Publish) == []
    m.handle(honest)
    assert m.counters["proposal-includes-equivocator"] == 1
    assert not any(isinstance(a, Publish) for a in m.handle(Tick(m.now)))


def test_the_spec_transition_table_is_the_code_table():
    """protocol/spec/round.md writes TRANSITIONS out for readers: they must agree."""
    lines = (Path(__file__).parents[2] / "protocol/spec/round.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| from \\ trigger |"))
    triggers = [Trigger[t.strip()] for t in lines[start].strip("|").split("|")[1:]]
    table = {}
    for line in lines[start + 2 : start + 2 + len(Phase)]:
        phase, *cells = (c.strip() for c in line.strip("|").split("|"))
        table[Phase[phase]] = {t: Phase[c] for t, c in zip(triggers, cells) if c}
    assert table == TRANSITIONS
