"""The safety and liveness audit of one finished simulation.

Every simulation with `[attacks]` or `[faults]` calls `audit_run`: it reads the chain (slashes,
equivocation proofs, the task's rounds) and the nodes' records (the committed proposals,
registry snapshots, probation histories) and checks the safety properties: no unregistered,
slashed or equivocating author in a committed round, equivocation slashed in time, one
probation history among honest nodes.
"""

from __future__ import annotations

from typing import Any

from sim.attacks import AttackLog, AttackPlan
from sim.faults import FaultLog


def audit_run(
    plan: AttackPlan,
    faults: FaultLog,
    attacks: AttackLog,
    nodes: list[Any],
    identities: list[Any],
    devnet: Any,
    manifest: Any,
    commits: dict[int, Any],
    stakes_before: dict[bytes, int],
) -> dict[str, Any]:
    """Safety and liveness facts of a finished simulation, from the chain and the nodes."""
    index_of = {ident.address: i for i, ident in enumerate(identities)}
    registry = devnet.admin.registry
    slash_logs = registry.events.Slashed().get_logs(from_block=devnet.deployment.block)
    slashed_at: dict[bytes, list[int]] = {}
    for e in slash_logs:
        slashed_at.setdefault(bytes.fromhex(e["args"]["node"][2:]), []).append(e["blockNumber"])
    rounds = []
    violations: list[str] = []
    victim_included = 0
    for r in sorted(commits):
        ev = commits[r]
        proposal = None
        for n in nodes:
            try:
                result = n.models.cid_for_digest(ev.result).to_bytes()
            except Exception:
                continue
            proposal = n.intake.proposals.get((r, result, ev.contributors_root))
            if proposal is not None:
                snapshot = n.committed.round_stakes.get(r, {})
                break
        row: dict[str, Any] = {
            "round": r,
            "attempt": ev.attempt,
            "view": ev.view,
            "signers": ev.signers,
            "block": ev.block_number,
        }
        if proposal is None:
            row["included"] = None
            rounds.append(row)
            continue
        included = [a for a, _ in proposal.included]
        row["included"] = [index_of.get(a, "0x" + a.hex()) for a in included]
        row["rejected"] = [[index_of.get(a, "0x" + a.hex()), why] for a, why in proposal.rejected]
        row["poisoners_included"] = sorted(
            index_of[a] for a in included if index_of.get(a) in plan.poisoners
        )
        for a in included:
            if a not in index_of or snapshot.get(a, 0) <= 0:
                violations.append(f"round {r}: unregistered author 0x{a.hex()} included")
            # Slashed on-chain before this round's registry snapshot (the commit of r - 1).
            before = commits[r - 1].block_number if r - 1 in commits else devnet.deployment.block
            if any(blk <= before for blk in slashed_at.get(a, [])):
                violations.append(f"round {r}: slashed author {index_of.get(a)} included")
            if a in attacks.equivocated.get(r, set()):
                violations.append(f"round {r}: equivocator {index_of.get(a)} included")
        if plan.victim is not None and identities[plan.victim].address in included:
            victim_included += 1
        rounds.append(row)
    slashes = []
    for e in slash_logs:
        a = e["args"]
        node = bytes.fromhex(a["node"][2:])
        reporter = bytes.fromhex(a["reporter"][2:])
        slashes.append(
            {
                "node": index_of.get(node, a["node"]),
                "amount_wei": a["amount"],
                "reporter": index_of.get(reporter, a["reporter"]),
                "reporter_reward_wei": a["reporterReward"],
                "block": e["blockNumber"],
            }
        )
    ledger = devnet.admin.ledger
    proofs = [
        {
            "node": index_of.get(bytes.fromhex(e["args"]["signer"][2:])),
            "round": e["args"]["round"],
            "kind": e["args"]["kind"],
            "reporter": index_of.get(bytes.fromhex(e["args"]["reporter"][2:])),
            "block": e["blockNumber"],
        }
        for e in ledger.events.EquivocationProven().get_logs(from_block=devnet.deployment.block)
    ]
    # Equivocation of round r must be slashed before round r + 1 commits (or by the end).
    late = []
    for p in proofs:
        nxt = commits.get((p["round"] or 0) + 1)
        if nxt is not None and p["block"] > nxt.block_number:
            late.append(p)
    equivocated_rounds = sorted(attacks.equivocated)
    # A slashed node is ejected, so its later equivocations are rejected at the first hop
    # (unregistered signer) and need no proof: only rounds it could still take part in count.
    registered_in = {
        r: set(n.committed.round_stakes.get(r, {})) for n in nodes for r in n.committed.round_stakes
    }
    unslashed = [
        r
        for r in equivocated_rounds
        if r in commits
        and not any(p["round"] == r for p in proofs)
        and any(
            identities[i].address in registered_in.get(r, set())
            for i in plan.roles.get("equivocators", ())
        )
    ]
    # Probation history (strike points per committed round) as every live honest node
    # holds it: it must be one history, or they would disagree on later aggregates. An
    # attacker's may differ (a banned spammer never sees a proposal).
    histories = [
        {
            r: {index_of.get(a, "0x" + a.hex()): p for a, p in sorted(pts.items())}
            for r, pts in sorted(n.committed.strikes.items())
        }
        for i, n in enumerate(nodes)
        if i not in faults.killed and i not in plan.attackers
    ]
    stakes_after = {}
    for i in sorted(set(plan.attackers)):
        addr = identities[i].address
        info_after = devnet.admin.node_info(addr)
        stakes_after[i] = {
            "before_wei": stakes_before.get(addr, 0),
            "after_wei": info_after.stake,
            "unbonding_wei": info_after.unbonding,
            "banned": info_after.banned,
        }
    info = devnet.admin.task_info(manifest.task_id)
    return {
        "attackers": {
            "poisoners": list(plan.poisoners),
            **{k: list(v) for k, v in plan.roles.items() if v},
            **({"victim": plan.victim} if plan.victim is not None else {}),
        },
        "rounds": rounds,
        "rounds_committed": info.last_round,
        "violations": violations,
        "equivocated_rounds": equivocated_rounds,
        "equivocation_proofs": proofs,
        "equivocation_slashed_late": late,
        "equivocation_unslashed_rounds": unslashed,
        "slashes": slashes,
        "strikes": {str(r): pts for r, pts in histories[0].items()} if histories else {},
        "strike_histories_agree": all(h == histories[0] for h in histories),
        "attacker_stakes": stakes_after,
        "victim_included_rounds": victim_included if plan.victim is not None else None,
        "attack_log": {
            "lies": attacks.lies,
            "withheld": attacks.withheld,
            "silenced": attacks.silenced,
            "censored": attacks.censored,
            "replayed": attacks.replayed,
            "spam_sent": attacks.spam_sent,
            "sybil_sent": attacks.sybil_sent,
        },
        "killed": sorted(faults.killed),
        "killed_in_round": {str(k): v for k, v in faults.killed_round.items()},
        "leader_killed": faults.leader_killed,
        "leader_kill_round": faults.leader_kill_round,
        "partition": [list(h) for h in faults.partition] if faults.partition else None,
    }
