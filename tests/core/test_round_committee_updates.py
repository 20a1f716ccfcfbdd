"""Updates to the committee (RoundConfig.updates_to_committee, spec round.md): an author
sends its Update and Rewraps to the attempt's members directly, a re-draw's new members
get them when drawn, members send proposals and votes to each other alone, and nodes off
the committee learn the round's contributors from the certified proposal."""

from __future__ import annotations

from p2pfl.core.messages import Commit, Proposal, Rewrap, Update, Vote
from p2pfl.core.round import RoundConfig
from p2pfl.core.round_events import RoundStarted, UpdateReceived

from .round_sim import ADDRS, GENESIS, RULE, STAKES, TASK_SMALL, Sim, committee, find_task

K = 7
TASK7 = find_task(lambda t: len(committee(t, 1, GENESIS)) == 7)
C7 = committee(TASK7, 1, GENESIS)
# Attempt 0 full, attempt 1 full with members attempt 0 did not seat (a re-draw brings
# newcomers that hold nothing yet).
TASK_NEW_MEMBERS = find_task(
    lambda t: (
        len(committee(t, 1, GENESIS)) >= 5
        and len(committee(t, 1, GENESIS, 1)) >= 5
        and len(set(committee(t, 1, GENESIS, 1)) - set(committee(t, 1, GENESIS))) >= 2
    )
)


def config(task: bytes = TASK7, **kw) -> RoundConfig:
    return RoundConfig(task=task, committee_size=K, rule=RULE, updates_to_committee=True, **kw)


def sends(sim: Sim, kind: type) -> list[tuple[bytes, object, tuple[bytes, ...] | None]]:
    return [(src, m, to) for _, src, m, to in sim.sent if isinstance(m, kind)]


class RecordingSim(Sim):
    """The test Sim, keeping each published message's recipients (`Publish.to`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sent: list[tuple[float, bytes, object, tuple[bytes, ...] | None]] = []

    def broadcast(self, src: bytes, message, to=None) -> None:
        self.sent.append((self.now, src, message, to))
        super().broadcast(src, message, to)


def test_updates_go_to_the_committee_only_and_the_round_commits() -> None:
    sim = RecordingSim(config(), rounds=2)
    sim.start()
    sim.run()
    assert 1 in sim.chain and 2 in sim.chain
    for src, update, to in sends(sim, Update):
        assert to is not None, "an update was gossiped"
        base = sim.chain[update.round - 1].result if update.round > 1 else GENESIS
        members = committee(TASK7, update.round, base)
        assert set(to) == set(members) - {src}
    # Proposals and votes go to the attempt's other members; what every node needs, the
    # certificate and the proposal it certifies (the round's contributors), is gossiped.
    direct = [(src, m, to) for kind in (Proposal, Vote) for src, m, to in sends(sim, kind)]
    assert any(isinstance(m, Vote) for _, m, to in direct if to is not None)
    for src, message, to in direct:
        base = sim.chain[message.round - 1].result if message.round > 1 else GENESIS
        members = committee(TASK7, message.round, base, message.attempt)
        if to is not None:
            assert set(to) == set(members) - {src}
            continue
        assert isinstance(message, Proposal), "a vote was gossiped"
        committed = sim.chain[message.round]
        assert (message.result, message.contributors_root) == (
            committed.result,
            committed.contributors_root,
        ), "a proposal gossiped that the round did not commit"
    for round_ in (1, 2):
        gossiped = [m for m in sends(sim, Proposal) if m[1].round == round_ and m[2] is None]
        assert gossiped, f"round {round_}'s certified proposal was not gossiped"
    assert sends(sim, Commit) and all(to is None for _, _, to in sends(sim, Commit))
    included = {a for a, _ in next(m for _, m, _ in sends(sim, Proposal)).included}
    assert included == set(ADDRS)


def test_nodes_off_the_committee_hold_the_committed_proposal_and_no_vote() -> None:
    """A node off the committee hears no vote and no proposal of a view, only the
    certified proposal with its certificate: enough to rebuild the round's reward tree."""
    sim = RecordingSim(config(), rounds=1)
    sim.start()
    sim.run()
    follower = sim.machines[next(a for a in ADDRS if a not in C7)]
    member = sim.machines[C7[0]]
    assert member.counters["votes-accepted"] > 0
    assert follower.counters["votes-accepted"] == 0
    assert follower.counters["certificates-seen"] == 1
    held = [s for s in follower._statements.values() if isinstance(s, Proposal)]
    assert [p.result for p in held] == [sim.chain[1].result]


def test_only_a_member_takes_its_authors_as_the_next_rounds_history() -> None:
    """A node off the committee heard no update, so it expects every registered node next
    round (as in round 1) instead of presuming the authors it never heard from dead; a
    member expects the authors whose updates reached it."""
    idle = next(a for a in ADDRS if a not in C7)
    sim = RecordingSim(config(), idle={idle})
    sim.start()
    sim.run()
    assert 1 in sim.chain and idle not in {a for a, _ in sim_proposal(sim).included}
    follower = next(a for a in ADDRS if a not in C7 and a != idle)
    member = C7[0]
    for address in (follower, member):
        sim.machines[address].handle(RoundStarted(2, sim.chain[1].result, STAKES, sim.now))
    assert sim.machines[follower]._expected_participants() == len(ADDRS)
    assert sim.machines[member]._expected_participants() == len(ADDRS) - 1


class PartlyDeafSim(RecordingSim):
    """One member hears the updates of two authors only (the rest were pushed to others
    and the round commits before its relay brings them)."""

    deaf: bytes = b""

    def deliver(self, dst: bytes, event) -> None:
        if (
            dst == self.deaf
            and isinstance(event, UpdateReceived)
            and event.update.signer not in ADDRS[:2]
        ):
            return
        super().deliver(dst, event)


def test_a_member_takes_the_committed_proposals_authors_as_heard() -> None:
    """A member that held only some of the round's updates when the round committed still
    expects every author the committed proposal included next round (else it would close
    its next collection on those few)."""
    sim = PartlyDeafSim(config())
    sim.deaf = next(m for m in C7 if m not in ADDRS[:2])
    sim.start()
    sim.run()
    deaf = sim.machines[sim.deaf]
    assert 1 in sim.chain and len(sim_proposal(sim).included) == len(ADDRS)
    assert deaf._drawn_member and deaf.counters["rounds-committed"] == 1
    deaf.handle(RoundStarted(2, sim.chain[1].result, STAKES, sim.now))
    assert deaf._expected_participants() == len(ADDRS)


def sim_proposal(sim: Sim) -> Proposal:
    chained = sim.chain[1]
    return next(
        m for _, _, m in sim.published if isinstance(m, Proposal) and m.result == chained.result
    )


def test_a_redraw_sends_each_update_to_the_new_members_once() -> None:
    first = committee(TASK_NEW_MEMBERS, 1, GENESIS)
    second = committee(TASK_NEW_MEMBERS, 1, GENESIS, 1)
    # Attempt 0 cannot certify: more than a third of its members never answer.
    dead = set(first[: len(first) - 4])
    sim = RecordingSim(config(TASK_NEW_MEMBERS), silent=dead)
    sim.start()
    sim.run()
    assert sim.chain[1].attempt >= 1
    by_author: dict[bytes, list[tuple[bytes, ...]]] = {}
    for src, _, to in sends(sim, Update):
        by_author.setdefault(src, []).append(to)
    newcomers = set(second) - set(first)
    for author, tos in by_author.items():
        assert tos[0] is not None and set(tos[0]) == set(first) - {author}
        later = [m for to in tos[1:] for m in to]
        assert len(later) == len(set(later))  # nobody is sent the update twice
        assert newcomers - {author} <= set(later)
    # The new members collected the updates they never saw at attempt 0.
    live_newcomer = next(a for a in newcomers if a not in dead)
    assert sim.machines[live_newcomer].counters["updates-accepted"] >= len(ADDRS) - len(dead) - 1


def test_a_sealed_redraw_sends_rewraps_to_the_attempts_members() -> None:
    first = committee(TASK_NEW_MEMBERS, 1, GENESIS)
    dead = set(first[: len(first) - 4])  # attempt 0 cannot certify
    sim = RecordingSim(config(TASK_NEW_MEMBERS, sealed=True), silent=dead)
    sim.start()
    sim.run()
    assert sim.chain[1].attempt >= 1
    rewraps = sends(sim, Rewrap)
    assert rewraps
    for src, rewrap, to in rewraps:
        members = committee(TASK_NEW_MEMBERS, 1, GENESIS, rewrap.attempt)  # type: ignore[attr-defined]
        assert to is not None and set(to) == set(members) - {src}


def test_a_small_first_draw_sends_updates_to_the_next_draws_members_at_once() -> None:
    """Everyone draws alike, so a draw below quorum is left the moment it is drawn: each
    update goes to attempt 1's members from the start (100 simulated nodes: a small first
    draw had held every update ~4 s of a ~10 s round), once, and no Rewrap follows."""
    task = TASK_SMALL
    second = committee(task, 1, GENESIS, 1)
    cfg = config(task, sealed=True)
    sim = RecordingSim(cfg, train_s=lambda i: 0.5 + 0.1 * i)  # all trained within 2 s
    sim.start()
    sim.run()
    assert sim.chain[1].attempt == 1
    assert not sends(sim, Rewrap)
    updates = [(t, src, to) for t, src, m, to in sim.sent if isinstance(m, Update)]
    assert len(updates) == len(ADDRS)  # each author sends once
    for t, src, to in updates:
        assert to is not None and set(to) == set(second) - {src}
        assert t < cfg.small_redraw_delay_s
    assert len(sim_proposal(sim).included) == len(ADDRS)


def test_gossip_remains_the_default() -> None:
    sim = RecordingSim(RoundConfig(task=TASK7, committee_size=K, rule=RULE))
    sim.start()
    sim.run()
    assert 1 in sim.chain
    assert sends(sim, Update) and all(to is None for _, _, to in sends(sim, Update))
