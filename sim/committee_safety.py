"""How large a committee must be: the failure probabilities of threshold sortition.

    python -m sim.committee_safety [--nodes 1000] [--byzantine 0.2] [--target 1e-6] [--draws 20000]

p2pfl draws each round's committee by threshold sortition (p2pfl/core/sortition.py): every
registered node is a member independently with probability p = min(1, k · stake / total),
so the committee's size is random around k, and a commit needs q = ceil(2k/3) member
signatures (`commit_quorum`). With equal stakes, N nodes of which a fraction f is
Byzantine (colluding), the Byzantine members B ~ Binomial(fN, k/N) and the honest ones
H ~ Binomial((1-f)N, k/N) are independent, and per draw (attempt):

- **safety** fails when B >= q: the Byzantine members alone can sign a result no honest
  member would (honest members recompute the aggregate and sign only the right one);
- **liveness** of the attempt fails when H < q: the honest members cannot reach the quorum
  without the Byzantine ones, who may withhold their votes; the round then re-draws.

`failure_probabilities` computes both exactly; `monte_carlo` checks the formula against
the real sortition code on seeded random draws; `smallest_safe_committee` finds the
least k whose safety failure is below a target. The quorum fraction 2/3 is the protocol's
(a task may only raise it).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass

from scipy.stats import binom

from p2pfl.core.sortition import commit_quorum, committee_for


@dataclass(frozen=True)
class Failure:
    k: int
    quorum: int
    safety: float  # P(B >= q) per draw
    liveness: float  # P(H < q) per draw: the attempt cannot commit with honest votes only


def failure_probabilities(nodes: int, byzantine: float, k: int) -> Failure:
    """Exact per-draw failure probabilities for equal stakes (see the module docstring)."""
    bad = round(byzantine * nodes)
    good = nodes - bad
    p = min(1.0, k / nodes)
    q = commit_quorum(k)
    return Failure(k, q, float(binom.sf(q - 1, bad, p)), float(binom.cdf(q - 1, good, p)))


def smallest_safe_committee(nodes: int, byzantine: float, target: float, k_max: int = 400) -> int:
    """The least k whose per-draw safety failure is below `target`."""
    for k in range(1, min(k_max, nodes) + 1):
        if failure_probabilities(nodes, byzantine, k).safety < target:
            return k
    raise ValueError(f"no committee of at most {k_max} members reaches {target:g}")


def monte_carlo(nodes: int, byzantine: float, k: int, draws: int, seed: int = 0) -> Failure:
    """The same probabilities estimated by `draws` real sortition draws (random seeds)."""
    rng = random.Random(seed)
    addresses = [rng.randbytes(20) for _ in range(nodes)]
    bad = set(addresses[: round(byzantine * nodes)])
    stakes = {a: 1 for a in addresses}
    q = commit_quorum(k)
    unsafe = stuck = 0
    for _ in range(draws):
        members = committee_for(rng.randbytes(32), stakes, k)
        b = sum(1 for m in members if m in bad)
        unsafe += b >= q
        stuck += len(members) - b < q
    return Failure(k, q, unsafe / draws, stuck / draws)


def table(nodes: int, byzantine: float, ks: list[int]) -> list[Failure]:
    return [failure_probabilities(nodes, byzantine, k) for k in ks]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.committee_safety")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--byzantine", type=float, default=0.2)
    parser.add_argument("--target", type=float, default=1e-6)
    parser.add_argument("--draws", type=int, default=20000, help="Monte Carlo draws for k=7")
    args = parser.parse_args(argv)
    print(f"{args.nodes} nodes, {args.byzantine:.0%} Byzantine stake, quorum ceil(2k/3)")
    print("| k | q | P(Byzantine >= q) per draw | P(honest < q) per draw |")
    print("|---|---|---|---|")
    for f in table(args.nodes, args.byzantine, [7, 10, 15, 20, 25, 30, 35, 40, 50, 60]):
        print(f"| {f.k} | {f.quorum} | {f.safety:.2e} | {f.liveness:.3f} |")
    k = smallest_safe_committee(args.nodes, args.byzantine, args.target)
    print(f"smallest k with P(Byzantine >= q) < {args.target:g}: {k}")
    mc = monte_carlo(args.nodes, args.byzantine, 7, args.draws)
    exact = failure_probabilities(args.nodes, args.byzantine, 7)
    print(
        f"check, k=7, {args.draws} real sortition draws: safety {mc.safety:.4f} (exact"
        f" {exact.safety:.4f}), liveness {mc.liveness:.3f} (exact {exact.liveness:.3f})"
    )
    if abs(mc.safety - exact.safety) > 5 * math.sqrt(exact.safety / args.draws) + 1e-3:
        print("the Monte Carlo check disagrees with the formula", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
