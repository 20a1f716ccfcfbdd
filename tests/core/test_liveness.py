"""Liveness of collection: the early-close quorum counts the nodes heard from, not the dead.

protocol/spec/round.md "Timers / collect". Whole rounds over the fake network, and one
machine driven by hand through several rounds to pin the expected count exactly.
"""

from __future__ import annotations

import itertools

from p2pfl.core.cid import blob_cid
from p2pfl.core.messages import Heartbeat, Proposal, Update
from p2pfl.core.round import Phase, RoundConfig, RoundMachine, collect_quorum, timeout_factor
from p2pfl.core.round_events import (
    ChainCommitted,
    DeltaAvailable,
    HeartbeatReceived,
    LocalUpdateReady,
    RoundStarted,
    Tick,
    UpdateReceived,
)
from p2pfl.core.signing import address_of

from .round_sim import ADDRS, DOMAIN, GENESIS, KEY_OF, RULE, STAKES, Sim, committee, find_task

K = 7
TASK = find_task(lambda t: len(committee(t, 1, GENESIS)) == 7)
ME = committee(TASK, 1, GENESIS)[0]
OTHERS = [a for a in ADDRS if a != ME]
LIVE, DEAD = OTHERS[:6], OTHERS[6:]  # 6 live others (+ ME = 7 of 10), 3 dead
COLLECT_DEADLINE_S = 60.0
JOINER_KEY = (77).to_bytes(32, "big")
JOINER = address_of(JOINER_KEY)
KEYS = {**KEY_OF, JOINER: JOINER_KEY}


def config(**kw) -> RoundConfig:
    # These tests pin the count at which collection closes: no straggler grace after it.
    kw.setdefault("straggler_grace_s", 0.0)
    return RoundConfig(
        task=TASK, committee_size=K, rule=RULE, collect_deadline_s=COLLECT_DEADLINE_S, **kw
    )


def base_of(round_: int, stakes=STAKES) -> bytes:
    """A base model after `round_ - 1` whose round-`round_` committee seats ME (>= quorum)."""
    for i in itertools.count():
        base = blob_cid(b"base %d %d" % (round_, i)).to_bytes()
        drawn = committee(TASK, round_, base, stakes=stakes)
        if len(drawn) >= config().quorum and ME in drawn:
            return base
    raise AssertionError("unreachable")


BASES = {1: GENESIS, 2: base_of(2), 3: base_of(3), 4: base_of(4)}


def update(author: bytes, round_: int, base: bytes | None = None) -> Update:
    delta = blob_cid(b"d" + author + bytes([round_])).to_bytes()
    u = Update(TASK, round_, base or BASES[round_], delta, 10, 1.0, b"", author)
    return u.signed(KEYS[author], DOMAIN)  # type: ignore[return-value]


def feed(m: RoundMachine, author: bytes, round_: int, base: bytes | None = None) -> None:
    """A registered author's update for `round_` arrives and its delta verifies."""
    u = update(author, round_, base)
    m.handle(UpdateReceived(u, u.signer))
    m.handle(DeltaAvailable(u.signer, u.delta, True))


def closes_after(
    m: RoundMachine, authors: list[bytes], round_: int, base: bytes | None = None
) -> int | None:
    """Feed updates one by one; how many were in when collection closed (None: still open)."""
    assert m.phase == Phase.COLLECTING
    for n, author in enumerate(authors, 1):
        feed(m, author, round_, base)
        if m.phase != Phase.COLLECTING:
            assert m.counters["collect-closed:quorum"] >= 1
            return n
    return None


def start(m: RoundMachine, round_: int, stakes=STAKES) -> None:
    """The chain committed `round_ - 1` (if any), then the round starts."""
    if round_ > 1:
        m.handle(ChainCommitted(round_ - 1, 0, 0, BASES[round_ - 1], BASES[round_], bytes(32)))
        assert m.phase == Phase.ADVANCED
    m.handle(RoundStarted(round_, BASES[round_], stakes, 100.0 * round_))
    assert m.phase == Phase.COLLECTING


def machine(**kw) -> RoundMachine:
    return RoundMachine(config(**kw), KEY_OF[ME], DOMAIN)


# --- one machine, several rounds -------------------------------------------------------------


def test_first_round_expects_every_registered_node():
    m = machine()
    start(m, 1)
    # No history: all 10 registered are expected, so 80% = 8 updates close collection.
    assert closes_after(m, LIVE + DEAD, 1) == collect_quorum(80, 10) == 8


def test_after_a_round_with_silent_nodes_the_live_ones_close_collection():
    m = machine()
    start(m, 1)
    assert closes_after(m, LIVE, 1) is None  # 6 others heard (+ ME presumed alive) < 8
    start(m, 2)
    # Expected = the 6 heard + ME = 7 -> ceil(0.8 * 7) = 6 verified updates close it, long
    # before the deadline (no Tick was ever sent).
    assert closes_after(m, LIVE, 2) == collect_quorum(80, 7) == 6
    assert m.counters["collect-closed:deadline"] == 0


def test_a_returning_node_is_counted_again():
    m = machine()
    start(m, 1)
    closes_after(m, LIVE, 1)
    start(m, 2)
    # DEAD[0] comes back: its update raises expected to 8 at once, so its own update does
    # not make a quorum of 6 on the way (the 6th update would have closed at E = 7).
    assert closes_after(m, [DEAD[0], *LIVE[:5]], 2) is None
    assert closes_after(m, LIVE[5:], 2) == 1  # 7 = ceil(0.8 * 8)
    # Next round it is expected from the start: 6 updates no longer close collection.
    start(m, 3)
    assert closes_after(m, LIVE, 3) is None
    assert closes_after(m, [DEAD[0]], 3) == 1


def test_a_late_update_after_the_commit_counts_for_the_next_round():
    m = machine()
    start(m, 1)
    closes_after(m, LIVE, 1)
    m.handle(ChainCommitted(1, 0, 0, BASES[1], BASES[2], bytes(32)))
    u = update(DEAD[0], 1)  # a straggler: dropped as stale, but it shows DEAD[0] is alive
    m.handle(UpdateReceived(u, u.signer))
    assert m.counters["rejected:stale-round"] == 1
    m.handle(RoundStarted(2, BASES[2], STAKES, 200.0))
    assert closes_after(m, LIVE, 2) is None  # expected 8: 6 updates are not enough
    assert closes_after(m, [DEAD[0]], 2) == 1


def test_authors_on_probation_cannot_fill_the_collect_quorum():
    # 3 of the 10 are on probation: expected = 7 others -> ceil(0.8 * 7) = 6 updates of
    # authors not on probation; the 3 on probation arrive first and count for nothing.
    m = machine()
    suspects = frozenset(DEAD)
    m.handle(RoundStarted(1, BASES[1], STAKES, 100.0, probation=suspects))
    assert closes_after(m, [*DEAD, *LIVE[:5]], 1) is None
    assert closes_after(m, LIVE[5:], 1) == 1  # the 6th honest update closes it
    # Without probation the same 3 + 5 updates close it at 8 = ceil(0.8 * 10).
    m = machine()
    start(m, 1)
    assert closes_after(m, [*DEAD, *LIVE[:5]], 1) == 8


def test_expected_never_drops_below_the_floor():
    m = machine()
    start(m, 1)
    closes_after(m, LIVE[:1], 1)  # we heard almost nothing (e.g. partitioned)
    start(m, 2)
    # Heard 1 + ME = 2, but the floor is 50% of 10 registered = 5 -> quorum 4.
    assert closes_after(m, LIVE, 2) == collect_quorum(80, 5) == 4
    # min_expected_percent = 100 turns the adaptation off.
    m = machine(min_expected_percent=100)
    start(m, 1)
    closes_after(m, LIVE, 1)
    start(m, 2)
    assert closes_after(m, LIVE, 2) is None


def test_a_joining_node_is_expected_and_a_fixed_count_is_kept():
    m = machine()
    start(m, 1)
    closes_after(m, LIVE, 1)
    stakes = {**STAKES, JOINER: 100}
    base = base_of(2, stakes)
    m.handle(ChainCommitted(1, 0, 0, BASES[1], base, bytes(32)))
    m.handle(RoundStarted(2, base, stakes, 200.0))
    # 6 heard + ME + the new registration = 8 -> 7 updates; the joiner's is the 7th.
    assert closes_after(m, LIVE, 2, base) is None
    assert closes_after(m, [JOINER], 2, base) == 1
    # A configured expected_participants is used as is, whatever was heard.
    m = machine(expected_participants=7)
    start(m, 1)
    assert closes_after(m, LIVE, 1) == collect_quorum(80, 7) == 6


def test_no_history_after_skipping_rounds():
    m = machine()
    start(m, 1)
    closes_after(m, LIVE, 1)
    # We followed the chain past round 2 without running it (e.g. we lagged): round 3
    # starts with no history, so every registered node is expected again.
    m.handle(ChainCommitted(2, 0, 0, BASES[2], BASES[3], bytes(32)))
    m.handle(RoundStarted(3, BASES[3], STAKES, 300.0))
    assert m.phase == Phase.COLLECTING
    assert closes_after(m, LIVE, 3) is None


# --- whole rounds --------------------------------------------------------------------------


def test_dead_nodes_cost_the_deadline_once_then_rounds_close_at_quorum():
    """Three nodes never train (closed laptops): round 1 waits for the deadline, round 2 not."""
    dead = set(DEAD)
    sim = Sim(config(), idle=dead, rounds=2)
    sim.start()
    sim.run()
    assert set(sim.chain) == {1, 2}
    proposals = {
        r: min(t for t, _, m in sim.published if isinstance(m, Proposal) and m.round == r)
        for r in (1, 2)
    }
    assert proposals[1] >= COLLECT_DEADLINE_S
    round2_start = min(t for t, _, c in sim.submissions if c.round == 1)
    assert proposals[2] - round2_start < COLLECT_DEADLINE_S
    first = next(m for _, _, m in sim.published if isinstance(m, Proposal) and m.round == 2)
    assert len(first.included) >= collect_quorum(80, 7)
    assert not {a for a, _ in first.included} & dead


# --- committees with presumed-dead members ---------------------------------------------------


def find_base(pred) -> bytes:
    for i in itertools.count():
        base = blob_cid(b"dead base %d" % i).to_bytes()
        if pred(committee(TASK, 2, base), committee(TASK, 2, base, 1)):
            return base
    raise AssertionError("unreachable")


def alive(members) -> int:
    return sum(1 for a in members if a not in DEAD)


def after_round_one_with_dead(base: bytes, **kw) -> RoundMachine:
    """Round 1 heard the 6 LIVE authors only (DEAD sent nothing); round 2 starts on `base`."""
    m = machine(**kw)
    start(m, 1)
    closes_after(m, LIVE, 1)
    m.handle(ChainCommitted(1, 0, 0, BASES[1], base, bytes(32)))
    m.handle(RoundStarted(2, base, STAKES, 200.0))
    return m


def test_a_draw_without_a_live_quorum_is_redrawn_early():
    q = config().quorum
    base = find_base(lambda c0, c1: len(c0) >= q and alive(c0) < q and alive(c1) >= q and ME in c1)
    m = after_round_one_with_dead(base)
    assert m.phase == Phase.REDRAWING and m.counters["redraws:presumed-dead"] == 1
    assert m.next_deadline() == 200.0 + config().small_redraw_delay_s  # not redraw_timeout_s
    m.handle(Tick(m.next_deadline()))
    assert m.attempt == 1 and m.phase == Phase.COLLECTING
    # Off: the draw is taken as is, and stalls until the attempt times out.
    m = after_round_one_with_dead(base, skip_presumed_dead=False)
    assert m.attempt == 0 and m.phase in (Phase.COLLECTING, Phase.FOLLOWING)


def test_views_of_presumed_dead_leaders_are_skipped():
    q = config().quorum
    base = find_base(
        lambda c0, c1: alive(c0) >= q and ME in c0 and c0[0] in DEAD and c0[1] not in DEAD
    )
    m = after_round_one_with_dead(base)
    assert m.phase == Phase.COLLECTING
    closes_after(m, LIVE, 2, base)
    assert m.phase == Phase.VOTING and m.view == 1
    assert m.counters["views-skipped:presumed-dead"] == 1
    m = after_round_one_with_dead(base, skip_presumed_dead=False)
    closes_after(m, LIVE, 2, base)
    assert m.view == 0


def test_first_round_skips_nothing():
    m = machine()
    start(m, 1)
    assert m.attempt == 0 and m.phase == Phase.COLLECTING
    assert m.counters["redraws:presumed-dead"] == 0


# --- nodes that disagree about who is alive ----------------------------------------------------

# Five registered nodes and k = 6: every node is in every draw, q = 4. Three of them ("fast")
# moved on to round 2 before the other two's round-1 updates arrived, so they presume those
# two dead; the two ("slow") heard everyone. This is the equivocation test of
# tests/sim/test_robustness.py on a loaded machine (the ejected equivocator leaves 5 nodes).
FIVE = {a: 100 for a in ADDRS[:5]}
FAST, SLOW = ADDRS[:3], ADDRS[3:5]


def five_config(**kw) -> RoundConfig:
    return RoundConfig(
        task=TASK,
        committee_size=6,
        rule=RULE,
        collect_deadline_s=20.0,
        view_timeout_s=8.0,
        redraw_timeout_s=44.0,
        commit_fallback_delay_s=4.0,
        **kw,
    )


def after_round_one(address: bytes, heard: list[bytes], **kw) -> RoundMachine:
    m = RoundMachine(five_config(**kw), KEY_OF[address], DOMAIN)
    m.handle(RoundStarted(1, GENESIS, FIVE, 0.0))
    for author in heard:
        if author != address:
            feed(m, author, 1, GENESIS)
    m.handle(ChainCommitted(1, 0, 0, GENESIS, BASES[2], bytes(32)))
    return m


def round_two_with_split_guesses(**kw) -> Sim:
    sim = Sim(five_config(**kw), stakes=dict(FIVE), rounds=2)
    for a in FIVE:
        sim.machines[a] = after_round_one(a, FAST if a in FAST else list(FIVE), **kw)
        sim.push(100.0, a, RoundStarted(2, BASES[2], FIVE, 100.0))
    sim.now, sim.chain[1] = 100.0, ChainCommitted(1, 0, 0, GENESIS, BASES[2], bytes(32))
    sim.run(until=2000.0)
    return sim


def test_nodes_that_skipped_presumed_dead_draws_meet_the_others_again():
    """The fast nodes re-draw attempts 0 and 1 early (presumed dead) and sit in attempt 2
    while the slow ones run attempt 0: each attempt's messages reach only its own 3 or 2
    members. Attempts used to end `redraw_timeout_s` after each node's own start, so the
    fast nodes stayed two attempts ahead for ever and the round never committed. On the
    common schedule they leave attempt 2 when the slow nodes do and commit in attempt 3;
    with timeouts that grow, attempt 2 (which the fast nodes entered early) lasts until the
    slow nodes reach it, and its views are long enough for both to meet in one: they
    commit in attempt 2."""
    sim = round_two_with_split_guesses()
    assert all(sim.machines[a].counters["redraws:presumed-dead"] == 2 for a in FAST)
    assert all(sim.machines[a].counters["redraws:presumed-dead"] == 0 for a in SLOW)
    assert 2 in sim.chain and sim.chain[2].attempt == 2
    first_submit = min(t for t, _, c in sim.submissions if c.round == 2)
    # Every draw seats all five (>= q), so attempt a lasts 44 s x the growth of a stalled ones.
    cfg = five_config()
    starts = [100.0 + sum(44.0 * timeout_factor(cfg, s) for s in range(a)) for a in range(5)]
    assert starts[2] <= first_submit < starts[3]
    assert all(sim.machines[a].round == 2 and sim.machines[a].phase == Phase.ADVANCED for a in FIVE)
    # With fixed timeouts (as before growth) they meet one attempt later, in attempt 3.
    assert round_two_with_split_guesses(timeout_growth=1.0).chain[2].attempt == 3
    # Without the liveness guess nobody skips: attempt 0 commits.
    assert round_two_with_split_guesses(skip_presumed_dead=False).chain[2].attempt == 0


def test_attempts_end_on_the_common_schedule():
    """A node that agrees with everyone keeps the old timing: small draws after
    `small_redraw_delay_s`, a stalled attempt `redraw_timeout_s` after its start."""
    q = config().quorum
    base = find_base(lambda c0, c1: len(c0) >= q and alive(c0) < q and alive(c1) >= q and ME in c1)
    m = after_round_one_with_dead(base)
    assert m.phase == Phase.REDRAWING and m.next_deadline() == 200.0 + config().small_redraw_delay_s
    m.handle(Tick(m.next_deadline()))
    assert m.attempt == 1 and m.phase == Phase.COLLECTING
    # Attempt 1 was entered early (attempt 0 presumed dead): it ends where attempt 1 ends
    # for a node that did not skip, not redraw_timeout_s after this node entered it.
    # Attempt 0 was drawn >= q (a stalled attempt), so attempt 1 lasts longer (growth).
    timeout = config().redraw_timeout_s
    attempt_2_at = 200.0 + timeout + timeout * timeout_factor(config(), 1)
    m.handle(Tick(205.0 + timeout))
    assert m.attempt == 1
    m.handle(Tick(attempt_2_at - 0.001))
    assert m.attempt == 1
    m.handle(Tick(attempt_2_at))
    assert m.attempt == 2
    m = after_round_one_with_dead(base, skip_presumed_dead=False)
    m.handle(Tick(200.0 + timeout))
    assert m.attempt == 1


# --- straggler grace after the quorum ----------------------------------------------------------


def test_collection_stays_open_for_stragglers_after_the_quorum():
    """Round 1, all 10 expected: 8 updates make the quorum; collection then waits up to
    `straggler_grace_s` for the other 2 and closes as soon as all are held."""
    m = machine(straggler_grace_s=5.0)
    start(m, 1)
    m.handle(Tick(110.0))
    assert closes_after(m, OTHERS[:8], 1) is None  # quorum held at t=110: grace until 115
    assert m.next_deadline() == 115.0
    m.handle(Tick(114.0))
    assert closes_after(m, OTHERS[8:9], 1) is None  # 9 of 10
    m.handle(LocalUpdateReady(1, blob_cid(b"mine").to_bytes(), 10, 1.0))  # ours: all 10
    assert m.phase == Phase.VOTING
    assert m.counters["collect-closed:quorum"] == 1
    assert m.counters["collect-closed:grace-end"] == 0


def test_the_grace_ends_collection_when_a_straggler_never_comes():
    m = machine(straggler_grace_s=5.0)
    start(m, 1)
    m.handle(Tick(110.0))
    assert closes_after(m, OTHERS[:8], 1) is None
    m.handle(Tick(114.9))
    assert m.phase == Phase.COLLECTING
    m.handle(Tick(115.0))
    assert m.phase == Phase.VOTING
    assert m.counters["collect-closed:grace-end"] == 1
    assert m.counters["collect-closed:deadline"] == 0


def test_the_collect_deadline_still_bounds_the_grace():
    m = machine(straggler_grace_s=50.0)
    start(m, 1)  # draw at t=100: deadline at 160
    m.handle(Tick(150.0))
    assert closes_after(m, OTHERS[:8], 1) is None  # grace would end at 200
    assert m.next_deadline() == 100.0 + COLLECT_DEADLINE_S
    m.handle(Tick(160.0))
    assert m.phase == Phase.VOTING and m.counters["collect-closed:deadline"] == 1


# --- heartbeats: the collect quorum counts live participants -----------------------------------


def heartbeat(author: bytes, round_: int = 1) -> HeartbeatReceived:
    h = Heartbeat(TASK, round_, 0, "collecting", author).signed(KEYS[author], DOMAIN)
    return HeartbeatReceived(h, author)  # type: ignore[arg-type]


def test_silent_nodes_leave_the_collect_quorum_after_the_live_window():
    """First round (no history: all 10 expected), 3 nodes dead from the start. Heartbeats
    from the others; once the window has passed without a word from the dead, E = 7 and
    6 updates close collection instead of waiting for the deadline."""
    m = machine()
    start(m, 1)
    window = m.config.live_window_s
    for t in range(0, int(window) + 5, 5):  # beats every 5 s from t=100
        m.handle(Tick(100.0 + t))
        for author in LIVE:
            m.handle(heartbeat(author))
    assert [m.is_live(a) for a in DEAD] == [False] * 3
    assert all(m.is_live(a) for a in LIVE)
    assert closes_after(m, LIVE, 1) == collect_quorum(80, 7) == 6
    assert m.counters["collect-closed:deadline"] == 0


def test_beats_before_the_clock_or_the_round_do_not_start_the_window():
    """Beats that reach the machine before its first Tick (now = -inf) or before the round
    starts: judging silence from then would drop, in round 1, every node whose first beat
    of the round has not arrived yet. The window starts at the first beat of the round."""
    m = machine()
    for author in LIVE:  # no clock yet, no round
        m.handle(heartbeat(author, round_=0))
    m.handle(Tick(50.0))
    for author in LIVE:  # a clock, still no round
        m.handle(heartbeat(author, round_=0))
    start(m, 1)
    m.handle(Tick(100.0 + 2 * m.config.live_window_s))
    assert m.is_live(DEAD[0]), "no beat of the round yet: silence proves nothing"
    assert closes_after(m, LIVE, 1) is None  # still all 10 expected: 8 needed


def test_before_the_window_silence_proves_nothing():
    m = machine()
    start(m, 1)
    m.handle(Tick(100.0))
    for author in LIVE:
        m.handle(heartbeat(author))
    m.handle(Tick(100.0 + m.config.live_window_s - 1))
    assert m.is_live(DEAD[0])
    assert closes_after(m, LIVE, 1) is None  # still 10 expected: 8 needed


def test_a_node_falling_silent_during_collection_closes_it_at_the_live_quorum():
    """Heartbeats from everyone, then 3 nodes die mid-collection with 6 updates in: the
    LIVENESS timer re-checks the quorum when their window runs out."""
    m = machine()
    start(m, 1)
    m.handle(Tick(100.0))
    for author in OTHERS:
        m.handle(heartbeat(author))
    assert closes_after(m, LIVE, 1) is None  # 6 of 10 expected
    for t in (105.0, 110.0, 115.0):
        m.handle(Tick(t))
        for author in LIVE:
            m.handle(heartbeat(author))
    assert m.phase == Phase.COLLECTING
    assert m.next_deadline() == 100.0 + m.config.live_window_s  # the dead's window ends
    m.handle(Tick(m.next_deadline()))
    assert m.phase == Phase.VOTING


def test_live_quorum_off_keeps_every_presumed_alive_node():
    m = machine(live_quorum=False)
    start(m, 1)
    for t in range(0, 30, 5):
        m.handle(Tick(100.0 + t))
        for author in LIVE:
            m.handle(heartbeat(author))
    assert m.is_live(DEAD[0])
    assert closes_after(m, LIVE, 1) is None


def test_a_heartbeat_for_another_task_is_rejected():
    m = machine()
    start(m, 1)
    h = Heartbeat(b"\x09" * 32, 1, 0, "x", LIVE[0]).signed(KEYS[LIVE[0]], DOMAIN)
    out = m.handle(HeartbeatReceived(h, LIVE[0]))  # type: ignore[arg-type]
    assert [r.reason for r in out] == ["wrong-task"]
    out = m.handle(HeartbeatReceived(heartbeat(LIVE[0]).heartbeat, LIVE[1]))
    assert [r.reason for r in out] == ["bad-signer"]


# --- timeouts that grow: a slow network still commits -------------------------------------------


def slow_network(**kw) -> Sim:
    """Everything is slow: every message takes 6-7 s and an aggregation 16 s. A view needs
    the leader's aggregation, the proposal's trip and the members' recomputation before
    they vote (38.5 s), far more than the 15 s view timeout; a re-draw after 100 s starts
    the next committee from scratch (computations are per attempt)."""
    cfg = RoundConfig(
        task=TASK,
        committee_size=K,
        rule=RULE,
        collect_deadline_s=60.0,
        view_timeout_s=15.0,
        redraw_timeout_s=100.0,
        **kw,
    )
    sim = Sim(cfg, min_latency_s=6.0, max_latency_s=7.0, compute_s=16.0)
    sim.start()
    sim.run(until=1500.0)
    return sim


def test_timeouts_that_grow_commit_on_a_slow_network():
    """With fixed timeouts every view ends before its votes arrive, and every re-draw
    starts over the same way: no commit in 1,500 s. Growing by 1.5 per failed view and
    attempt, the third view (33.75 s) is long enough, and the round commits."""
    fixed = slow_network(timeout_growth=1.0)
    assert 1 not in fixed.chain
    assert max(m.counters["view-changes"] for m in fixed.machines.values()) > 20
    grown = slow_network()
    assert 1 in grown.chain
    assert grown.chain[1].attempt == 0 and grown.chain[1].view >= 1
    assert all(m.phase == Phase.ADVANCED for m in grown.machines.values())


def test_a_heartbeat_from_an_earlier_round_is_not_a_sign_of_life():
    m = machine()
    start(m, 1)
    m.handle(Tick(100.0))
    m.handle(heartbeat(LIVE[0], round_=0))
    assert m.counters["heartbeats:stale"] == 1 and LIVE[0] not in m.last_heard()
    m.handle(heartbeat(LIVE[0], round_=1))
    assert m.last_heard()[LIVE[0]] == 100.0


def test_views_that_fit_in_a_long_wait_are_counted_without_a_loop_per_view():
    """`_max_view`'s bound, with growth (capped) and fixed: whole views in the elapsed time."""
    for growth, expect in ((1.5, 3 + int((1e6 - 15 * (1 + 1.5 + 2.25)) // (15 * 3.375))),):
        m = machine(timeout_growth=growth, max_timeout_factor=3.375)
        start(m, 1)
        assert m._views_within(1e6) == expect
    m = machine(timeout_growth=1.0)
    start(m, 1)
    assert m._views_within(1e6) == int(1e6 // 15)
    assert m._views_within(44.9) == 2


def test_members_dead_since_last_round_are_seen_dead_by_their_heartbeats():
    """The 3 DEAD authored round 1 and then died: the history of authors still presumes
    them alive in round 2, their silent heartbeats do not. A round-2 draw that needs one of
    them for its quorum is re-drawn after the short delay instead of stalling until the
    attempt times out; with heartbeats off (`live_quorum`), the history alone keeps it."""
    q = config().quorum
    base = find_base(lambda c0, c1: len(c0) >= q and alive(c0) < q and alive(c1) >= q and ME in c1)

    def round_two(**kw) -> RoundMachine:
        m = machine(**kw)
        start(m, 1)
        for t in range(0, 15, 5):
            m.handle(Tick(100.0 + t))
            for author in OTHERS:
                m.handle(heartbeat(author))
        closes_after(m, OTHERS, 1)  # everyone, DEAD included, authored round 1
        m.handle(ChainCommitted(1, 0, 0, BASES[1], base, bytes(32)))
        for t in range(150, 201, 5):  # then only LIVE beats
            m.handle(Tick(float(t)))
            for author in LIVE:
                m.handle(heartbeat(author))
        m.handle(RoundStarted(2, base, STAKES, 200.0))
        return m

    m = round_two()
    assert not any(m.is_live(a) for a in DEAD) and all(m.is_live(a) for a in LIVE)
    assert m.phase == Phase.REDRAWING and m.counters["redraws:presumed-dead"] == 1
    m.handle(Tick(m.next_deadline()))
    assert m.attempt == 1 and m.phase == Phase.COLLECTING
    m = round_two(live_quorum=False)
    assert m.attempt == 0 and m.counters["redraws:presumed-dead"] == 0
