"""Synchronous chain client: deploy, register, commit, claim, evidence, views.

Blocking by design (web3's AsyncWeb3 does not run under trio). Every call holds the
provider's lock (`providers.chain_lock`), so eth-tester sees one worker at a time. Trio code
uses `p2pfl.chain.trio_client.TrioChain`, which runs these methods through
`trio.to_thread.run_sync`.

Transactions are signed locally with eth-account; nonces are tracked here and
re-synchronised from the chain when a node says they are off. Transport errors are retried
with exponential backoff (seconds); past that they raise `ChainUnreachable`, which trio
callers ride out for longer (`trio_client.run_chain`: an RPC outage). A call or transaction
that reverts raises `ChainError` whose `revert_reason` names the contract's custom error
with its arguments, e.g. "WrongRound(expected=3, got=5)", whatever the node's error format.
"""

from __future__ import annotations

import ast
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)

from p2pfl.chain.artifacts import load_artifact
from p2pfl.chain.providers import chain_lock, is_embedded
from p2pfl.core.merkle import RewardLeaf
from p2pfl.core.signing import Domain, recover_signer, vote_digest
from p2pfl.errors import ChainError, InvalidSignature
from p2pfl.task_access import PostedWrap

T = TypeVar("T")

# Transport failures worth retrying: the request may not have reached the node.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
    TimeoutError,
)
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# Gas limit = estimate * 1.2 + 50k. State may move between estimate and inclusion, and
# the registry's stake checkpoints cost two extra new slots (2 x 22.1k) when the tx
# lands in a later block than the last checkpoint. Only gas used is paid.
GAS_MARGIN_NUM, GAS_MARGIN_DEN, GAS_MARGIN_ADD = 6, 5, 50_000
RECEIPT_TIMEOUT_S = 120.0
# Registry pages fetched per call when listing nodes or stakes.
PAGE = 200
# Registry snapshots kept (one per committed round in use); see committee_stakes.
SNAPSHOT_CACHE_SIZE = 64
# Keyed by the snapshot block's *hash*: a block number alone names different states on
# two chains with the same id and addresses (every fresh eth-tester or anvil devnet), which
# once handed a second simulation in one process the first one's stakes (a committee the
# contract refused: NotEligible), and would survive a reorg.
_SNAPSHOT_CACHE: dict[tuple[int, str, bytes], dict[bytes, int]] = {}
# One reader fills a missing snapshot while the process's other clients wait for it: the 50
# nodes of a simulation shard start a round together, and each had read the whole registry.
_SNAPSHOT_FILL = threading.Lock()

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


class ChainUnreachable(ChainError):
    """The RPC endpoint did not answer (connection refused, timeout) after the quick
    retries: nothing is known to have happened on-chain, so the call may be repeated.
    For a transaction that may have been sent, `tx_hash` is set."""

    def __init__(self, message: str, what: str, tx_hash: bytes | None = None) -> None:
        self.what = what
        self.tx_hash = tx_hash
        super().__init__(message)


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live; saved as JSON for `p2pfl` commands and the node."""

    chain_id: int
    registry: str  # checksum address
    ledger: str
    block: int  # deployment block: followers start there

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "registry": self.registry,
                "ledger": self.ledger,
                "block": self.block,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        d = json.loads(text)
        return cls(
            int(d["chain_id"]),
            to_checksum_address(d["registry"]),
            to_checksum_address(d["ledger"]),
            int(d["block"]),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, KeyError, ValueError) as exc:
            raise ChainError(f"cannot read deployment file {path}: {exc}") from exc

    def domain(self) -> Domain:
        """The EIP-712 domain votes and evidence are signed under."""
        return Domain(self.chain_id, bytes.fromhex(self.ledger[2:]))


@dataclass(frozen=True)
class TxResult:
    tx_hash: bytes
    block_number: int
    gas_used: int
    events: tuple[tuple[str, dict[str, Any]], ...] = ()

    def event(self, name: str) -> dict[str, Any]:
        """Arguments of the first event called `name` (KeyError if none)."""
        for n, args in self.events:
            if n == name:
                return args
        raise KeyError(name)


@dataclass(frozen=True)
class NodeInfo:
    address: bytes
    peer_id: bytes
    enc_key: bytes
    stake: int
    unbonding: int
    release_block: int
    reputation: int
    tier: int
    active: bool
    banned: bool  # slashed: ejected (stake 0 from the slash on) and never registers again


@dataclass(frozen=True)
class TaskInfo:
    task: bytes
    last_round: int
    last_result: bytes
    last_commit_block: int
    last_commit_time: int
    committee_size: int
    quorum: int
    escrow: int
    reward_per_round: int
    creator: bytes
    redraw_delay_s: int

    @property
    def exists(self) -> bool:
        return self.committee_size > 0

    @property
    def snapshot_block(self) -> int:
        """Block whose end-state stakes elect round last_round + 1."""
        return self.last_commit_block - 1


@dataclass(frozen=True)
class RoundCommitted:
    task: bytes
    round: int
    attempt: int
    view: int
    base: bytes
    result: bytes
    contributors_root: bytes
    reward: int
    signers: int
    block_number: int
    tx_hash: bytes
    log_index: int
    # The hash of the block holding the commit (b"": not known, e.g. built by hand).
    block_hash: bytes = b""


@dataclass(frozen=True)
class Vote:
    """One committee signature over a VOTE statement, with its recovered signer."""

    signer: bytes
    signature: bytes


# ---------------------------------------------------------------- revert decoding


def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in ("NodeRegistry", "RoundLedger"):
        for item in load_artifact(name)["abi"]:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            sig = f"{item['name']}({','.join(types)})"
            table[keccak(text=sig)[:4]] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


_ERRORS: dict[bytes, tuple[str, list[str], list[str]]] | None = None


def _fmt(value: Any, typ: str) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if typ == "address":
        return to_checksum_address(value)
    return str(value)


def decode_revert_data(data: bytes) -> str:
    """Human/machine-readable reason for raw revert data: `Name(arg=value, ...)`."""
    global _ERRORS
    if _ERRORS is None:
        _ERRORS = _error_table()
    if not data:
        return "reverted without reason"
    selector, payload = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            return abi_decode(["string"], payload)[0]
        if selector == _PANIC:
            return f"Panic(code=0x{abi_decode(['uint256'], payload)[0]:02x})"
        if selector in _ERRORS:
            name, names, types = _ERRORS[selector]
            values = abi_decode(types, payload)
            return (
                f"{name}({', '.join(f'{n}={_fmt(v, t)}' for n, v, t in zip(names, values, types))})"
            )
    except Exception:  # noqa: BLE001, S110 - undecodable payload: fall through to hex
        pass
    return "0x" + data.hex()


def _bytes_from_hexish(value: Any) -> bytes | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def revert_reason(exc: BaseException) -> str | None:
    """The revert reason inside any provider's error, or None if `exc` is not a revert.

    eth-tester raises TransactionFailed("execution reverted: b'...'") (a bytes repr) or
    with a decoded string; JSON-RPC nodes (anvil, geth) return `data` as hex, which
    web3 surfaces as ContractCustomError/ContractLogicError(.data) or Web3RPCError.
    """
    if isinstance(exc, ContractLogicError):
        data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
        raw = _bytes_from_hexish(data)
        if raw is not None:
            return decode_revert_data(raw)
        msg = exc.message or str(exc)
        return (
            msg.removeprefix("execution reverted: ").removeprefix("execution reverted")
            or "reverted"
        )
    if type(exc).__name__ == "TransactionFailed":  # eth_tester.exceptions, imported lazily
        text = str(exc.args[0]) if exc.args else ""
        text = text.removeprefix("execution reverted: ")
        if text.startswith(("b'", 'b"')):
            try:
                return decode_revert_data(ast.literal_eval(text))
            except (ValueError, SyntaxError):
                pass
        return text or "reverted without reason"
    if isinstance(exc, Web3RPCError):
        err = (exc.rpc_response or {}).get("error") if isinstance(exc.rpc_response, dict) else None
        if isinstance(err, dict):
            raw = _bytes_from_hexish(err.get("data"))
            if raw is not None:
                return decode_revert_data(raw)
            if "revert" in str(err.get("message", "")):
                return str(err.get("message"))
    return None


# ---------------------------------------------------------------- sender


def _addr(value: str | bytes) -> ChecksumAddress:
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 20:
            raise ChainError(f"address must be 20 bytes, got {len(value)}")
        return to_checksum_address(bytes(value))
    return to_checksum_address(value)


def _b32(value: bytes, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ChainError(f"{name} must be 32 bytes")
    return bytes(value)


class TxSender:
    """Signs and sends transactions for one account: nonces, retries, revert reasons."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.retries = retries
        self.backoff_s = backoff_s
        self.lock = chain_lock(w3)
        self._nonce: int | None = None
        self._chain_id: int | None = None
        self._embedded = is_embedded(w3)

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transport errors with exponential backoff."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except TRANSPORT_ERRORS as exc:
                if attempt == self.retries:
                    raise ChainUnreachable(
                        f"{what}: chain unreachable after {self.retries + 1} tries ({exc}); check "
                        "the RPC URL",
                        what,
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.retry("chain id", lambda: self.w3.eth.chain_id)
        return self._chain_id

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """A read-only call; reverts become ChainError with the reason."""
        with self.lock:
            try:
                return self.retry(what, fn)
            except ChainError:
                raise
            except Exception as exc:
                reason = revert_reason(exc)
                if reason is None:
                    raise ChainError(f"{what} failed: {exc}") from exc
                raise ChainError(f"{what} reverted: {reason}", reason) from exc

    def transact(
        self, what: str, fn: Any, value: int = 0, gas: int | None = None
    ) -> dict[str, Any]:
        """Estimate (which surfaces reverts with their reason), sign, send, wait; returns the "
        "receipt."""
        with self.lock:
            params: dict[str, Any] = {"from": self.account.address, "value": value}
            if gas is None:
                try:
                    # JSON-RPC nodes estimate in the pending block, like inclusion will
                    # (anvil's default, "latest", reuses the last block number);
                    # eth-tester has no "pending" and already uses the next block.
                    block = "latest" if self._embedded else "pending"
                    estimate = self.retry(
                        what, lambda: fn.estimate_gas(params, block_identifier=block)
                    )
                except ChainError:
                    raise
                except Exception as exc:
                    reason = revert_reason(exc)
                    if reason is None:
                        raise ChainError(f"{what}: gas estimation failed: {exc}") from exc
                    raise ChainError(f"{what} reverted: {reason}", reason) from exc
                gas = estimate * GAS_MARGIN_NUM // GAS_MARGIN_DEN + GAS_MARGIN_ADD
            for resync in (False, True):
                if resync or self._nonce is None:
                    self._nonce = self.retry(
                        "nonce",
                        lambda: self.w3.eth.get_transaction_count(self.account.address, "pending"),
                    )
                nonce, chain_id = self._nonce, self.chain_id()
                tx = self.retry(  # asks the node for fee figures
                    what,
                    lambda: fn.build_transaction(
                        {**params, "gas": gas, "nonce": nonce, "chainId": chain_id}
                    ),
                )
                signed = self.account.sign_transaction(tx)
                try:
                    tx_hash = self._send_raw(signed.raw_transaction, bytes(signed.hash))
                except ChainUnreachable:
                    raise
                except ChainError as exc:
                    if not resync and "nonce" in str(exc).lower():
                        continue  # someone else used this account: resync once
                    raise
                self._nonce += 1
                return self._wait(what, tx_hash, fn, params)
            raise AssertionError("unreachable")

    def _send_raw(self, raw: bytes, tx_hash: bytes) -> bytes:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return bytes(self.w3.eth.send_raw_transaction(raw))
            except TRANSPORT_ERRORS as exc:
                if attempt == self.retries:
                    raise ChainUnreachable(
                        f"cannot send transaction: chain unreachable ({exc})", "send", tx_hash
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
            except Exception as exc:
                text = str(exc).lower()
                if "already known" in text or "already imported" in text:
                    return tx_hash  # a retried send that had in fact arrived
                raise ChainError(f"transaction rejected by the node: {exc}") from exc
        raise AssertionError("unreachable")

    def _gas_limit(self, tx_hash: bytes) -> int:
        try:
            return int(self.w3.eth.get_transaction(HexBytes(tx_hash))["gas"])
        except Exception:  # noqa: BLE001 - informational only
            return -1

    def _wait(self, what: str, tx_hash: bytes, fn: Any, params: dict[str, Any]) -> dict[str, Any]:
        try:
            receipt = self.retry(
                "receipt",
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash), timeout=RECEIPT_TIMEOUT_S
                ),
            )
        except ChainUnreachable as exc:
            exc.tx_hash = tx_hash  # sent: it may be on-chain already
            raise
        except (TimeExhausted, TransactionNotFound) as exc:
            raise ChainError(
                f"{what}: transaction 0x{tx_hash.hex()} not mined in {RECEIPT_TIMEOUT_S} s"
            ) from exc
        if receipt["status"] != 1:
            # Replay at the parent block to learn why (state may differ slightly).
            reason = "reverted without reason"
            if self._gas_limit(tx_hash) == receipt["gasUsed"]:
                raise ChainError(
                    f"{what} ran out of gas ({receipt['gasUsed']}) in block "
                    f"{receipt['blockNumber']}"
                )
            try:
                fn.call(params, block_identifier=receipt["blockNumber"] - 1)
            except Exception as exc:  # noqa: BLE001 - any provider's revert shape
                reason = revert_reason(exc) or reason
            raise ChainError(f"{what} reverted in block {receipt['blockNumber']}: {reason}", reason)
        return dict(receipt)


# ---------------------------------------------------------------- deploy


# Defaults for `p2pfl chain deploy`: stake tiers in wei and an unbonding delay long
# enough (about a day at 12 s blocks) for equivocation evidence to land.
DEFAULT_MIN_STAKE = 10**18
DEFAULT_COMPUTE_STAKE = 5 * 10**18
DEFAULT_TRUSTED_STAKE = 20 * 10**18
DEFAULT_UNBONDING_BLOCKS = 7_200


def deploy(
    w3: Web3,
    account: LocalAccount,
    min_stake: int = DEFAULT_MIN_STAKE,
    compute_stake: int = DEFAULT_COMPUTE_STAKE,
    trusted_stake: int = DEFAULT_TRUSTED_STAKE,
    unbonding_blocks: int = DEFAULT_UNBONDING_BLOCKS,
) -> Deployment:
    """Deploy NodeRegistry and RoundLedger and bind them; three transactions."""
    sender = TxSender(w3, account)
    reg_art, led_art = load_artifact("NodeRegistry"), load_artifact("RoundLedger")
    reg_factory = w3.eth.contract(abi=reg_art["abi"], bytecode=reg_art["bytecode"])
    r1 = sender.transact(
        "deploy NodeRegistry",
        reg_factory.constructor(min_stake, compute_stake, trusted_stake, unbonding_blocks),
    )
    registry = r1["contractAddress"]
    led_factory = w3.eth.contract(abi=led_art["abi"], bytecode=led_art["bytecode"])
    r2 = sender.transact("deploy RoundLedger", led_factory.constructor(registry))
    ledger = r2["contractAddress"]
    reg = w3.eth.contract(address=registry, abi=reg_art["abi"])
    sender.transact("bind ledger", reg.functions.bindLedger(ledger))
    return Deployment(
        sender.chain_id(),
        to_checksum_address(registry),
        to_checksum_address(ledger),
        r1["blockNumber"],
    )


# ---------------------------------------------------------------- client


class ChainClient:
    """One account's view of a p2pfl deployment. Addresses are 20-byte `bytes`."""

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        account: LocalAccount | bytes | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
    ) -> None:
        if isinstance(account, (bytes, bytearray)):
            account = Account.from_key(bytes(account))
        self.w3 = w3
        self.deployment = deployment
        self.account: LocalAccount | None = account
        self.registry = w3.eth.contract(
            address=Web3.to_checksum_address(deployment.registry),
            abi=load_artifact("NodeRegistry")["abi"],
        )
        self.ledger = w3.eth.contract(
            address=Web3.to_checksum_address(deployment.ledger),
            abi=load_artifact("RoundLedger")["abi"],
        )
        self._sender = TxSender(w3, self.account or Account.create(), retries, backoff_s)
        self._events = {}
        for contract in (self.registry, self.ledger):
            for item in contract.abi:
                if item.get("type") == "event":
                    sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                    self._events[keccak(text=sig)] = getattr(contract.events, item["name"])()

    # -------------------------------------------------------- basics

    @property
    def address(self) -> bytes:
        if self.account is None:
            raise ChainError("this client has no account: pass a key to send transactions")
        return bytes.fromhex(self.account.address[2:])

    def domain(self) -> Domain:
        return self.deployment.domain()

    def block_number(self) -> int:
        return self._sender.call("block number", lambda: self.w3.eth.block_number)

    def balance(self, address: bytes | None = None) -> int:
        a = _addr(address if address is not None else self.address)
        return self._sender.call("balance", lambda: self.w3.eth.get_balance(a))

    def _tx(self, what: str, fn: Any, value: int = 0, gas: int | None = None) -> TxResult:
        if self.account is None:
            raise ChainError(f"{what}: this client has no account to send from")
        receipt = self._sender.transact(what, fn, value, gas)
        events = []
        for log in receipt["logs"]:
            ev = self._events.get(bytes(log["topics"][0])) if log["topics"] else None
            if ev is not None:
                data = ev.process_log(log)
                events.append((data["event"], dict(data["args"])))
        return TxResult(
            bytes(receipt["transactionHash"]),
            receipt["blockNumber"],
            receipt["gasUsed"],
            tuple(events),
        )

    def _call(self, what: str, fn: Any, block: int | str = "latest") -> Any:
        return self._sender.call(what, lambda: fn.call(block_identifier=block))

    # -------------------------------------------------------- registry: transactions

    def register(self, peer_id: bytes, enc_key: bytes, stake_wei: int) -> TxResult:
        """Register this account's node (peer ID bytes, X25519 key) with `stake_wei`."""
        return self._tx(
            "register",
            self.registry.functions.register(bytes(peer_id), _b32(enc_key, "enc_key")),
            stake_wei,
        )

    def update_keys(self, peer_id: bytes, enc_key: bytes) -> TxResult:
        return self._tx(
            "updateKeys",
            self.registry.functions.updateKeys(bytes(peer_id), _b32(enc_key, "enc_key")),
        )

    def rotation_digest(self, successor: bytes, node: bytes | None = None) -> bytes:
        """What the successor key signs to prove possession (NodeRegistry.rotationDigest)."""
        return keccak(
            b"p2pfl-rotate-key"
            + self.deployment.chain_id.to_bytes(32, "big")
            + bytes.fromhex(self.deployment.registry.removeprefix("0x"))
            + bytes(node if node is not None else self.address)
            + bytes(successor)
        )

    def rotate_key(self, successor_key: bytes, peer_id: bytes, enc_key: bytes) -> TxResult:
        """Move this node's stake and reputation to the address of `successor_key` (with its
        peer ID and X25519 key) from this block on; the successor signs the possession proof."""
        from eth_keys import keys

        successor = keys.PrivateKey(bytes(successor_key))
        address = successor.public_key.to_canonical_address()
        proof = successor.sign_msg_hash(self.rotation_digest(address)).to_bytes()
        return self._tx(
            "rotateKey",
            self.registry.functions.rotateKey(
                _addr(address), bytes(peer_id), _b32(enc_key, "enc_key"), proof
            ),
        )

    def successor_of(self, address: bytes) -> bytes | None:
        """The key `address` rotated to, or None."""
        a = self._call("successorOf", self.registry.functions.successorOf(_addr(address)))
        out = bytes.fromhex(a[2:])
        return None if out == bytes(20) else out

    def current_key(self, address: bytes) -> bytes:
        """The key `address` answers for now (itself, or the last of its rotations)."""
        a = self._call("currentKey", self.registry.functions.currentKey(_addr(address)))
        return bytes.fromhex(a[2:])

    def top_up(self, amount_wei: int) -> TxResult:
        return self._tx("topUp", self.registry.functions.topUp(), amount_wei)

    def exit(self) -> TxResult:
        """Start unbonding all active stake (withdrawable after the unbonding delay)."""
        return self._tx("exit", self.registry.functions.exit())

    def withdraw(self) -> TxResult:
        return self._tx("withdraw", self.registry.functions.withdraw())

    # -------------------------------------------------------- registry: views

    def node_info(self, address: bytes | None = None) -> NodeInfo:
        a = address if address is not None else self.address
        r = self._call("nodeInfo", self.registry.functions.nodeInfo(_addr(a)))
        return NodeInfo(
            bytes(a), bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8]
        )

    def stake_at(self, address: bytes, block: int) -> int:
        return self._call("stakeAt", self.registry.functions.stakeAt(_addr(address), block))

    def total_stake_at(self, block: int) -> int:
        return self._call("totalStakeAt", self.registry.functions.totalStakeAt(block))

    def registered_nodes(self) -> list[bytes]:
        """Every address that ever registered, in registration order."""
        n = self._call("nodeCount", self.registry.functions.nodeCount())
        out: list[bytes] = []
        for start in range(0, n, PAGE):
            page = self._call("nodesPage", self.registry.functions.nodesPage(start, PAGE))
            out.extend(bytes.fromhex(a[2:]) for a in page)
        return out

    def stakes_at(
        self, block: int, addresses: Sequence[bytes] | None = None
    ) -> tuple[int, dict[bytes, int]]:
        """(total active stake, {address: active stake > 0}) at the end of `block`."""
        nodes = list(addresses) if addresses is not None else self.registered_nodes()
        total = self.total_stake_at(block)
        stakes: dict[bytes, int] = {}
        for start in range(0, len(nodes), PAGE):
            chunk = nodes[start : start + PAGE]
            _, values = self._call(
                "stakesAt", self.registry.functions.stakesAt([_addr(a) for a in chunk], block)
            )
            stakes.update({a: s for a, s in zip(chunk, values) if s > 0})
        return total, stakes

    def committee_stakes(
        self, task: bytes, after: RoundCommitted | None = None
    ) -> tuple[int, dict[bytes, int]]:
        """(snapshot block, {address: stake}) that elects the task's next round.

        Feed the mapping to `p2pfl.core.sortition.committee_for`: its total equals the
        registry's total at the snapshot block because every node is listed. A past
        block's stakes never change, so the answer is cached per (chain, registry, block
        hash) and shared by every client of this process (a simulation's nodes ask together;
        one of them reads a missing snapshot, the others wait for it).

        `after`: the commit of the task's last round, as the commit follower read it. The
        snapshot is then the block before the commit's (the ledger's `snapshotBlock`), keyed
        by the commit block's hash (which names its parent), with no call for either.
        """
        if after is not None and after.block_hash:
            block = after.block_number - 1
            key = (
                self.deployment.chain_id,
                self.deployment.registry,
                b"parent:" + after.block_hash,
            )
        else:
            block = self.snapshot_block(task)
            block_hash = bytes(
                self._sender.call("block hash", lambda: self.w3.eth.get_block(block)["hash"])
            )
            key = (self.deployment.chain_id, self.deployment.registry, block_hash)
        cached = _SNAPSHOT_CACHE.get(key)
        if cached is None:
            with _SNAPSHOT_FILL:
                cached = _SNAPSHOT_CACHE.get(key)
                if cached is None:
                    _, cached = self.stakes_at(block)
                    _SNAPSHOT_CACHE[key] = cached
                    while len(_SNAPSHOT_CACHE) > SNAPSHOT_CACHE_SIZE:
                        _SNAPSHOT_CACHE.pop(next(iter(_SNAPSHOT_CACHE)))
        return block, dict(cached)

    # -------------------------------------------------------- ledger: transactions

    def create_task(
        self,
        task: bytes,
        initial_model: bytes,
        committee_size: int,
        quorum: int,
        reward_per_round_wei: int,
        escrow_wei: int,
        redraw_delay_s: int = 30,
    ) -> TxResult:
        """Open a task with its reward budget escrowed (quorum is raised to ceil(2k/3))."""
        fn = self.ledger.functions.createTask(
            _b32(task, "task"),
            _b32(initial_model, "initial_model"),
            committee_size,
            quorum,
            reward_per_round_wei,
            redraw_delay_s,
        )
        return self._tx("createTask", fn, escrow_wei)

    def fund_task(self, task: bytes, amount_wei: int) -> TxResult:
        return self._tx("fundTask", self.ledger.functions.fundTask(_b32(task, "task")), amount_wei)

    def create_private_task(
        self,
        task: bytes,
        initial_model: bytes,
        committee_size: int,
        quorum: int,
        reward_per_round_wei: int,
        escrow_wei: int,
        redraw_delay_s: int,
        price_wei: int,
        model_key_digest: bytes,
    ) -> TxResult:
        """Open a private task: models sealed under a task model key committed to by
        `model_key_digest` (p2pfl.task_access.key_digest); access sold for `price_wei`."""
        fn = self.ledger.functions.createPrivateTask(
            _b32(task, "task"),
            _b32(initial_model, "initial_model"),
            committee_size,
            quorum,
            reward_per_round_wei,
            redraw_delay_s,
            price_wei,
            _b32(model_key_digest, "model_key_digest"),
        )
        return self._tx("createPrivateTask", fn, escrow_wei)

    def buy_access(self, task: bytes, enc_key: bytes, price_wei: int) -> TxResult:
        """Pay `price_wei` for access to a private task's models for our X25519 key
        `enc_key` (the contract refuses any amount but the task's price)."""
        fn = self.ledger.functions.buyAccess(_b32(task, "task"), _b32(enc_key, "enc_key"))
        return self._tx("buyAccess", fn, price_wei)

    def post_key_wrap(self, task: bytes, recipient: bytes, enc_key: bytes, wrap: bytes) -> TxResult:
        """Publish the task model key wrapped to `recipient`'s X25519 key `enc_key`."""
        fn = self.ledger.functions.postKeyWrap(
            _b32(task, "task"), _addr(recipient), _b32(enc_key, "enc_key"), bytes(wrap)
        )
        return self._tx("postKeyWrap", fn)

    def sort_votes(
        self,
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        base: bytes,
        result: bytes,
        contributors_root: bytes,
        signatures: Iterable[bytes],
    ) -> list[Vote]:
        """Recover each vote's signer (p2pfl.core.signing), drop duplicates and bad
        signatures, and order by ascending signer as commitRound requires."""
        digest = vote_digest(
            self.domain(), task, round, attempt, view, base, result, contributors_root
        )
        by_signer: dict[bytes, bytes] = {}
        for sig in signatures:
            try:
                by_signer.setdefault(recover_signer(digest, bytes(sig)), bytes(sig))
            except InvalidSignature:
                continue
        return [Vote(s, by_signer[s]) for s in sorted(by_signer)]

    def commit_round(
        self,
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        base: bytes,
        result: bytes,
        contributors_root: bytes,
        votes: Iterable[tuple[bytes, bytes]],
        gas: int | None = None,
    ) -> TxResult:
        """Commit a round with the committee's VOTE signatures as (signer, signature) pairs.

        The signers are the ones the caller verified (the round machine checks every vote
        of a certificate; `sort_votes` recovers them from bare signatures): they are not
        recovered again here. Any order; ordered by ascending signer and de-duplicated
        here, as commitRound requires. The contract checks each signature on its own.
        """
        by_signer: dict[bytes, bytes] = {}
        for signer, signature in votes:
            by_signer.setdefault(bytes(signer), bytes(signature))
        fn = self.ledger.functions.commitRound(
            _b32(task, "task"),
            round,
            attempt,
            view,
            _b32(base, "base"),
            _b32(result, "result"),
            _b32(contributors_root, "contributors_root"),
            b"".join(by_signer[s] for s in sorted(by_signer)),
        )
        return self._tx("commitRound", fn, gas=gas)

    def claim(self, task: bytes, round: int, leaf: RewardLeaf, proof: Sequence[bytes]) -> TxResult:
        """Claim one reward leaf (paid to leaf.account, whoever sends)."""
        fn = self.ledger.functions.claim(
            _b32(task, "task"),
            round,
            leaf.index,
            leaf.role,
            _addr(leaf.account),
            leaf.amount,
            [bytes(p) for p in proof],
        )
        return self._tx("claim", fn)

    def report_rejected(
        self, task: bytes, round: int, leaf: RewardLeaf, proof: Sequence[bytes]
    ) -> TxResult:
        """Record a REJECTED leaf of a committed round (lowers that node's reputation)."""
        fn = self.ledger.functions.reportRejected(
            _b32(task, "task"), round, leaf.index, _addr(leaf.account), [bytes(p) for p in proof]
        )
        return self._tx("reportRejected", fn)

    def submit_equivocation(
        self,
        kind: int,
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        body_a: bytes,
        sig_a: bytes,
        body_b: bytes,
        sig_b: bytes,
    ) -> TxResult:
        """Submit two conflicting statements signed by one node: slashes it, pays us a share."""
        fn = self.ledger.functions.submitEquivocation(
            kind,
            _b32(task, "task"),
            round,
            attempt,
            view,
            _b32(body_a, "body_a"),
            bytes(sig_a),
            _b32(body_b, "body_b"),
            bytes(sig_b),
        )
        return self._tx("submitEquivocation", fn)

    # -------------------------------------------------------- ledger: views

    def task_info(self, task: bytes) -> TaskInfo:
        r = self._call("taskInfo", self.ledger.functions.taskInfo(_b32(task, "task")))
        return TaskInfo(
            bytes(task),
            r[0],
            bytes(r[1]),
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            bytes.fromhex(r[8][2:]),
            r[9],
        )

    def access_price(self, task: bytes) -> int:
        """The price of access to a private task in wei; 0 for a public (or unknown) task."""
        return self._call("accessPrice", self.ledger.functions.accessPrice(_b32(task, "task")))

    def model_key_digest(self, task: bytes) -> bytes:
        """The digest the task model key must match (zero for a public task)."""
        return bytes(
            self._call("modelKeyDigest", self.ledger.functions.modelKeyDigest(_b32(task, "task")))
        )

    def buyer_key(self, task: bytes, buyer: bytes) -> bytes | None:
        """The X25519 key `buyer` bought access for, or None if it did not buy."""
        k = bytes(
            self._call("buyerKey", self.ledger.functions.buyerKey(_b32(task, "task"), _addr(buyer)))
        )
        return None if k == bytes(32) else k

    def access_purchases(self, task: bytes, from_block: int = 0) -> list[tuple[bytes, bytes, int]]:
        """(buyer, X25519 key, block) of every AccessBought event of `task`, in chain order."""
        event = self.ledger.events.AccessBought()
        logs = self._sender.call(
            "getLogs",
            lambda: event.get_logs(
                from_block=from_block,
                to_block="latest",
                argument_filters={"task": _b32(task, "task")},
            ),
        )
        logs = sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"]))
        return [
            (bytes.fromhex(e["args"]["buyer"][2:]), bytes(e["args"]["encKey"]), e["blockNumber"])
            for e in logs
        ]

    def key_wraps(
        self, task: bytes, recipient: bytes | None = None, from_block: int = 0
    ) -> list[PostedWrap]:
        """KeyWrapped events of `task` (for `recipient` only if given), in chain order."""
        flt: dict[str, Any] = {"task": _b32(task, "task")}
        if recipient is not None:
            flt["recipient"] = _addr(recipient)
        event = self.ledger.events.KeyWrapped()
        logs = self._sender.call(
            "getLogs",
            lambda: event.get_logs(from_block=from_block, to_block="latest", argument_filters=flt),
        )
        out = []
        for e in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
            a = e["args"]
            out.append(
                PostedWrap(
                    bytes(a["task"]),
                    bytes.fromhex(a["recipient"][2:]),
                    bytes.fromhex(a["poster"][2:]),
                    bytes(a["encKey"]),
                    bytes(a["wrap"]),
                    e["blockNumber"],
                )
            )
        return out

    def snapshot_block(self, task: bytes) -> int:
        return self._call("snapshotBlock", self.ledger.functions.snapshotBlock(_b32(task, "task")))

    def round_root(self, task: bytes, round: int) -> bytes:
        return bytes(
            self._call("roundRoot", self.ledger.functions.roundRoot(_b32(task, "task"), round))
        )

    def round_remaining(self, task: bytes, round: int) -> int:
        return self._call(
            "roundRemaining", self.ledger.functions.roundRemaining(_b32(task, "task"), round)
        )

    def is_consumed(self, task: bytes, round: int, index: int) -> bool:
        return self._call(
            "isConsumed", self.ledger.functions.isConsumed(_b32(task, "task"), round, index)
        )

    def evidence_used(
        self, signer: bytes, kind: int, task: bytes, round: int, attempt: int, view: int
    ) -> bool:
        eid = keccak(
            bytes(12)
            + bytes(signer)
            + kind.to_bytes(32, "big")
            + _b32(task, "task")
            + round.to_bytes(32, "big")
            + attempt.to_bytes(32, "big")
            + view.to_bytes(32, "big")
        )
        return self._call("evidenceUsed", self.ledger.functions.evidenceUsed(eid))

    def task_created_block(self, task: bytes) -> int | None:
        """The block that created `task` (its "commit of round 0"), None if none did."""
        event = self.ledger.events.TaskCreated()
        logs = self._sender.call(
            "getLogs",
            lambda: event.get_logs(
                from_block=0, to_block="latest", argument_filters={"task": _b32(task, "task")}
            ),
        )
        return min((e["blockNumber"] for e in logs), default=None)

    def commit_signatures(self, tx_hash: bytes) -> bytes:
        """The votes of a commit: the `signatures` argument of the commitRound call in
        transaction `tx_hash` (ChainError if the transaction is not such a call to our
        ledger, e.g. one made through another contract)."""
        tx = self._sender.call(
            "getTransaction", lambda: self.w3.eth.get_transaction(HexBytes(tx_hash))
        )
        to = tx.get("to") or ""
        if to.lower() != self.deployment.ledger.lower():
            raise ChainError(f"transaction 0x{tx_hash.hex()} does not call the ledger directly")
        try:
            fn, args = self.ledger.decode_function_input(tx["input"])
        except ValueError as exc:
            raise ChainError(f"transaction 0x{tx_hash.hex()}: undecodable input ({exc})") from None
        if fn.fn_name != "commitRound":
            raise ChainError(f"transaction 0x{tx_hash.hex()} calls {fn.fn_name}, not commitRound")
        return bytes(args["signatures"])

    def commits(
        self, from_block: int, to_block: int, task: bytes | None = None
    ) -> list[RoundCommitted]:
        """RoundCommitted events in [from_block, to_block], in chain order."""
        event = self.ledger.events.RoundCommitted()
        flt: dict[str, Any] = {"task": _b32(task, "task")} if task is not None else {}
        logs = self._sender.call(
            "getLogs",
            lambda: event.get_logs(
                from_block=from_block, to_block=to_block, argument_filters=flt or None
            ),
        )
        out = []
        for ev in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
            a = ev["args"]
            out.append(
                RoundCommitted(
                    bytes(a["task"]),
                    a["round"],
                    a["attempt"],
                    a["view_"],
                    bytes(a["base"]),
                    bytes(a["result"]),
                    bytes(a["contributorsRoot"]),
                    a["reward"],
                    a["signers"],
                    ev["blockNumber"],
                    bytes(ev["transactionHash"]),
                    ev["logIndex"],
                    bytes(ev["blockHash"]),
                )
            )
        return out
