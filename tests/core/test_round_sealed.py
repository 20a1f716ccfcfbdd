"""Sealed updates in the round machine (spec protocol/spec/sealing.md): wraps in updates,
Rewraps on a re-draw, who is usable in an attempt, and the checks on both messages."""

from __future__ import annotations

from dataclasses import replace

from p2pfl.core.messages import Proposal, Rewrap, Update
from p2pfl.core.round import Phase, RoundConfig, RoundMachine
from p2pfl.core.round_events import (
    DeltaAvailable,
    Fetch,
    LocalUpdateReady,
    Publish,
    RoundStarted,
    StartTraining,
    Tick,
    WrapKey,
    WrapsReady,
    event_for,
)
from p2pfl.core.sealed import DELTA_AAD_TAG, covers, delta_aad, foreign_members, wrap_for

from .round_sim import (
    ADDRS,
    DOMAIN,
    FAKE_WRAP,
    GENESIS,
    KEY_OF,
    RULE,
    STAKES,
    TASK_SMALL,
    Sim,
    committee,
    delta_cid,
    find_task,
    received,
)

K = 7
TASK7 = find_task(lambda t: len(committee(t, 1, GENESIS)) == 7)
C7 = committee(TASK7, 1, GENESIS)


def _stalls_then_redraws(task: bytes) -> bool:
    """Attempt 0 full but unable to certify once all but 4 of its members are silent;
    attempt 1 with a quorum of the others, seating nodes attempt 0 did not."""
    first, second = committee(task, 1, GENESIS), committee(task, 1, GENESIS, 1)
    dead = set(first[: len(first) - 4])
    return len(first) >= 5 and len(set(second) - dead) >= 5 and bool(set(second) - set(first))


# A re-draw (attempt 0 stalls: `redraw_timeout_s`), the way a sealed update's wraps miss
# members: attempt 0's committee is the one they are made for.
TASK_REDRAW = find_task(_stalls_then_redraws)
FIRST = committee(TASK_REDRAW, 1, GENESIS)
DEAD = set(FIRST[: len(FIRST) - 4])


def config(task: bytes = TASK7, **kw) -> RoundConfig:
    return RoundConfig(task=task, committee_size=K, rule=RULE, sealed=True, **kw)


def committed_proposal(sim: Sim, round_: int = 1) -> Proposal:
    chained = sim.chain[round_]
    return next(
        m
        for _, _, m in sim.published
        if isinstance(m, Proposal)
        and m.result == chained.result
        and m.contributors_root == chained.contributors_root
    )


def test_delta_aad_and_wrap_helpers() -> None:
    task, signer = bytes(range(32)), b"\x01" * 20
    aad = delta_aad(task, 258, signer)
    assert aad == DELTA_AAD_TAG + task + (258).to_bytes(8, "big") + signer
    assert delta_aad(task, 259, signer) != aad
    wraps = ((b"\x02" * 20, b"a" * 80), (b"\x03" * 20, b"b" * 80))
    assert wrap_for(wraps, b"\x03" * 20) == b"b" * 80 and wrap_for(wraps, b"\x04" * 20) is None
    assert foreign_members(wraps, {b"\x02" * 20}) == [b"\x03" * 20]
    assert covers([b"\x01" * 20, b"\x02" * 20], b"\x01" * 20, {b"\x02" * 20})
    assert not covers([b"\x04" * 20, b"\x02" * 20], b"\x01" * 20, {b"\x02" * 20})


def test_a_sealed_round_wraps_to_the_committee_and_fetches_with_wraps() -> None:
    sim = Sim(config())
    sim.start()
    sim.run()
    assert 1 in sim.chain
    updates = [m for _, _, m in sim.published if isinstance(m, Update)]
    assert len(updates) == len(ADDRS)
    for u in updates:  # the author and the attempt-0 committee, nobody else
        assert {m for m, _ in u.wraps} == {u.signer, *C7}
    assert sim.fetches and all(f.wrap == FAKE_WRAP for _, f in sim.fetches)
    assert all(member in C7 for member, _ in sim.fetches)  # followers fetch nothing
    assert len(committed_proposal(sim).included) == len(ADDRS)


def test_a_redraw_commits_through_rewraps_and_leaves_a_silent_author_out() -> None:
    first, second = FIRST, committee(TASK_REDRAW, 1, GENESIS, 1)
    # An author off the second draw whose own wraps miss a member of it.
    quiet = next(
        a for a in ADDRS if a not in second and a not in DEAD and set(second) - set(first) - {a}
    )
    sim = Sim(config(TASK_REDRAW), silent=DEAD, no_rewrap={quiet})
    sim.start()
    sim.run()
    assert sim.chain[1].attempt == 1
    rewraps = [m for _, _, m in sim.published if isinstance(m, Rewrap)]
    assert rewraps and quiet not in {r.signer for r in rewraps}
    for r in rewraps:  # fresh wraps for members the update missed, never the delta again
        assert r.attempt == 1 and {m for m, _ in r.wraps} <= set(second) - set(first)
    included = {a for a, _ in committed_proposal(sim).included}
    assert quiet not in included
    assert included == set(ADDRS) - DEAD - {quiet}


def test_a_small_first_draw_is_wrapped_past_at_once() -> None:
    """Attempt 0 below quorum is left the moment it is drawn, so the round opens at attempt
    1: every update is wrapped for attempt 1's members from the start, and no Rewrap is
    needed (sealing.md §2)."""
    second = committee(TASK_SMALL, 1, GENESIS, 1)
    sim = Sim(config(TASK_SMALL), train_s=lambda i: 0.5 + 0.1 * i)
    sim.start()
    sim.run()
    assert sim.chain[1].attempt == 1
    assert not [m for _, _, m in sim.published if isinstance(m, Rewrap)]
    updates = [m for _, _, m in sim.published if isinstance(m, Update)]
    assert len(updates) == len(ADDRS)
    for u in updates:
        assert {m for m, _ in u.wraps} == {u.signer, *second}
    assert len(committed_proposal(sim).included) == len(ADDRS)


def test_a_wrap_that_does_not_open_is_counted_and_the_author_left_out() -> None:
    bad = next(a for a in ADDRS if a not in C7)
    sim = Sim(config(), bad_wraps={bad})
    sim.start()
    sim.run()
    assert 1 in sim.chain
    assert bad not in {a for a, _ in committed_proposal(sim).included}
    assert (bad, "unavailable") in committed_proposal(sim).rejected
    for member in C7:
        assert sim.machines[member].counters["rejected:unwrap-failed"] == 1


def machine_in_round(address: bytes = C7[0], task: bytes = TASK7, **kw) -> RoundMachine:
    m = RoundMachine(config(task, **kw), KEY_OF[address], DOMAIN)
    actions = m.handle(RoundStarted(1, GENESIS, STAKES, 0.0))
    (train,) = [a for a in actions if isinstance(a, StartTraining)]
    assert train.sealed and train.recipients[0] == address  # itself first, then the committee
    assert set(train.recipients) == {address, *C7}
    return m


def update_by(author: bytes, wraps: tuple[tuple[bytes, bytes], ...]) -> Update:
    u = Update(TASK7, 1, GENESIS, delta_cid(author, 1), 10, 1.0, b"", author, wraps=wraps)
    return u.signed(KEY_OF[author], DOMAIN)  # type: ignore[return-value]


def test_update_checks_of_a_sealed_task() -> None:
    m = machine_in_round()
    author = next(a for a in ADDRS if a not in C7)
    stranger = next(a for a in ADDRS if a not in C7 and a != author)
    good = tuple(sorted((x, FAKE_WRAP) for x in {author, *C7}))
    cases = [
        ((), "not-sealed"),
        (tuple(sorted([*good, (stranger, FAKE_WRAP)])), "bad-wraps"),
    ]
    for wraps, reason in cases:
        m.handle(received(update_by(author, wraps)))
        assert m.counters[f"rejected:{reason}"] == 1, reason
    actions = m.handle(received(update_by(author, good)))
    (fetch,) = [a for a in actions if isinstance(a, Fetch)]
    assert fetch.wrap == FAKE_WRAP
    plain = RoundMachine(replace(config(), sealed=False), KEY_OF[C7[0]], DOMAIN)
    plain.handle(RoundStarted(1, GENESIS, STAKES, 0.0))
    plain.handle(received(update_by(author, good)))
    assert plain.counters["rejected:unexpected-wraps"] == 1


def test_a_failed_open_is_a_counted_rejection_with_its_reason() -> None:
    m = machine_in_round()
    author = next(a for a in ADDRS if a not in C7)
    u = update_by(author, tuple(sorted((x, FAKE_WRAP) for x in {author, *C7})))
    m.handle(received(u))
    actions = m.handle(DeltaAvailable(author, u.delta, False, "undecryptable"))
    assert m.counters["rejected:undecryptable"] == 1
    assert any(getattr(a, "reason", "") == "undecryptable" for a in actions)


def rewrap_by(author: bytes, attempt: int, members: list[bytes]) -> Rewrap:
    wraps = tuple((x, FAKE_WRAP) for x in sorted(members))
    r = Rewrap(TASK_REDRAW, 1, attempt, delta_cid(author, 1), wraps, author)
    return r.signed(KEY_OF[author], DOMAIN)  # type: ignore[return-value]


def test_rewrap_checks_and_a_new_member_fetches_once_its_wrap_arrives() -> None:
    first, second = FIRST, committee(TASK_REDRAW, 1, GENESIS, 1)
    newcomer = next(a for a in second if a not in first)
    author = next(a for a in ADDRS if a not in second and a != newcomer)
    cfg = config(TASK_REDRAW)
    m = RoundMachine(cfg, KEY_OF[newcomer], DOMAIN)
    m.handle(RoundStarted(1, GENESIS, STAKES, 0.0))
    assert m.attempt == 0 and m.phase is Phase.FOLLOWING
    wraps = tuple(sorted((x, FAKE_WRAP) for x in {author, *first}))
    u = Update(TASK_REDRAW, 1, GENESIS, delta_cid(author, 1), 10, 1.0, b"", author, wraps=wraps)
    m.handle(received(u.signed(KEY_OF[author], DOMAIN)))
    actions = m.handle(event_for(rewrap_by(author, 1, list(second)), author))  # type: ignore[arg-type]
    assert m.counters["rejected:bad-wraps"] == 0 and not any(
        isinstance(a, Fetch) for a in actions
    )  # attempt 1 not drawn yet: nothing to fetch
    off = next(a for a in ADDRS if a not in second)
    m.handle(event_for(rewrap_by(author, 1, list(second)[:1]), author))  # type: ignore[arg-type]
    assert m.counters["rejected:duplicate"] == 1  # the first one counts
    other = next(a for a in ADDRS if a not in (author, newcomer))
    m.handle(event_for(rewrap_by(other, 1, [off]), other))  # type: ignore[arg-type]
    assert m.counters["rejected:bad-wraps"] == 1
    m.handle(event_for(rewrap_by(other, 3, list(second)), other))  # type: ignore[arg-type]
    assert m.counters["rejected:future-attempt"] == 1
    actions = m.handle(Tick(cfg.redraw_timeout_s))  # attempt 0 stalled: we sit on attempt 1
    assert m.attempt >= 1 and m.phase is Phase.COLLECTING
    fetches = [a for a in actions if isinstance(a, Fetch)]
    assert [(f.author, f.wrap) for f in fetches] == [(author, FAKE_WRAP)]


def test_our_own_update_is_rewrapped_on_a_redraw() -> None:
    first, second = FIRST, committee(TASK_REDRAW, 1, GENESIS, 1)
    me = next(a for a in ADDRS if set(second) - set(first) - {a})
    cfg = config(TASK_REDRAW)
    m = RoundMachine(cfg, KEY_OF[me], DOMAIN)
    (train,) = [
        a for a in m.handle(RoundStarted(1, GENESIS, STAKES, 0.0)) if isinstance(a, StartTraining)
    ]
    wraps = tuple((x, FAKE_WRAP) for x in sorted(train.recipients))
    m.handle(LocalUpdateReady(1, delta_cid(me, 1), 10, 1.0, b"", wraps))
    actions = m.handle(Tick(cfg.redraw_timeout_s))  # attempt 0 never certified
    (wrap_key,) = [a for a in actions if isinstance(a, WrapKey)]
    assert wrap_key.attempt == m.attempt == 1
    assert set(wrap_key.recipients) == set(second) - set(first) - {me}
    out = m.handle(
        WrapsReady(1, 1, wrap_key.delta, tuple((x, FAKE_WRAP) for x in sorted(wrap_key.recipients)))
    )
    (publish,) = [a for a in out if isinstance(a, Publish)]
    assert isinstance(publish.message, Rewrap) and publish.message.verify(DOMAIN) == me
    assert m.counters["rewraps-sent"] == 1


def test_a_rewrap_replayed_from_an_old_round_is_stale_and_changes_nothing() -> None:
    first, second = FIRST, committee(TASK_REDRAW, 1, GENESIS, 1)
    newcomer = next(a for a in second if a not in first)
    author = next(a for a in ADDRS if a not in second and a != newcomer)
    m = RoundMachine(config(TASK_REDRAW), KEY_OF[newcomer], DOMAIN)
    m.handle(RoundStarted(1, GENESIS, STAKES, 0.0))
    old = rewrap_by(author, 1, list(second))
    replayed = replace(old, round=0, signature=b"")
    replayed = replayed.signed(KEY_OF[author], DOMAIN)  # type: ignore[assignment]
    m.handle(event_for(replayed, author))  # type: ignore[arg-type]
    assert m.counters["rejected:stale-round"] == 1
    assert m.counters["rewraps-accepted"] == 0


def test_a_member_whose_registered_key_takes_no_wrap_does_not_block_updates() -> None:
    """A registered X25519 key nothing can be wrapped to (RoundStarted.unsealable, read
    alike by every node from the registry) is not required in the wraps."""
    author = next(a for a in ADDRS if a not in C7)
    broken = C7[1]
    wraps = tuple(sorted((x, FAKE_WRAP) for x in {author, *C7} - {broken}))
    u = update_by(author, wraps)
    for unsealable, usable in ((frozenset(), False), (frozenset({broken}), True)):
        m = RoundMachine(config(), KEY_OF[C7[0]], DOMAIN)
        m.handle(RoundStarted(1, GENESIS, STAKES, 0.0, unsealable=unsealable))
        m.handle(received(u))
        assert m._usable(u) is usable
