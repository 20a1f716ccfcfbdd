"""`python -m p2pfl.selfcheck`: a short end-to-end check of the protocol core.

It signs and verifies each kind of statement, round-trips the codec, hashes a
multi-block blob as IPFS would, draws a committee, and aggregates a round of
deltas twice in different orders, printing one line per check. Exit 0 iff all pass.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np

from p2pfl.core import aggregate as agg
from p2pfl.core import messages as m
from p2pfl.core import sortition, tensors
from p2pfl.core.cid import CID, assemble, blob_blocks
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.signing import Domain


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def main() -> int:
    start = time.perf_counter()
    results = []
    nodes = [NodeIdentity.from_seed(f"selfcheck-{i}".encode()) for i in range(10)]
    domain = Domain(chain_id=31337, contract=b"\x5f" * 20)
    task = bytes(32)

    rng = np.random.default_rng(1)
    model = {"w": rng.standard_normal((64, 32), dtype=np.float32), "b": np.zeros(32, np.float32)}
    blob = tensors.encode_tensors(model) * 40  # > 256 KiB: a real multi-block DAG
    root, blocks = blob_blocks(blob)
    store = {cid: block for cid, block in blocks}
    results.append(
        check("cid", assemble(root, store.__getitem__) == blob, f"{root} ({len(blocks)} blocks)")
    )
    base = CID.parse(str(root)).to_bytes()

    stakes = {n.address: 100 for n in nodes}
    committee = sortition.committee_for(sortition.round_seed(task, 1, root.digest, 0), stakes, 7)
    results.append(
        check(
            "sortition",
            len(committee) > 0,
            f"{len(committee)} members, leader {committee[0].hex()[:8]}",
        )
    )

    update = m.Update(
        task=task,
        round=1,
        base=base,
        delta=base,
        n_samples=100,
        norm=1.0,
        inline=b"",
        signer=nodes[0].address,
    ).signed(nodes[0].private_key, domain)
    decoded = m.decode_message(update.encode())
    results.append(
        check(
            "messages",
            decoded == update and decoded.verify(domain) == nodes[0].address,
            f"update {len(update.encode())} bytes, signer verified",
        )
    )

    contributions = [
        agg.Contribution(n.address, 100 + i, rng.standard_normal(10_000, dtype=np.float32))
        for i, n in enumerate(nodes)
    ]
    spec = agg.RuleSpec.default()
    first = agg.aggregate(spec, contributions)
    shuffled = contributions[:]
    random.Random(7).shuffle(shuffled)
    second = agg.aggregate(spec, shuffled)
    results.append(
        check(
            "aggregation",
            first.digest == second.digest,
            f"{spec.name} -> {first.digest[:16]} in both arrival orders",
        )
    )

    print(f"{sum(results)}/{len(results)} checks passed in {time.perf_counter() - start:.2f} s")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
