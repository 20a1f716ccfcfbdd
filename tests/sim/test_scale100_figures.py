"""`sim.bench scale100`'s CPU figures from a run's summary (no run: the summary is given)."""

import pytest

from sim.bench.scale100 import CORES, _round_cpu, ratio_if_per_node_cost_held
from sim.processes import Shard, _mark_first_commit


def test_round_cpu_counts_loops_and_training_over_committed_rounds():
    summary = {
        "rounds_committed": 4,
        "shards": [
            {"wall_s": 10.0, "user_cpu_s": 6.0, "system_cpu_s": 2.0, "train_user_cpu_s": 4.0},
            {"wall_s": 10.0, "user_cpu_s": 5.0, "system_cpu_s": 1.0, "train_user_cpu_s": 2.0},
            {"shard": 2},  # a shard without figures (it never noted its CPU twice) counts nothing
        ],
    }
    total, loops = _round_cpu(summary)
    assert total == pytest.approx((6 + 2 + 4 + 5 + 1 + 2) / 4)
    assert loops == pytest.approx((6 + 2 + 5 + 1) / 4)


def test_round_cpu_takes_the_rounds_after_the_first_commit_when_marked():
    """With a mark at the first commit (`steady_*`), the CPU a round leaves out start-up and
    round 1: over the rounds after `steady_from_round`."""
    shard = {"wall_s": 10.0, "user_cpu_s": 9.0, "system_cpu_s": 3.0, "train_user_cpu_s": 5.0}
    steady = {
        "steady_wall_s": 6.0,
        "steady_user_cpu_s": 4.0,
        "steady_system_cpu_s": 2.0,
        "steady_train_user_cpu_s": 3.0,
    }
    summary = {"rounds_committed": 5, "steady_from_round": 2, "shards": [shard | steady]}
    total, loops = _round_cpu(summary)
    assert total == pytest.approx((4 + 2 + 3) / 3)
    assert loops == pytest.approx((4 + 2) / 3)
    # The first commit was the last: no rounds after it, so the whole run's figures.
    summary["steady_from_round"] = 5
    assert _round_cpu(summary) == pytest.approx(((9 + 3 + 5) / 5, (9 + 3) / 5))


def test_shard_figures_split_at_the_first_commit_mark(tmp_path):
    """Three CPU marks (go, first commit, last commit): the run's figures from the first,
    the `steady_*` ones from the second; the mark is taken once, at the first commit seen."""
    shard = Shard(0, [], tmp_path / "log")
    shard.cpu_marks = [(0.0, 1.0, 0.5, 0.0), (4.0, 3.0, 1.0, 2.0), (10.0, 9.0, 2.5, 6.0)]
    got = shard.figures()
    assert got["wall_s"] == 10.0 and got["user_cpu_s"] == 8.0 and got["train_user_cpu_s"] == 6.0
    assert got["steady_wall_s"] == 6.0 and got["steady_user_cpu_s"] == 6.0
    assert got["steady_system_cpu_s"] == 1.5 and got["steady_train_user_cpu_s"] == 4.0
    shard.cpu_marks = shard.cpu_marks[::2]
    assert "steady_wall_s" not in shard.figures()

    class Marked:
        marks = 0

        def note_cpu(self) -> None:
            self.marks += 1

    seen: list[int] = []
    shards = [Marked(), Marked()]
    for round_ in (2, 3, 5):
        _mark_first_commit(round_, seen, shards)
    assert seen == [2] and [s.marks for s in shards] == [1, 1]


def test_ratio_if_per_node_cost_held_scales_the_loops_not_the_training():
    """10 nodes: 3 core-s a round, 2 of them the loops, a 2 s median round. 100 nodes each
    costing the loops what one of the 10 does: 20 + 1 core-s on the machine's cores."""
    assert ratio_if_per_node_cost_held((3.0, 2.0), 2.0) == pytest.approx((10 * 2 + 1) / CORES / 2)


def test_round_cpu_is_none_without_shards_or_commits():
    assert _round_cpu({"rounds_committed": 3, "shards": []}) is None
    shard = {"wall_s": 1.0, "user_cpu_s": 1.0, "system_cpu_s": 0.0}
    assert _round_cpu({"rounds_committed": 0, "shards": [shard]}) is None


def test_the_deployed_comparison_gives_ten_nodes_the_same_total_data():
    """`sim.bench scale100_des`: 10 nodes hold 10x the images of the scenario's 100 each and
    train 10x as long; the scenario loads with either set of keys."""
    from sim.bench.scale100_des import SCENARIO, overrides
    from sim.des.scenario import load_des_scenario

    large = load_des_scenario(SCENARIO, overrides(100, 20.0))
    small = load_des_scenario(SCENARIO, overrides(10, 20.0))
    assert (large.nodes, small.nodes) == (100, 10)
    assert large.nodes * large.train.n_samples == small.nodes * small.train.n_samples == 60_000
    assert small.train.median_s == pytest.approx(10 * large.train.median_s)
    assert small.network.bandwidth_mbit == large.network.bandwidth_mbit == 20.0
    assert small.committee.updates == "committee"


def test_the_linear_comparison_is_scale100_with_a_linear_model():
    """`sim.bench scale100_linear` changes the model only: 7,850 parameters (31 KB deltas)."""
    from dataclasses import replace

    from p2pfl.train.models import build_model
    from sim.bench.scale100 import SCENARIO as MLP_SCENARIO
    from sim.bench.scale100_linear import SCENARIO
    from sim.scenario import load_scenario

    mlp, linear = load_scenario(MLP_SCENARIO), load_scenario(SCENARIO)
    assert replace(linear, name=mlp.name, model=mlp.model) == mlp
    assert linear.model.name == mlp.model.name == "mlp"

    def parameters(section) -> int:
        model = build_model(section.name, **section.kwargs)
        return sum(p.numel() for p in model.parameters())

    assert parameters(linear.model) == 28 * 28 * 10 + 10
    assert parameters(mlp.model) == 28 * 28 * 128 + 128 + 128 * 10 + 10


def test_profile_samples_count_for_the_innermost_frame_in_a_known_package():
    """`sim.bench scale100_profile`: a sample counts for the network stack or for our code by
    its innermost frame in either (the standard library, numpy and the like count for their
    caller; our patches of the stack count for the stack); idle samples are left out."""
    from sim.bench.scale100_profile import classify, split_samples

    def stack(*frames: str) -> str:
        return ";".join(frames)

    root = stack(
        'process 7:"python"',
        "run (trio/_core/_run.py:2532)",
        "unrolled_run (trio/_core/_run.py:2866)",
    )
    ours_calls_stack = stack(
        root,
        "Node._push (p2pfl/node/node.py:900)",
        "NetStream.write (libp2p/network/stream/net_stream.py:200)",
        "send (socket.py:10)",
    )
    stack_calls_ours = stack(
        root,
        "SwarmConn._handle_muxed_stream (libp2p/network/connection/swarm_connection.py:309)",
        "Gossip.handle_sync_stream (p2pfl/net/gossip.py:718)",
        "loads (json/__init__.py:346)",
    )
    patched = stack(root, "acquire (p2pfl/net/yamux_tuning.py:220)", "acquire (threading.py:1)")
    in_numpy = stack(
        "Thread.run (threading.py:982)",
        "compute_aggregate (p2pfl/core/round_result.py:50)",
        "sort (numpy/core/fromnumeric.py:1)",
    )
    outside = stack("Thread.run (threading.py:982)", "select (selectors.py:415)")
    idle = stack(root, "EpollIOManager.get_events (trio/_core/_io_epoll.py:243)")
    idle_worker = stack(
        "Thread.run (threading.py:982)", "WorkerThread._work (trio/_core/_thread_cache.py:211)"
    )
    assert classify(ours_calls_stack) == "stack"
    assert classify(stack_calls_ours) == "ours"
    assert classify(patched) == "stack"
    assert classify(in_numpy) == "ours"
    assert classify(outside) == "other"
    assert classify(idle) is None and classify(idle_worker) is None
    lines = [f"{ours_calls_stack} 5\n", f"{stack_calls_ours} 3\n", f"{idle} 40\n", f"{outside} 1\n"]
    assert split_samples([*lines, "\n"]) == {"stack": 5, "ours": 3, "other": 1}
