"""What a peer with no stake gets from a running task: `python -m sim.bench outsider`.

Four `p2pfl node start` processes on anvil for three rounds, set up with the CLI as a new
user would; once round 1 is committed, a peer with a throwaway key dials one of them, joins
the task's topics and fetches every delta and committed model it hears of
(`sim/outsider.py`). Prints what it got: `outsider-deltas-recovered` of
`outsider-deltas-seen` (read as plaintext tensors), `outsider-models-recovered` of
`outsider-models-seen`, the gossip it was sent (`outsider-messages`,
`outsider-history-updates`: updates of rounds committed before it joined, from sync), the
peers that grafted it into a topic mesh and the peers it learnt addresses of, and the
`Update` fields it read in the clear. OUTSIDER_TASK_ARGS adds `task create` flags.
"""

from __future__ import annotations

from sim.bench import BenchError, figure


def run(argv: list[str] | None = None) -> None:
    from sim.outsider import run_outsider

    try:
        seen = run_outsider()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    figure("outsider-messages", seen.messages, "messages")
    figure("outsider-history-updates", seen.history_updates, "updates")
    figure("outsider-mesh-peers", seen.mesh_peers, "peers")
    figure("outsider-peers-known", seen.peers_known, "peers")
    figure("outsider-deltas-seen", seen.updates, "deltas")
    figure("outsider-deltas-recovered", seen.deltas_recovered, "deltas")
    figure("outsider-models-seen", seen.models, "models")
    figure("outsider-models-recovered", seen.models_recovered, "models")
    figure("outsider-cleartext-fields", ",".join(seen.cleartext_fields) or "-", "fields")
    for what, failed in (("delta", seen.deltas_failed), ("model", seen.models_failed)):
        for reason, count in sorted(failed.items()):
            figure(f"outsider-{what}-refused-{reason}", count, "times")
