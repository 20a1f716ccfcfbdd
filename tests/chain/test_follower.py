"""CommitFollower: in order, exactly once, across restarts and transport failures."""

from __future__ import annotations

import trio

from p2pfl.chain.client import RoundCommitted
from p2pfl.chain.devnet import DevNet
from p2pfl.chain.follower import CommitFollower, SharedCommitReads
from p2pfl.chain.trio_client import TrioChain
from p2pfl.errors import ChainError

from .conftest import GENESIS, TASK, commit


def test_poll_is_exactly_once_and_resumes_from_state(net: DevNet, tmp_path) -> None:
    state = tmp_path / "follower.json"
    f = CommitFollower(
        net.admin, TASK, start_block=net.deployment.block, state_path=state, chunk_blocks=3
    )
    assert f.poll() == []
    r1 = commit(net, 1, GENESIS)
    r2 = commit(net, 2, r1.result)
    got = f.poll()
    assert [(e.round, e.result) for e in got] == [(1, r1.result), (2, r2.result)]
    assert f.poll() == []
    # a restarted follower resumes from the state file
    r3 = commit(net, 3, r2.result)
    again = CommitFollower(net.admin, TASK, start_block=net.deployment.block, state_path=state)
    assert [e.round for e in again.poll()] == [3]
    # even a follower whose block cursor was rewound delivers nothing twice
    rewound = CommitFollower(net.admin, TASK, start_block=net.deployment.block, state_path=state)
    rewound.last_block = net.deployment.block
    assert rewound.poll() == []
    assert r3.tx.block_number <= rewound.last_block


def test_followers_sharing_reads_each_get_every_commit_once(net: DevNet) -> None:
    """Followers of one process sharing their reads (a simulator's shard): each delivers
    every commit once and in order, as alone, while the chain is read once for all of
    them; a head read older than `fresh_s` is read again, so a new commit is seen."""
    shared = SharedCommitReads(fresh_s=3600.0)
    followers = [
        CommitFollower(shared.source(net.admin), TASK, start_block=net.deployment.block)
        for _ in range(3)
    ]
    r1 = commit(net, 1, GENESIS)
    r2 = commit(net, 2, r1.result)
    for f in followers:
        assert [(e.round, e.result) for e in f.poll()] == [(1, r1.result), (2, r2.result)]
        assert f.poll() == []
    assert shared.reads == 2  # one head read, one getLogs: not one of each per follower
    commit(net, 3, r2.result)
    assert [f.poll() for f in followers] == [[], [], []]  # the head is still the cached one
    shared.fresh_s = 0.0
    assert [[e.round for e in f.poll()] for f in followers] == [[3], [3], [3]]
    assert shared.reads == 2 + 3 + 1  # a head read each (none is fresh), one getLogs


def test_follow_asks_a_fresh_shared_head_before_it_polls(net: DevNet) -> None:
    """A follower on a shared source polls (a worker-thread hop) only when the shared head
    is stale or shows a block it has not scanned: polls that would find nothing new cost
    nothing; a new commit is still delivered once the head is read again."""
    shared = SharedCommitReads(fresh_s=3600.0)
    f = CommitFollower(shared.source(net.admin), TASK, start_block=net.deployment.block)
    r1 = commit(net, 1, GENESIS)
    assert [e.round for e in f.poll()] == [1]  # reads and caches the head
    polls = {"n": 0}
    real_fetch = f.fetch

    def counted() -> tuple[list[RoundCommitted], int]:
        polls["n"] += 1
        return real_fetch()

    f.fetch = counted  # type: ignore[method-assign]
    seen: list[RoundCommitted] = []

    async def main() -> None:
        async def on_commit(ev: RoundCommitted) -> None:
            seen.append(ev)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(f.follow, on_commit, 0.01)
            await trio.sleep(0.3)  # ~30 polls' time: the cached head is the scanned one
            assert polls["n"] == 0
            commit(net, 2, r1.result)
            shared.fresh_s = 0.0  # the cached head goes stale: the next poll reads the chain
            with trio.fail_after(10):
                while not seen:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert polls["n"] >= 1
    assert [e.round for e in seen] == [2]


def test_follow_under_trio_survives_transport_errors(net: DevNet) -> None:
    r1 = commit(net, 1, GENESIS)
    r2 = commit(net, 2, r1.result)
    f = CommitFollower(net.admin, TASK, start_block=net.deployment.block)
    real_commits = net.admin.commits
    failures = {"left": 2}

    def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ChainError("chain unreachable (simulated)")
        return real_commits(*args, **kwargs)

    net.admin.commits = flaky  # type: ignore[method-assign]
    seen: list[RoundCommitted] = []

    async def main() -> None:
        async def on_commit(ev: RoundCommitted) -> None:
            seen.append(ev)

        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(f.follow, on_commit, 0.01)
                while len(seen) < 2:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        del net.admin.commits
    assert failures["left"] == 0
    assert [e.round for e in seen] == [1, 2] and seen[1].result == r2.result


def test_consumer_crash_redelivers(net: DevNet) -> None:
    commit(net, 1, GENESIS)
    f = CommitFollower(net.admin, TASK, start_block=net.deployment.block)

    async def boom(ev: RoundCommitted) -> None:
        raise RuntimeError("consumer died")

    async def main() -> None:
        try:
            await f.follow(boom, 0.01)
        except RuntimeError:
            pass

    trio.run(main)
    assert [e.round for e in f.poll()] == [1]  # not acknowledged, so delivered again


async def test_trio_chain_wrapper(net: DevNet) -> None:
    chain = TrioChain(net.admin)
    info = await chain.task_info(TASK)
    assert info.last_result == GENESIS
    async with trio.open_nursery() as nursery:  # concurrent calls are serialised, not broken
        for _ in range(4):
            nursery.start_soon(chain.block_number)
