"""Where the chain lives: embedded py-evm, a local anvil process, or any JSON-RPC URL.

- `embedded_web3()`: eth-tester + py-evm in this process. Zero set-up; tests and the
  in-process simulation use it. It is NOT thread-safe: every call must go through one
  worker at a time -- `chain_lock(w3)` gives the lock all clients of that Web3 share.
- `Anvil`: a context manager that starts tools/node_modules/.bin/anvil on a free
  loopback port (or of another local address: `host`), waits until it answers, and
  stops it by PID. With `state_path` it keeps its chain in that file across `restart()`
  (an RPC outage, same port and chain id).
- `rpc_web3(url)`: any HTTP JSON-RPC endpoint (real deployments).

`fund(w3, address, wei)` credits test accounts on eth-tester and anvil.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType

from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.providers.rpc import HTTPProvider
from web3.types import Wei

from p2pfl.errors import ChainError

ANVIL_BIN = Path(__file__).resolve().parents[2] / "tools" / "node_modules" / ".bin" / "anvil"
ANVIL_CHAIN_ID = 31337
# anvil answers in ~0.2 s here; 15 s leaves room for a loaded 2-core machine.
ANVIL_START_TIMEOUT_S = 15.0
ANVIL_STOP_TIMEOUT_S = 5.0
# Per-request timeout for JSON-RPC over HTTP: long enough for a slow public node.
RPC_TIMEOUT_S = 30.0

_locks: weakref.WeakKeyDictionary[object, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def chain_lock(w3: Web3) -> threading.RLock:
    """The lock serialising every call to one provider (eth-tester is not thread-safe;
    for HTTP providers it also keeps one account's nonces in order)."""
    with _locks_guard:
        lock = _locks.get(w3.provider)
        if lock is None:
            lock = threading.RLock()
            _locks[w3.provider] = lock
        return lock


def embedded_web3() -> Web3:
    """A fresh in-process chain (eth-tester on py-evm, latest fork it ships: prague)."""
    return Web3(EthereumTesterProvider())


def rpc_web3(url: str, timeout_s: float = RPC_TIMEOUT_S) -> Web3:
    """A Web3 over HTTP JSON-RPC; raises ChainError if the endpoint does not answer."""
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    try:
        _ = w3.eth.chain_id  # first request: fails fast if nobody answers
    except Exception as exc:  # transport errors come in many types
        raise ChainError(f"no JSON-RPC answer from {url}: {exc}; is the node running?") from exc
    return w3


def is_embedded(w3: Web3) -> bool:
    return isinstance(w3.provider, EthereumTesterProvider)


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` (loopback unless said) a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Anvil:
    """A local anvil process: `with Anvil() as node: w3 = node.web3()`.

    Started on a free port of 127.0.0.1 (or of `host`: the simulation's private bridge
    when node processes live in their own network namespaces), with automine, the prague
    hardfork (what py-evm runs, so gas figures match) and the default funded dev accounts.

    `state_path` makes the chain survive a restart: anvil loads it at start-up if it
    exists and dumps the whole chain (blocks, receipts and logs, balances, contract
    storage) into it when stopped with SIGTERM (`stop()`). A SIGKILL dumps nothing; with
    `state_interval_s` anvil also dumps every that many seconds, so a SIGKILLed anvil
    comes back at its last periodic dump (anvil 1.7.1, checked in tests/chain).
    """

    def __init__(
        self,
        port: int | None = None,
        chain_id: int = ANVIL_CHAIN_ID,
        binary: Path = ANVIL_BIN,
        extra_args: tuple[str, ...] = (),
        state_path: Path | None = None,
        state_interval_s: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or free_loopback_port(host)
        self.chain_id = chain_id
        self.binary = binary
        self.extra_args = extra_args
        self.state_path = Path(state_path) if state_path is not None else None
        self.state_interval_s = state_interval_s
        if state_interval_s is not None and self.state_path is None:
            raise ChainError("Anvil: state_interval_s needs a state_path to dump into")
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []  # every incarnation, in start order

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Anvil:
        if not self.binary.exists():
            raise ChainError(
                f"anvil not found at {self.binary}; run scripts/setup.sh (npm ci in tools/)"
            )
        state: list[str] = []
        if self.state_path is not None:
            state = ["--state", str(self.state_path)]
            if self.state_interval_s is not None:
                state += ["--state-interval", str(self.state_interval_s)]
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--chain-id",
                str(self.chain_id),
                "--hardfork",
                "prague",
                "--silent",
                *state,
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pids.append(self.process.pid)
        deadline = time.monotonic() + ANVIL_START_TIMEOUT_S
        w3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 1.0}))
        while True:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.process = None
                raise ChainError(f"anvil exited at start-up: {err.strip() or 'no message'}")
            try:
                if w3.eth.chain_id == self.chain_id:
                    return self
            except Exception:  # noqa: BLE001, S110 - not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChainError(
                    f"anvil did not answer on {self.url} within {ANVIL_START_TIMEOUT_S} s"
                )
            time.sleep(0.05)

    def web3(self) -> Web3:
        return Web3(HTTPProvider(self.url, request_kwargs={"timeout": RPC_TIMEOUT_S}))

    def stop(self) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL after a grace period)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(ANVIL_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> Anvil:
        """Stop (SIGTERM: the chain is dumped to `state_path`) and start again on the same
        port and chain id, from the dumped chain. Without `state_path` the chain would come
        back empty, which is never what a restart means: ChainError."""
        if self.state_path is None:
            raise ChainError(
                "Anvil.restart needs state_path: without it the chain would restart empty"
            )
        self.stop()
        return self.start()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def fund(w3: Web3, address: str | bytes, wei: int) -> None:
    """Add `wei` to `address` on a test chain (eth-tester or anvil); ChainError elsewhere."""
    to = Web3.to_checksum_address(address)
    with chain_lock(w3):
        if is_embedded(w3):
            rich = w3.eth.accounts[0]  # eth-tester's unlocked, pre-funded account
            tx = w3.eth.send_transaction({"from": rich, "to": to, "value": Wei(wei)})
            w3.eth.wait_for_transaction_receipt(tx)
            return
        balance = w3.eth.get_balance(to)
        resp = w3.provider.make_request("anvil_setBalance", [to, hex(balance + wei)])  # type: ignore[arg-type]
        if resp.get("error"):
            raise ChainError(
                f"cannot fund {to}: {resp['error']}; funding works on eth-tester and anvil only"
            )


def mine_blocks(w3: Web3, count: int) -> None:
    """Mine `count` empty blocks on a test chain (e.g. to pass an unbonding delay)."""
    with chain_lock(w3):
        if is_embedded(w3):
            w3.provider.ethereum_tester.mine_blocks(count)  # type: ignore[attr-defined]
            return
        resp = w3.provider.make_request("anvil_mine", [hex(count)])  # type: ignore[arg-type]
        if resp.get("error"):
            raise ChainError(f"cannot mine: {resp['error']}")


def increase_time(w3: Web3, seconds: int) -> None:
    """Move a test chain's clock forward (the next block's timestamp)."""
    with chain_lock(w3):
        if is_embedded(w3):
            tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
            latest = w3.eth.get_block("latest")["timestamp"]
            tester.time_travel(latest + seconds)
            return
        resp = w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        if resp.get("error"):
            raise ChainError(f"cannot move time: {resp['error']}")
