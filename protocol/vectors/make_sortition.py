"""Generate protocol/vectors/sortition.json (run once; tests only read the file).

Each case: task, round, base digest, attempt, k, stakes (address -> wei), and the expected
seed, every node's ticket and the committee in leader order.
"""

import json
from pathlib import Path

from eth_utils import keccak

from p2pfl.core import sortition


def case(name: str, n: int, k: int, round_: int, attempt: int, stake_of) -> dict:
    task = keccak(b"task:" + name.encode())
    base = keccak(b"base:" + name.encode())
    stakes = {keccak(b"node" + i.to_bytes(4, "big"))[:20]: stake_of(i) for i in range(n)}
    seed = sortition.round_seed(task, round_, base, attempt)
    committee = sortition.committee_for(seed, stakes, k)
    return {
        "name": name, "task": task.hex(), "round": round_, "base": base.hex(), "attempt": attempt, "k": k,
        "stakes": {a.hex(): str(s) for a, s in stakes.items()},
        "seed": seed.hex(),
        "tickets": {a.hex(): hex(sortition.ticket(seed, a)) for a in stakes},
        "committee": [a.hex() for a in committee],
    }


def main() -> None:
    eth = 10**18
    cases = [
        case("equal-10-k7", 10, 7, 1, 0, lambda i: 2 * eth),
        case("equal-50-k7", 50, 7, 12, 0, lambda i: 2 * eth),
        case("equal-50-k7-attempt2", 50, 7, 12, 2, lambda i: 2 * eth),
        case("tiers-30-k9", 30, 9, 3, 0, lambda i: (1 + (i % 3) * 9) * eth),
        case("whale-and-zero", 12, 5, 7, 0, lambda i: 0 if i == 3 else (100 * eth if i == 0 else eth)),
    ]
    doc = {
        "about": "seed = keccak256(task || u64 round || base || u32 attempt); ticket = keccak256(seed || address); "
                 "eligible iff stake > 0 and (k*stake >= total or ticket // ((2^256-1) // total) < k*stake); "
                 "committee sorted by (ticket, address).",
        "cases": cases,
    }
    path = Path(__file__).with_name("sortition.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
