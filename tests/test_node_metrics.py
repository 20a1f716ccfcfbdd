"""A node's Prometheus metrics (p2pfl.node.metrics), scraped over HTTP on 127.0.0.1 from
real nodes (real libp2p hosts, the contracts on the embedded EVM) while rounds commit;
a scrape once the node stopped is refused, and nothing crashes."""

from __future__ import annotations

import urllib.error
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pfl.cli.launch import serve_metrics
from p2pfl.core.tensors import encode_tensors
from tests.realnodes import STAKE, make_nodes, open_task, start_hosts

ROUNDS = 2
N_NODES = 5
SIZE = 256


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape (blocking)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_follow_the_rounds_and_vanish_with_the_node(tmp_path: Path) -> None:
    genesis_blob = encode_tensors({"w": np.zeros(SIZE, np.float32)})
    devnet, identities, manifest = open_task(
        genesis_blob, n_nodes=N_NODES, committee=3, rounds=ROUNDS, seed=5, name="metrics"
    )
    scrapes: list[dict[Any, float]] = []
    async with AsyncExitStack() as stack:
        nets = await start_hosts(stack, identities, tmp_path, genesis_blob)
        nodes = make_nodes(devnet, identities, nets, manifest, tmp_path)
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                # Two nodes of one process, each with its own registry and server.
                with (
                    serve_metrics(nodes[0], nursery, "127.0.0.1", 0) as (host, port),
                    serve_metrics(nodes[1], nursery, "127.0.0.1", 0) as (_, port1),
                ):
                    url = f"http://{host}:{port}/metrics"
                    assert port1 != port
                    async with trio.open_nursery() as running:
                        for node in nodes:
                            running.start_soon(node.run, ROUNDS)

                        async def scraper() -> None:
                            while True:
                                scrapes.append(await trio.to_thread.run_sync(scrape, url))
                                await trio.sleep(0.3)

                        running.start_soon(scraper)
                        for node in nodes:
                            await node.finished.wait()
                        scrapes.append(await trio.to_thread.run_sync(scrape, url))
                        other = await trio.to_thread.run_sync(
                            scrape, f"http://127.0.0.1:{port1}/metrics"
                        )
                        running.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        # The node stopped, its server with it: a scrape is refused, nothing else happens.
        with pytest.raises(urllib.error.URLError):
            await trio.to_thread.run_sync(scrape, url)

    def value(snap: dict[Any, float], name: str, **labels: str) -> float:
        return snap[(name, tuple(sorted(labels.items())))]

    first, last = scrapes[0], scrapes[-1]
    committed = [value(s, "p2pfl_rounds_committed_total") for s in scrapes]
    assert committed == sorted(committed), "a counter went down"
    assert value(first, "p2pfl_rounds_committed_total") < ROUNDS
    assert value(last, "p2pfl_rounds_committed_total") >= ROUNDS
    assert value(last, "p2pfl_last_committed_round") >= ROUNDS
    assert value(last, "p2pfl_round") > value(first, "p2pfl_round")
    assert len({value(s, "p2pfl_round") for s in scrapes}) >= 2, "the round never changed"
    assert value(last, "p2pfl_chain_committed_round") >= ROUNDS
    assert value(last, "p2pfl_chain_lag_rounds") == 0
    assert value(last, "p2pfl_chain_head_block") > 0
    assert value(last, "p2pfl_stake_wei") == STAKE
    assert value(last, "p2pfl_reputation") >= 0
    assert value(last, "p2pfl_peers_connected") >= 1
    assert value(last, "p2pfl_live_nodes") >= 0
    assert sum(v for (k, _), v in last.items() if k.startswith("p2pfl_phase")) == 1
    assert value(last, "p2pfl_sent_bytes_total", protocol="gossip") > 0
    assert value(last, "p2pfl_received_bytes_total", protocol="gossip") > 0
    # Accepted by gossip or, when gossip dropped it under load, by the sync that repairs it.
    accepted = [v for (k, _), v in last.items() if k == "p2pfl_gossip_messages_accepted_total"]
    assert sum(accepted) > 0
    assert value(last, "p2pfl_fetch_retries_total", kind="model") >= 0
    # The second node's registry reports that node, not the first.
    assert value(other, "p2pfl_rounds_committed_total") >= ROUNDS
    assert ("p2pfl_committee_member", ()) in other


async def test_a_taken_metrics_port_is_a_clear_error() -> None:
    import socket

    from p2pfl.errors import P2PFLError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with trio.open_nursery() as nursery:
            with pytest.raises(P2PFLError, match="choose another --metrics-port"):
                with serve_metrics(object(), nursery, "127.0.0.1", port):
                    pass
