"""Round times on shaped links, next to what the protocol's bytes per round predict.

    python -m sim.bench shaped          # as root; P2PFL_SHAPED_RATES=20,100 for other rates

Runs `sim/scenarios/shaped.toml` in `--processes` mode with every node process in its own
network namespace (`sim.netns`: a bridge, veth pairs, tbf on both directions of each
node's link) once per rate (Mbit/s; 0 = namespaces without tbf, the unshaped baseline).
This kernel has tbf but no netem: bandwidth is shaped, no latency or loss is added.

The prediction for a round is its busiest node's payload bytes over the link rate:
max over nodes of max(bytes sent, bytes received) in that round (metrics.jsonl, the
nodes' own counters of libp2p stream payload), times 8, over the rate. A node's upload
and download are shaped separately, so the busier direction of the busiest node bounds the
round from below if nothing else overlapped; the measured round adds training, agreement,
the chain, protocol round trips and the wire overhead (TCP/IP, Noise, yamux, JSON-RPC to
anvil), printed as the qdiscs' bytes over the payload bytes.

Figures per rate R: `shaped-R-round-median` (rounds 2.. : round 1 carries the genesis
fetch and the first torch calls), `shaped-R-predicted-median` (the same rounds' bytes /
rate), their ratio, the disseminate phase's median, the busiest node's MB per round.

Measured (2 cores shared with other work, load 8-13; 10 nodes, 3 rounds; 16.3-18.9 MB
through the busiest node per round, the model being 1.6 MB): median round unshaped 15.3 s
(disseminate 9.7 s); 20 Mbit/s 28.6 s, predicted 6.6 s (4.3x; disseminate 19.4 s);
100 Mbit/s 17.2 s, predicted 1.4 s (12x: the unshaped round's CPU-bound pace). At
20 Mbit/s round 1 took 537 s: 508 s of agreement, 39 view changes and 3 redraws per node
before a commit (slow delta fetches under the link limit and the load). The qdiscs carried
1.13x (100 Mbit/s run) to 1.96x (20 Mbit/s run, 10 minutes of chain polling) the payload.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sim.bench import ROOT_DIR, BenchError, figure

SCENARIO = ROOT_DIR / "sim" / "scenarios" / "shaped.toml"
RATES_ENV = "P2PFL_SHAPED_RATES"
# The two link speeds (#13 item 7), a modest home uplink and a good one, after
# the same namespaces unshaped (0) for what the protocol costs without a link limit.
DEFAULT_RATES = (0.0, 20.0, 100.0)
MB = 1e6


def busiest_bytes(record: dict[str, Any]) -> int:
    """A round's busiest node's busier direction, payload bytes (None: no record)."""
    both = [b for b in record["bytes_sent"] + record["bytes_received"] if b is not None]
    if not both:
        raise BenchError(f"round {record['round']}: no node reported its bytes")
    return max(both)


def predicted_s(record: dict[str, Any], rate_mbit: float) -> float:
    """Seconds the busiest node's bytes take at `rate_mbit`."""
    return busiest_bytes(record) * 8 / (rate_mbit * MB)


def run_one(rate_mbit: float, runs: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from sim.processes import run_processes
    from sim.scenario import load_scenario

    scenario = load_scenario(SCENARIO, {"network.rate_mbit": rate_mbit})
    run_dir = run_processes(scenario, runs, quiet=True)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").open()]
    if summary["rounds_committed"] < summary["rounds_planned"] or not records:
        raise BenchError(
            f"{rate_mbit:g} Mbit/s: {summary['rounds_committed']}/{summary['rounds_planned']} "
            "rounds committed"
        )
    return records, summary


def report(rate_mbit: float, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    tag = f"shaped-{rate_mbit:g}mbit" if rate_mbit else "shaped-unshaped"
    steady = records[1:] or records
    walls = [r["wall_s"] for r in steady]
    for r in records:
        line = f"s (busiest node {busiest_bytes(r) / MB:.2f} MB"
        if rate_mbit:
            line += f": {predicted_s(r, rate_mbit):.2f} s at the rate"
        figure(f"{tag}-round{r['round']}", r["wall_s"], line + ")")
    figure(
        f"{tag}-disseminate-median",
        statistics.median(r["phases_s"].get("disseminate", 0.0) for r in steady),
        "s",
    )
    figure(f"{tag}-busiest-median", statistics.median(busiest_bytes(r) for r in steady) / MB, "MB")
    qdisc = summary["network"].get("qdisc_bytes")
    payload = sum(b or 0 for r in records for b in r["bytes_sent"])
    if qdisc and payload:
        figure(f"{tag}-wire-over-payload", sum(qdisc["up"]) / payload, "x (qdisc bytes / payload)")
    figure(f"{tag}-round-median", statistics.median(walls), f"s (rounds 2-{len(records)})")
    if rate_mbit:
        predicted = statistics.median(predicted_s(r, rate_mbit) for r in steady)
        figure(f"{tag}-predicted-median", predicted, "s (busiest node's bytes / rate)")
        figure(f"{tag}-measured-over-predicted", statistics.median(walls) / predicted, "x")


def run() -> None:
    from p2pfl.errors import ConfigError
    from sim.netns import require_root_and_tools

    try:
        require_root_and_tools()
    except ConfigError as exc:
        raise BenchError(str(exc)) from None
    raw = os.environ.get(RATES_ENV, "")
    rates = [float(x) for x in raw.split(",") if x.strip()] if raw else list(DEFAULT_RATES)
    figure("shaped-latency-emulated", "no", "(tbf only: this kernel has no netem)")
    with tempfile.TemporaryDirectory(prefix="p2pfl-shaped-") as runs:
        for rate in rates:
            records, summary = run_one(rate, runs)
            report(rate, records, summary)
