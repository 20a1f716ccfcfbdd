"""Nodes in separate OS processes on 127.0.0.1, connected by bootstrap multiaddrs, killed by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pfl.core.cid import CHUNK_SIZE, blob_cid
from p2pfl.net.blockstore import BlockStore
from tests.net.node_proc import ATTACKS, HONEST_MAX_MESSAGE_BYTES, blob_bytes

ROOT_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
# Gossip heartbeats (1 s) graft the meshes before anything is published.
MESH_SETTLE_S = 2.0
# Sync rounds (1 s each) during which nothing rejected may travel on.
SYNC_ROUNDS_S = 3.0
DELIVERY_TIMEOUT_S = 60.0
# Gossipsub keeps a message for IHAVE gossip for 5 heartbeats (py-libp2p's gossip_history);
# a node starting later than this can only get it by our sync.
MCACHE_EXPIRY_S = 6.0


class Proc:
    """One child node; lines of its stdout are read on demand."""

    def __init__(self, tmp: Path, name: str, seed: int, *args: str) -> None:
        self.log = open(tmp / f"{name}.out", "w+")
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.net.node_proc",
                "--data",
                str(tmp / name),
                "--key-seed",
                str(seed),
                *args,
            ],
            cwd=ROOT_DIR,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pos = 0

    def lines(self) -> list[str]:
        self.log.flush()
        return Path(self.log.name).read_text().splitlines()

    def wait_for(self, prefix: str, timeout_s: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.startswith(prefix + " ") or line == prefix:
                    return line[len(prefix) :].strip()
            if self.p.poll() is not None:
                raise AssertionError(
                    f"node exited ({self.p.returncode}):\n" + "\n".join(self.lines())
                )
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {timeout_s} s:\n" + "\n".join(self.lines()))

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.log.close()


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def test_blob_via_non_author_holder_across_processes(tmp_path: Path, procs: list[Proc]) -> None:
    size = 5 * CHUNK_SIZE + 77
    author = Proc(tmp_path, "author", 1, "serve", "--blob-seed", "7", "--blob-bytes", str(size))
    procs.append(author)
    addr = author.wait_for("ADDR")
    root = author.wait_for("ROOT")
    assert root == str(blob_cid(blob_bytes(7, size)))  # the child's CID is the core's
    holder = Proc(tmp_path, "holder", 2, "--bootstrap", addr, "fetch", "--root", root)
    procs.append(holder)
    holder_addr = holder.wait_for("ADDR")
    assert holder.wait_for("DONE") == "7"
    author.kill()  # from now on only the holder has the blob
    fetcher = Proc(tmp_path, "fetcher", 3, "--bootstrap", holder_addr, "fetch", "--root", root)
    procs.append(fetcher)
    assert fetcher.wait_for("DONE") == "7"
    assert BlockStore(tmp_path / "fetcher" / "blocks").read_blob(
        blob_cid(blob_bytes(7, size))
    ) == blob_bytes(7, size)


def test_fetch_resumes_after_the_fetcher_is_killed(tmp_path: Path, procs: list[Proc]) -> None:
    size = 24 * CHUNK_SIZE
    author = Proc(tmp_path, "author", 1, "serve", "--blob-seed", "3", "--blob-bytes", str(size))
    procs.append(author)
    addr = author.wait_for("ADDR")
    root = author.wait_for("ROOT")
    first = Proc(tmp_path, "fetcher", 2, "--bootstrap", addr, "fetch", "--root", root, "--slow")
    procs.append(first)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(
        line.startswith("PROGRESS") and int(line.split()[1]) >= 9 for line in first.lines()
    ):
        assert time.monotonic() < deadline, "\n".join(first.lines())
        time.sleep(0.02)
    first.kill()  # SIGKILL mid-fetch
    held = sum(1 for _ in BlockStore(tmp_path / "fetcher" / "blocks"))
    assert 9 <= held < 25  # root + 24 leaves in all
    second = Proc(tmp_path, "fetcher", 2, "--bootstrap", addr, "fetch", "--root", root)
    procs.append(second)
    fetched_now = int(second.wait_for("DONE"))
    assert fetched_now == 25 - held  # nothing already on disk was fetched again
    assert BlockStore(tmp_path / "fetcher" / "blocks").read_blob(
        blob_cid(blob_bytes(3, size))
    ) == blob_bytes(3, size)


def test_gossip_between_processes(tmp_path: Path, procs: list[Proc]) -> None:
    count, per_node = 4, 15
    first = Proc(
        tmp_path, "g0", 1, "gossip", "--publish", str(per_node), "--expect", str(count * per_node)
    )
    procs.append(first)
    addr = first.wait_for("ADDR")
    for i in range(1, count):
        args = (
            "--bootstrap",
            addr,
            "gossip",
            "--publish",
            str(per_node),
            "--expect",
            str(count * per_node),
        )
        procs.append(Proc(tmp_path, f"g{i}", i + 1, *args))
    for proc in procs:
        assert proc.wait_for("GOT", timeout_s=45) == str(count * per_node)


def _touch(path: Path) -> None:
    path.write_text("")


def test_signed_update_burst_reaches_every_process_and_a_late_joiner(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """5 processes in a tree each publish 10 signed Updates at the same instant (50 in all),
    through the node's real validator; every process delivers each exactly once. A sixth
    process that starts once gossipsub has forgotten them gets all 50 by sync alone."""
    count, per_node = 5, 10
    total = count * per_node
    go, report = tmp_path / "go", tmp_path / "report"
    common = ("--go", str(go), "--report", str(report), "--registered", str(count + 1))
    addrs: list[str] = []
    for i in range(count):
        boot = ("--bootstrap", addrs[(i - 1) // 2]) if i else ()  # a tree: up to 3 hops apart
        proc = Proc(
            tmp_path,
            f"u{i}",
            i + 1,
            *boot,
            "updates",
            "--publish",
            str(per_node),
            "--expect",
            str(total),
            *common,
        )
        procs.append(proc)
        addrs.append(proc.wait_for("ADDR"))
    time.sleep(MESH_SETTLE_S)
    _touch(go)
    for proc in procs:
        assert proc.wait_for("GOT", timeout_s=DELIVERY_TIMEOUT_S) == str(total)
    time.sleep(MCACHE_EXPIRY_S)
    late = Proc(
        tmp_path,
        "late",
        count + 1,
        "--bootstrap",
        addrs[-1],
        "updates",
        "--expect",
        str(total),
        *common,
    )
    procs.append(late)
    assert late.wait_for("GOT", timeout_s=DELIVERY_TIMEOUT_S) == str(total)
    _touch(report)
    reports = [json.loads(proc.wait_for("REPORT")) for proc in procs]
    for got in reports:
        assert got["distinct"] == got["deliveries"] == total  # none lost, none delivered twice
        assert got["rejected"] == {} and got["ignored"] == {}
    assert (
        reports[-1]["via_sync"] == total
    )  # the late joiner had no message to list, and asked anyway


def test_bad_updates_stop_at_the_first_honest_process(tmp_path: Path, procs: list[Proc]) -> None:
    """attacker - b - c, each its own process: the attacker publishes a forged, a replayed
    (old round), a wrong-round (future), a wrong-task, an unregistered and an oversized
    Update, and replays its valid ones. b rejects (or ignores) each once, and c never even
    judges them, by gossip or by sync; the valid updates reach everyone exactly once."""
    per_node = 3
    total = 3 * per_node
    go, report, attack_go = tmp_path / "go", tmp_path / "report", tmp_path / "attack"
    common = (
        "updates",
        "--publish",
        str(per_node),
        "--go",
        str(go),
        "--report",
        str(report),
        "--registered",
        "3",
    )
    honest = ("--max-message-bytes", str(HONEST_MAX_MESSAGE_BYTES))
    attacker = Proc(
        tmp_path,
        "attacker",
        1,
        *common,
        "--attack",
        "--attack-go",
        str(attack_go),
        "--expect",
        str(total + len(ATTACKS)),
    )
    procs.append(attacker)
    b = Proc(
        tmp_path,
        "b",
        2,
        "--bootstrap",
        attacker.wait_for("ADDR"),
        *honest,
        *common,
        "--expect",
        str(total),
    )
    procs.append(b)
    c = Proc(
        tmp_path,
        "c",
        3,
        "--bootstrap",
        b.wait_for("ADDR"),
        *honest,
        *common,
        "--expect",
        str(total),
    )
    procs.append(c)
    c.wait_for("ADDR")
    time.sleep(MESH_SETTLE_S)
    _touch(go)
    for proc in (b, c):
        assert proc.wait_for("GOT", timeout_s=DELIVERY_TIMEOUT_S) == str(total)
    # The bad messages go out once everyone holds the valid updates: b may ban the attacker
    # for them (that is the point), and a ban must not be what stops a valid delivery.
    _touch(attack_go)
    attacker.wait_for("ATTACKED", timeout_s=DELIVERY_TIMEOUT_S)
    attacker.wait_for("REPLAYED", timeout_s=DELIVERY_TIMEOUT_S)
    time.sleep(SYNC_ROUNDS_S)
    _touch(report)
    at_attacker, at_b, at_c = (json.loads(p.wait_for("REPORT")) for p in (attacker, b, c))
    assert at_c["rejected"] == {} and at_c["ignored"] == {}, at_c  # c never judged any of them
    assert at_attacker["peer_id"] not in at_c["peers"]  # c heard of them only through b
    assert at_c["distinct"] == at_c["deliveries"] == total
    assert at_b["distinct"] == at_b["deliveries"] == total  # the replay was not delivered again
    # Each bad message is judged once, by whichever path brought it first: the attacker
    # offers what it published by sync too, so b's sync with it may fetch one before its
    # gossip copy lands (the copy then meets the rejected id and is dropped unjudged).
    # The oversized one alone may count twice: a sync offering it again has its length
    # refused before its bytes (and so its id) are read.
    judged: dict[str, int] = {}
    for key, n in at_b["rejected"].items():
        via, kind = key.split("-", 1)
        assert via in ("gossip", "sync"), at_b
        if key != "sync-oversized":
            judged[kind] = judged.get(kind, 0) + n
    assert judged == {kind: 1 for kind in ATTACKS if kind != "future-round"}, at_b
    assert at_b["ignored"].get("ignored-future-round", 0) >= 1, at_b
