"""Gas of every public contract function on the embedded chain (py-evm, prague).

`python -m sim.bench gas`; the figures are kept in contracts/GAS.md. Headline last:
a commit with 7 committee signatures (target <= 160k) and a claim (target <= 60k).
"""

from __future__ import annotations

from p2pfl.chain.client import ChainClient, TxResult
from p2pfl.chain.devnet import ETHER, DevNet
from p2pfl.chain.providers import embedded_web3, fund, mine_blocks
from p2pfl.core.merkle import RewardTree, round_reward_leaves
from p2pfl.core.signing import Kind, sign_digest, statement_digest
from sim.bench import BenchError, figure

N_NODES = 24
K = 9  # nominal committee: large enough that a 7-signer quorum exists at attempt 0..few
SIGNERS = 7


def _commit(
    net: DevNet, task: bytes, rnd: int, base: bytes, n_signers: int, quorum_k: int
) -> tuple[TxResult, bytes, RewardTree]:
    attempt = 0
    while True:
        committee = net.committee(task, rnd, base, attempt, quorum_k)
        if len(committee) >= n_signers:
            break
        attempt += 1
        if attempt > 200:
            raise BenchError("no committee large enough; adjust N_NODES/K")
    result = rnd.to_bytes(32, "big")
    contributors = {a: 100 + i for i, a in enumerate(net.admin.registered_nodes()[:10])}
    info = net.admin.task_info(task)
    tree = RewardTree.build(
        round_reward_leaves(
            info.reward_per_round, contributors, committee, [net.clients[-1].address]
        )
    )
    signers = committee[:n_signers]
    sigs = net.votes(signers, task, rnd, attempt, 0, base, result, tree.root)
    return (
        net.clients[0].commit_round(
            task, rnd, attempt, 0, base, result, tree.root, list(zip(signers, sigs))
        ),
        result,
        tree,
    )


def run() -> None:
    w3 = embedded_web3()
    try:
        net = DevNet.create(w3, N_NODES, unbonding_blocks=2)
    except Exception as exc:  # set-up failure means we cannot measure
        raise BenchError(f"devnet set-up failed: {exc}") from exc
    c = net.clients
    for label, block in (("deploy-NodeRegistry", 0), ("deploy-RoundLedger", 1), ("bindLedger", 2)):
        tx = w3.eth.get_block(net.deployment.block + block)["transactions"][0]
        figure(f"gas-{label}", w3.eth.get_transaction_receipt(tx)["gasUsed"], "gas")
    newcomer = ChainClient(w3, net.deployment, b"\x42" * 32)
    fund(w3, newcomer.address, 100 * ETHER)
    figure(
        "gas-register",
        newcomer.register(b"\x00\x25" + bytes(37), b"\x01" * 32, 2 * ETHER).gas_used,
        "gas",
    )
    net.keys.append(b"\x42" * 32)
    figure("gas-topUp", c[1].top_up(ETHER).gas_used, "gas")
    figure("gas-updateKeys", c[1].update_keys(b"\x00\x25" + bytes(37), bytes(32)).gas_used, "gas")

    task = b"\x7a" * 32
    base = b"\x11" * 32
    r = c[0].create_task(task, base, K, 0, ETHER // 10, 10 * ETHER, 0)
    figure("gas-createTask", r.gas_used, "gas")
    figure("gas-fundTask", c[0].fund_task(task, ETHER).gas_used, "gas")

    # A private task: its creation, a purchase, and the key wraps a key holder posts (to a
    # buyer's key, and to a registered node's: the registry read costs more).
    private = b"\x5e" * 32
    price = ETHER // 10
    figure(
        "gas-createPrivateTask",
        c[0].create_private_task(private, base, K, 0, price, 0, 0, price, b"\x99" * 32).gas_used,
        "gas",
    )
    buyer = ChainClient(w3, net.deployment, b"\x43" * 32)
    fund(w3, buyer.address, 10 * ETHER)
    figure("gas-buyAccess", buyer.buy_access(private, b"\x02" * 32, price).gas_used, "gas")
    wrap = bytes(range(80))  # WRAP_BYTES of calldata, mostly non-zero like a real wrap
    figure(
        "gas-postKeyWrap-buyer",
        c[3].post_key_wrap(private, buyer.address, b"\x02" * 32, wrap).gas_used,
        "gas",
    )
    enc = c[3].node_info(c[2].address).enc_key
    figure(
        "gas-postKeyWrap-node",
        c[3].post_key_wrap(private, c[2].address, enc, wrap).gas_used,
        "gas",
    )

    # Commits with 5..9 signatures to show the per-signature slope.
    per_sig = {}
    for n in (5, SIGNERS, 9):
        # a fresh task per size, k = 7 so that quorum = 5 <= n
        t = bytes([n]) * 32
        c[0].create_task(t, base, 7, 0, ETHER // 10, 10 * ETHER, 0)
        res, _, _ = _commit(net, t, 1, base, n, 7)
        per_sig[n] = res.gas_used
    figure("gas-commit-5sigs", per_sig[5], "gas")
    figure("gas-commit-9sigs", per_sig[9], "gas")
    figure("gas-commit-per-extra-sig", (per_sig[9] - per_sig[5]) / 4, "gas")

    # Round 1 then round 2 of the main task with exactly 7 signatures.
    res1, result1, tree = _commit(net, task, 1, base, SIGNERS, K)
    res2, _, _ = _commit(net, task, 2, result1, SIGNERS, K)
    figure("gas-commit-7sigs-round1", res1.gas_used, "gas")
    commit7 = res2.gas_used

    # claims: first leaf of the round, then a later one (same packed word)
    leaf0, leaf1 = tree.leaves[0], tree.leaves[1]
    claim_first = c[2].claim(task, 1, leaf0, tree.proof(0)).gas_used
    claim_next = c[2].claim(task, 1, leaf1, tree.proof(1)).gas_used
    figure("gas-claim-other-leaf", claim_next, "gas")
    rej = next(lf for lf in tree.leaves if lf.role == 3)
    figure(
        "gas-reportRejected",
        c[2].report_rejected(task, 1, rej, tree.proof(rej.index)).gas_used,
        "gas",
    )

    # equivocation: node 5 signs two different updates for the same round
    key = net.keys[5]
    dom = net.deployment.domain()
    bodies = (b"\xaa" * 32, b"\xbb" * 32)
    sigs = [sign_digest(key, statement_digest(dom, Kind.UPDATE, task, 3, 0, 0, b)) for b in bodies]
    figure(
        "gas-submitEquivocation",
        c[3]
        .submit_equivocation(Kind.UPDATE, task, 3, 0, 0, bodies[0], sigs[0], bodies[1], sigs[1])
        .gas_used,
        "gas",
    )

    figure(
        "gas-rotateKey",
        c[7].rotate_key(b"\x5a" * 32, b"\x00\x25" + bytes(37), bytes(32)).gas_used,
        "gas",
    )
    figure("gas-exit", c[6].exit().gas_used, "gas")
    mine_blocks(w3, 3)
    figure("gas-withdraw", c[6].withdraw().gas_used, "gas")

    figure("gas-commit-7sigs", commit7, "gas")
    figure("gas-claim", claim_first, "gas")
