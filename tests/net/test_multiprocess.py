"""Nodes in separate OS processes on 127.0.0.1, connected by bootstrap multiaddrs, killed by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pfl.core.cid import CHUNK_SIZE, blob_cid
from p2pfl.net.blockstore import BlockStore
from tests.net.node_proc import blob_bytes

ROOT_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


class Proc:
    """One child node; lines of its stdout are read on demand."""

    def __init__(self, tmp: Path, name: str, seed: int, *args: str) -> None:
        self.log = open(tmp / f"{name}.out", "w+")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.net.node_proc", "--data", str(tmp / name), "--key-seed", str(seed), *args],
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
                raise AssertionError(f"node exited ({self.p.returncode}):\n" + "\n".join(self.lines()))
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
    assert BlockStore(tmp_path / "fetcher" / "blocks").read_blob(blob_cid(blob_bytes(7, size))) == blob_bytes(7, size)


def test_fetch_resumes_after_the_fetcher_is_killed(tmp_path: Path, procs: list[Proc]) -> None:
    size = 24 * CHUNK_SIZE
    author = Proc(tmp_path, "author", 1, "serve", "--blob-seed", "3", "--blob-bytes", str(size))
    procs.append(author)
    addr = author.wait_for("ADDR")
    root = author.wait_for("ROOT")
    first = Proc(tmp_path, "fetcher", 2, "--bootstrap", addr, "fetch", "--root", root, "--slow")
    procs.append(first)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(line.startswith("PROGRESS") and int(line.split()[1]) >= 9 for line in first.lines()):
        assert time.monotonic() < deadline, "\n".join(first.lines())
        time.sleep(0.02)
    first.kill()  # SIGKILL mid-fetch
    held = sum(1 for _ in BlockStore(tmp_path / "fetcher" / "blocks"))
    assert 9 <= held < 25  # root + 24 leaves in all
    second = Proc(tmp_path, "fetcher", 2, "--bootstrap", addr, "fetch", "--root", root)
    procs.append(second)
    fetched_now = int(second.wait_for("DONE"))
    assert fetched_now == 25 - held  # nothing already on disk was fetched again
    assert BlockStore(tmp_path / "fetcher" / "blocks").read_blob(blob_cid(blob_bytes(3, size))) == blob_bytes(3, size)


def test_gossip_between_processes(tmp_path: Path, procs: list[Proc]) -> None:
    count, per_node = 4, 15
    first = Proc(tmp_path, "g0", 1, "gossip", "--publish", str(per_node), "--expect", str(count * per_node))
    procs.append(first)
    addr = first.wait_for("ADDR")
    for i in range(1, count):
        args = ("--bootstrap", addr, "gossip", "--publish", str(per_node), "--expect", str(count * per_node))
        procs.append(Proc(tmp_path, f"g{i}", i + 1, *args))
    for proc in procs:
        assert proc.wait_for("GOT", timeout_s=45) == str(count * per_node)
