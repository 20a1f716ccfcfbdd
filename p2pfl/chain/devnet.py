"""A ready-made local deployment with funded, registered nodes (tests, benches, simulation).

    net = DevNet.create(embedded_web3(), n_nodes=10)
    net.clients[0].create_task(...)

Keys are derived deterministically from `seed` so that runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from p2pfl.chain.client import ChainClient, Deployment, deploy
from p2pfl.chain.providers import fund
from p2pfl.core.identity import NodeIdentity
from p2pfl.core.signing import address_of, sign_digest, vote_digest
from p2pfl.core.sortition import draw

ETHER = 10**18
# Enough for many transactions at local-chain gas prices on top of the stake.
DEFAULT_GAS_FUNDS = 100 * ETHER


def dev_key(seed: int, i: int) -> bytes:
    """Deterministic secp256k1 private key number `i` (valid with overwhelming probability)."""
    return keccak(b"p2pfl-devnet" + seed.to_bytes(8, "big") + i.to_bytes(8, "big"))


@dataclass
class DevNet:
    w3: Web3
    deployment: Deployment
    admin: ChainClient
    keys: list[bytes]
    clients: list[ChainClient]

    @classmethod
    def create(
        cls,
        w3: Web3,
        n_nodes: int,
        stakes: Sequence[int] | None = None,
        seed: int = 0,
        min_stake: int = ETHER,
        unbonding_blocks: int = 5,
        register: bool = True,
    ) -> DevNet:
        """Deploy, fund `n_nodes` accounts and (optionally) register them with `stakes`."""
        admin_key = dev_key(seed, 10**6)
        fund(w3, Account.from_key(admin_key).address, DEFAULT_GAS_FUNDS)
        dep = deploy(
            w3,
            Account.from_key(admin_key),
            min_stake=min_stake,
            compute_stake=5 * min_stake,
            trusted_stake=20 * min_stake,
            unbonding_blocks=unbonding_blocks,
        )
        stakes = list(stakes) if stakes is not None else [2 * min_stake] * n_nodes
        keys = [dev_key(seed, i) for i in range(n_nodes)]
        clients = []
        for key, stake in zip(keys, stakes):
            fund(w3, Account.from_key(key).address, stake + DEFAULT_GAS_FUNDS)
            client = ChainClient(w3, dep, key)
            if register:
                # The node's real X25519 key (derived from its account key, as a keystore's
                # is): sealed updates wrap their content keys to it.
                client.register(peer_id_stub(key), NodeIdentity(key).x25519_public_key, stake)
            clients.append(client)
        return cls(w3, dep, ChainClient(w3, dep, admin_key), keys, clients)

    def key_of(self, address: bytes) -> bytes:
        for key in self.keys:
            if address_of(key) == address:
                return key
        raise KeyError(address.hex())

    def committee(self, task: bytes, round: int, base: bytes, attempt: int, k: int) -> list[bytes]:
        """The committee the contract will accept for this draw (stakes at the snapshot)."""
        _, stakes = self.admin.committee_stakes(task)
        return draw(task, round, base, attempt, stakes, k)

    def votes(
        self,
        signers: Sequence[bytes],
        task: bytes,
        round: int,
        attempt: int,
        view: int,
        base: bytes,
        result: bytes,
        contributors_root: bytes,
    ) -> list[bytes]:
        """VOTE signatures by `signers` (addresses of devnet keys), made with p2pfl.core.signing."""
        digest = vote_digest(
            self.deployment.domain(), task, round, attempt, view, base, result, contributors_root
        )
        return [sign_digest(self.key_of(a), digest) for a in signers]


def peer_id_stub(key: bytes) -> bytes:
    """A stand-in libp2p peer ID for tests: identity multihash prefix + 37 bytes."""
    return bytes([0x00, 0x25]) + keccak(b"peer" + key)[:5] + keccak(key)
