// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {NodeRegistry} from "./NodeRegistry.sol";

/// @title RoundLedger -- committed rounds, rewards and equivocation evidence for p2pfl tasks.
/// @notice One ledger holds many tasks. A round is committed with the VOTE signatures of
/// at least `quorum` members of that round's sortition committee; the contract checks
/// each signer in O(1) (protocol/spec/chain.md, protocol/spec/signing.md). Each round
/// stores the Merkle root of its reward leaves; contributors and committee members claim
/// with a proof; rejected contributors are reported against the same root.
contract RoundLedger {
    // ---------------------------------------------------------------- constants
    uint8 public constant KIND_UPDATE = 1;
    uint8 public constant KIND_PROPOSAL = 2;
    uint8 public constant KIND_VOTE = 3;

    uint8 public constant ROLE_CONTRIBUTOR = 1;
    uint8 public constant ROLE_COMMITTEE = 2;
    uint8 public constant ROLE_REJECTED = 3;

    /// Malicious equivocation loses half the node's stake (active + unbonding).
    uint256 public constant EQUIVOCATION_SLASH_BPS = 5_000;
    /// The reporter receives a fifth of what is slashed: enough to pay for the gas and
    /// make watching worthwhile, small enough that self-reporting loses 40%.
    uint256 public constant REPORTER_SHARE_BPS = 2_000;
    uint32 public constant EQUIVOCATION_REPUTATION_PENALTY = 500;
    uint32 public constant REJECTED_REPUTATION_PENALTY = 10;
    /// Leaves whose claimed-bit lives in the round's packed word (the rest overflow to a map).
    uint256 internal constant PACKED_BITS = 144;
    /// A task model key wrapped to an X25519 key: a libsodium sealed box of a 32-byte key
    /// (ephemeral public key 32 + key 32 + MAC 16; p2pfl.sealing.WRAP_BYTES).
    uint256 public constant WRAP_BYTES = 80;

    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    bytes32 public constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant STATEMENT_TYPEHASH =
        keccak256("Statement(uint8 kind,bytes32 task,uint64 round,uint32 attempt,uint32 view,bytes32 body)");

    NodeRegistry public immutable registry;
    uint256 internal immutable cachedChainId;
    bytes32 internal immutable cachedSeparator;

    // ---------------------------------------------------------------- state
    struct Task {
        // slot 0: everything commitRound reads and writes
        uint40 lastRound;
        uint40 lastCommitBlock; // block of the last commit (task creation for round 0)
        uint40 lastCommitTime;
        uint16 committeeSize; // nominal k
        uint16 quorum;
        uint104 escrow; // reward budget not yet assigned to a round
        // slot 1
        bytes32 lastResult; // digest of the last committed model (initial model at genesis)
        // slot 2
        address creator;
        uint96 rewardPerRound;
        // slot 3
        uint32 redrawDelay; // seconds per sortition re-draw attempt
    }

    mapping(bytes32 => Task) internal tasks;
    /// task => round => Merkle root of reward leaves
    mapping(bytes32 => mapping(uint256 => bytes32)) public roundRoot;
    /// task => round => (remaining reward << 144) | claimed bits of leaves 0..143
    mapping(bytes32 => mapping(uint256 => uint256)) internal roundBook;
    /// task => round => word => claimed bits of leaves >= 144
    mapping(bytes32 => mapping(uint256 => mapping(uint256 => uint256))) internal overflowBits;
    /// keccak(signer, kind, task, round, attempt, view) => already slashed
    mapping(bytes32 => bool) public evidenceUsed;
    /// Private tasks (protocol/spec/chain.md, "Private tasks"): the price of access in
    /// wei (0 = a public task) and the digest committing to the task model key.
    mapping(bytes32 => uint256) public accessPrice;
    mapping(bytes32 => bytes32) public modelKeyDigest;
    /// task => buyer => the X25519 key its access was bought for (zero: not bought)
    mapping(bytes32 => mapping(address => bytes32)) public buyerKey;

    // ---------------------------------------------------------------- events
    event TaskCreated(
        bytes32 indexed task,
        address indexed creator,
        bytes32 initialModel,
        uint16 committeeSize,
        uint16 quorum,
        uint256 rewardPerRound,
        uint256 escrow,
        uint32 redrawDelay
    );
    event TaskFunded(bytes32 indexed task, uint256 amount, uint256 escrow);
    event PrivateTaskCreated(bytes32 indexed task, uint256 price, bytes32 modelKeyDigest);
    event AccessBought(bytes32 indexed task, address indexed buyer, bytes32 encKey, uint256 price, uint256 escrow);
    event KeyWrapped(
        bytes32 indexed task, address indexed recipient, address indexed poster, bytes32 encKey, bytes wrap
    );
    event RoundCommitted(
        bytes32 indexed task,
        uint256 indexed round,
        uint32 attempt,
        uint32 view_,
        bytes32 base,
        bytes32 result,
        bytes32 contributorsRoot,
        uint256 reward,
        uint256 signers
    );
    event RewardClaimed(
        bytes32 indexed task, uint256 indexed round, address indexed account, uint256 index, uint8 role, uint256 amount
    );
    event RejectionRecorded(bytes32 indexed task, uint256 indexed round, address indexed node, uint256 index);
    event EquivocationProven(
        address indexed signer,
        bytes32 indexed task,
        uint256 indexed round,
        uint8 kind,
        uint32 attempt,
        uint32 view_,
        address reporter,
        uint256 slashed
    );

    // ---------------------------------------------------------------- errors
    error TaskExists(bytes32 task);
    error UnknownTask(bytes32 task);
    error BadTaskParams();
    error WrongRound(uint256 expected, uint256 got);
    error WrongBase(bytes32 expected, bytes32 got);
    error RedrawTooEarly(uint256 attempt, uint256 notBefore);
    error TooFewSignatures(uint256 got, uint256 quorum);
    error BadSignature(uint256 index);
    error SignersNotAscending(uint256 index);
    error NotEligible(uint256 index, address signer);
    error UnknownRound(uint256 round);
    error BadRole(uint8 role);
    error BadProof();
    error AlreadyClaimed(uint256 index);
    error ExceedsRoundReward(uint256 amount, uint256 remaining);
    error SameBody();
    error DifferentSigners(address a, address b);
    error BadKind(uint8 kind);
    error EvidenceAlreadyUsed(bytes32 id);
    error TransferFailed();
    error ValueTooLarge();
    error BadAccessParams();
    error NotPrivate(bytes32 task);
    error WrongPrice(uint256 price, uint256 sent);
    error AlreadyBought(address buyer);
    error BadEncKey();
    error BadWrap(uint256 length);
    error NotKeyHolder(address poster);
    error NotEntitled(address recipient);
    error WrongRecipientKey(address recipient, bytes32 encKey);

    constructor(NodeRegistry registry_) {
        registry = registry_;
        cachedChainId = block.chainid;
        cachedSeparator = _separator();
    }

    // ---------------------------------------------------------------- tasks

    /// @notice Open a task. `task` is the manifest digest (sha256 of the manifest CID's
    /// multihash digest, per spec); `initialModel` the digest of the genesis model. The
    /// value sent is escrowed as the reward budget. `quorum` is raised to ceil(2k/3).
    function createTask(
        bytes32 task,
        bytes32 initialModel,
        uint16 committeeSize,
        uint16 quorum,
        uint96 rewardPerRound,
        uint32 redrawDelay
    ) external payable {
        _createTask(task, initialModel, committeeSize, quorum, rewardPerRound, redrawDelay);
    }

    /// @notice Open a private task: as createTask, and its models are sealed under a task
    /// model key committed to by `keyDigest` (sha256 of "p2pfl-task-model-key" || task ||
    /// key); outsiders buy access for `price` wei (buyAccess), which funds the escrow.
    function createPrivateTask(
        bytes32 task,
        bytes32 initialModel,
        uint16 committeeSize,
        uint16 quorum,
        uint96 rewardPerRound,
        uint32 redrawDelay,
        uint256 price,
        bytes32 keyDigest
    ) external payable {
        if (price == 0 || price > type(uint104).max || keyDigest == bytes32(0)) revert BadAccessParams();
        _createTask(task, initialModel, committeeSize, quorum, rewardPerRound, redrawDelay);
        accessPrice[task] = price;
        modelKeyDigest[task] = keyDigest;
        emit PrivateTaskCreated(task, price, keyDigest);
    }

    function _createTask(
        bytes32 task,
        bytes32 initialModel,
        uint16 committeeSize,
        uint16 quorum,
        uint96 rewardPerRound,
        uint32 redrawDelay
    ) internal {
        if (tasks[task].committeeSize != 0) revert TaskExists(task);
        if (committeeSize == 0 || quorum > committeeSize) revert BadTaskParams();
        uint16 minQuorum = uint16((2 * uint256(committeeSize) + 2) / 3);
        if (quorum < minQuorum) quorum = minQuorum;
        if (msg.value > type(uint104).max) revert ValueTooLarge();
        tasks[task] = Task({
            lastRound: 0,
            lastCommitBlock: uint40(block.number),
            lastCommitTime: uint40(block.timestamp),
            committeeSize: committeeSize,
            quorum: quorum,
            escrow: uint104(msg.value),
            lastResult: initialModel,
            creator: msg.sender,
            rewardPerRound: rewardPerRound,
            redrawDelay: redrawDelay
        });
        emit TaskCreated(task, msg.sender, initialModel, committeeSize, quorum, rewardPerRound, msg.value, redrawDelay);
    }

    /// @notice Add to a task's reward escrow (anyone may).
    function fundTask(bytes32 task) external payable {
        Task storage t = tasks[task];
        if (t.committeeSize == 0) revert UnknownTask(task);
        uint256 e = uint256(t.escrow) + msg.value;
        if (e > type(uint104).max) revert ValueTooLarge();
        t.escrow = uint104(e);
        emit TaskFunded(task, msg.value, e);
    }

    // ---------------------------------------------------------------- private tasks

    /// @notice Buy access to a private task's models for the X25519 key `encKey`: pay
    /// exactly its price, once per buyer. The payment joins the task's escrow, which the
    /// next committed rounds pay out to contributors and committee through reward claims.
    /// A key holder then posts the task model key wrapped to `encKey` (postKeyWrap).
    function buyAccess(bytes32 task, bytes32 encKey) external payable {
        uint256 price = _accessPrice(task);
        if (msg.value != price) revert WrongPrice(price, msg.value);
        if (encKey == bytes32(0)) revert BadEncKey();
        if (buyerKey[task][msg.sender] != bytes32(0)) revert AlreadyBought(msg.sender);
        buyerKey[task][msg.sender] = encKey;
        Task storage t = tasks[task];
        uint256 e = uint256(t.escrow) + msg.value;
        if (e > type(uint104).max) revert ValueTooLarge();
        t.escrow = uint104(e);
        emit AccessBought(task, msg.sender, encKey, msg.value, e);
    }

    /// @notice Publish the task model key wrapped to `recipient`'s X25519 key `encKey`:
    /// the key it bought access for, or the key it registered as a node. Only the task's
    /// creator or a staked node may post (a bound on spam; the contract cannot open a wrap,
    /// so readers check the key they unwrap against modelKeyDigest).
    function postKeyWrap(bytes32 task, address recipient, bytes32 encKey, bytes calldata wrap) external {
        _accessPrice(task);
        if (wrap.length != WRAP_BYTES) revert BadWrap(wrap.length);
        if (msg.sender != tasks[task].creator && registry.stakeOf(msg.sender) == 0) {
            revert NotKeyHolder(msg.sender);
        }
        bytes32 bought = buyerKey[task][recipient];
        if (encKey != bought || bought == bytes32(0)) {
            (, bytes32 registered,,,,,,,) = registry.nodeInfo(recipient);
            if (bought == bytes32(0) && registered == bytes32(0)) revert NotEntitled(recipient);
            if (encKey != registered) revert WrongRecipientKey(recipient, encKey);
        }
        emit KeyWrapped(task, recipient, msg.sender, encKey, wrap);
    }

    /// The price of a private task; reverts for an unknown or a public task.
    function _accessPrice(bytes32 task) internal view returns (uint256 price) {
        price = accessPrice[task];
        if (price == 0) {
            if (tasks[task].committeeSize == 0) revert UnknownTask(task);
            revert NotPrivate(task);
        }
    }

    // ---------------------------------------------------------------- commit

    /// @notice Commit round `round` of `task`. `signatures` are VOTE statements over
    /// (task, round, attempt, view, keccak256(abi.encode(base, result, contributorsRoot)))
    /// concatenated as 65-byte r||s||v records (no per-item ABI offsets: ~600 gas less per
    /// signature) ordered by strictly ascending signer address; each signer must be
    /// eligible by sortition with stakes as of `snapshotBlock(task)`.
    function commitRound(
        bytes32 task,
        uint64 round,
        uint32 attempt,
        uint32 view_,
        bytes32 base,
        bytes32 result,
        bytes32 contributorsRoot,
        bytes calldata signatures
    ) external {
        Task storage t = tasks[task];
        uint256 slot0 = _slot0(t);
        uint256 k = uint16(slot0 >> 120);
        if (k == 0) revert UnknownTask(task);
        uint256 last = uint40(slot0);
        if (round != last + 1) revert WrongRound(last + 1, round);
        if (base != t.lastResult) revert WrongBase(t.lastResult, base);
        if (attempt != 0) {
            uint256 notBefore = uint40(slot0 >> 80) + uint256(attempt) * t.redrawDelay;
            if (block.timestamp < notBefore) revert RedrawTooEarly(attempt, notBefore);
        }
        uint256 quorum = uint16(slot0 >> 136);
        if (signatures.length % 65 != 0) revert BadSignature(signatures.length / 65);
        uint256 n = signatures.length / 65;
        if (n < quorum) revert TooFewSignatures(n, quorum);

        bytes32 digest = _digest(KIND_VOTE, task, round, attempt, view_, keccak256(abi.encode(base, result, contributorsRoot)));
        address[] memory signers = new address[](n);
        address prev = address(0);
        for (uint256 i = 0; i < n; ++i) {
            address s = _recover(digest, signatures[i * 65:i * 65 + 65]);
            if (s == address(0)) revert BadSignature(i);
            if (s <= prev) revert SignersNotAscending(i);
            signers[i] = s;
            prev = s;
        }

        // Stakes at the end of the block before the previous commit's block: nothing
        // registered in the same block as (i.e. after seeing) the previous result counts.
        (uint256 total, uint256[] memory stakes) = registry.stakesAt(signers, uint40(slot0 >> 40) - 1);
        bytes32 seed = keccak256(abi.encodePacked(task, round, base, attempt));
        for (uint256 i = 0; i < n; ++i) {
            if (!_eligible(uint256(keccak256(abi.encodePacked(seed, signers[i]))), stakes[i], total, k)) {
                revert NotEligible(i, signers[i]);
            }
        }

        uint256 escrow = uint104(slot0 >> 152);
        uint256 reward = t.rewardPerRound;
        if (reward > escrow) reward = escrow;
        roundRoot[task][round] = contributorsRoot;
        roundBook[task][round] = reward << PACKED_BITS;
        // rewrite slot 0: round, commit block, commit time, k, quorum unchanged, escrow
        slot0 = (slot0 & (uint256(type(uint32).max) << 120)) | round | (block.number << 40) | (block.timestamp << 80)
            | ((escrow - reward) << 152);
        _setSlot0(t, slot0);
        t.lastResult = result;
        emit RoundCommitted(task, round, attempt, view_, base, result, contributorsRoot, reward, n);
    }

    // ---------------------------------------------------------------- rewards

    /// @notice Pay `account` its reward leaf (index, role, amount) of a committed round.
    function claim(
        bytes32 task,
        uint64 round,
        uint32 index,
        uint8 role,
        address account,
        uint256 amount,
        bytes32[] calldata proof
    ) external {
        if (role != ROLE_CONTRIBUTOR && role != ROLE_COMMITTEE) revert BadRole(role);
        bytes32 root = roundRoot[task][round];
        if (root == bytes32(0)) revert UnknownRound(round);
        if (!_verify(proof, root, _leaf(index, role, account, amount))) revert BadProof();
        uint256 book = _consume(task, round, index);
        uint256 remaining = book >> PACKED_BITS;
        if (amount > remaining) revert ExceedsRoundReward(amount, remaining);
        roundBook[task][round] = book - (amount << PACKED_BITS);
        emit RewardClaimed(task, round, account, index, role, amount);
        (bool ok,) = account.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /// @notice Record that a committed round rejected `node`'s update (a ROLE_REJECTED
    /// leaf with amount 0): lowers its reputation, once per leaf. Anyone may call.
    function reportRejected(bytes32 task, uint64 round, uint32 index, address node, bytes32[] calldata proof)
        external
    {
        bytes32 root = roundRoot[task][round];
        if (root == bytes32(0)) revert UnknownRound(round);
        if (!_verify(proof, root, _leaf(index, ROLE_REJECTED, node, 0))) revert BadProof();
        roundBook[task][round] = _consume(task, round, index);
        emit RejectionRecorded(task, round, node, index);
        registry.penalize(node, REJECTED_REPUTATION_PENALTY);
    }

    function isConsumed(bytes32 task, uint64 round, uint256 index) external view returns (bool) {
        if (index < PACKED_BITS) return (roundBook[task][round] >> index) & 1 == 1;
        uint256 j = index - PACKED_BITS;
        return (overflowBits[task][round][j >> 8] >> (j & 255)) & 1 == 1;
    }

    function roundRemaining(bytes32 task, uint64 round) external view returns (uint256) {
        return roundBook[task][round] >> PACKED_BITS;
    }

    // ---------------------------------------------------------------- evidence

    /// @notice Prove that one node signed two different statements of the same kind for
    /// the same (task, round, attempt, view). Slashes it and pays the caller a share.
    function submitEquivocation(
        uint8 kind,
        bytes32 task,
        uint64 round,
        uint32 attempt,
        uint32 view_,
        bytes32 bodyA,
        bytes calldata sigA,
        bytes32 bodyB,
        bytes calldata sigB
    ) external {
        if (kind != KIND_UPDATE && kind != KIND_PROPOSAL && kind != KIND_VOTE) revert BadKind(kind);
        if (bodyA == bodyB) revert SameBody();
        address a = _recover(_digest(kind, task, round, attempt, view_, bodyA), sigA);
        if (a == address(0)) revert BadSignature(0);
        address b = _recover(_digest(kind, task, round, attempt, view_, bodyB), sigB);
        if (b == address(0)) revert BadSignature(1);
        if (a != b) revert DifferentSigners(a, b);
        _punish(a, kind, task, round, attempt, view_);
    }

    function _punish(address a, uint8 kind, bytes32 task, uint64 round, uint32 attempt, uint32 view_) internal {
        bytes32 id = keccak256(abi.encode(a, kind, task, round, attempt, view_));
        if (evidenceUsed[id]) revert EvidenceAlreadyUsed(id);
        evidenceUsed[id] = true;
        uint256 slashed = registry.slash(a, EQUIVOCATION_SLASH_BPS, msg.sender, REPORTER_SHARE_BPS);
        registry.penalize(a, EQUIVOCATION_REPUTATION_PENALTY);
        emit EquivocationProven(a, task, round, kind, attempt, view_, msg.sender, slashed);
    }

    // ---------------------------------------------------------------- views

    /// @notice Task state: (lastRound, lastResult, lastCommitBlock, lastCommitTime,
    /// committeeSize, quorum, escrow, rewardPerRound, creator, redrawDelay).
    function taskInfo(bytes32 task)
        external
        view
        returns (
            uint256 lastRound,
            bytes32 lastResult,
            uint256 lastCommitBlock,
            uint256 lastCommitTime,
            uint256 committeeSize,
            uint256 quorum,
            uint256 escrow,
            uint256 rewardPerRound,
            address creator,
            uint32 redrawDelay
        )
    {
        Task storage t = tasks[task];
        return (
            t.lastRound,
            t.lastResult,
            t.lastCommitBlock,
            t.lastCommitTime,
            t.committeeSize,
            t.quorum,
            t.escrow,
            t.rewardPerRound,
            t.creator,
            t.redrawDelay
        );
    }

    /// @notice Block whose end-state stakes elect the next round's committee.
    function snapshotBlock(bytes32 task) external view returns (uint256) {
        Task storage t = tasks[task];
        if (t.committeeSize == 0) revert UnknownTask(task);
        return uint256(t.lastCommitBlock) - 1;
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedSeparator : _separator();
    }

    function statementDigest(uint8 kind, bytes32 task, uint64 round, uint32 attempt, uint32 view_, bytes32 body)
        external
        view
        returns (bytes32)
    {
        return _digest(kind, task, round, attempt, view_, body);
    }

    function roundSeed(bytes32 task, uint64 round, bytes32 base, uint32 attempt) external pure returns (bytes32) {
        return keccak256(abi.encodePacked(task, round, base, attempt));
    }

    function ticketOf(bytes32 seed, address node) external pure returns (uint256) {
        return uint256(keccak256(abi.encodePacked(seed, node)));
    }

    /// @notice The sortition threshold exactly as commitRound applies it (for cross-checks).
    function isEligible(uint256 ticket, uint256 stake, uint256 total, uint256 k) external pure returns (bool) {
        return _eligible(ticket, stake, total, k);
    }

    function leafHash(uint32 index, uint8 role, address account, uint256 amount) external pure returns (bytes32) {
        return _leaf(index, role, account, amount);
    }

    // ---------------------------------------------------------------- internals

    function _eligible(uint256 ticket, uint256 stake, uint256 total, uint256 k) internal pure returns (bool) {
        if (stake == 0 || total == 0 || k == 0) return false;
        // k * stake cannot overflow: stake < 2^160, k < 2^16 in commitRound; checked math elsewhere.
        uint256 weight = k * stake;
        if (weight >= total) return true;
        return ticket / (type(uint256).max / total) < weight;
    }

    function _separator() internal view returns (bytes32) {
        return keccak256(
            abi.encode(EIP712_DOMAIN_TYPEHASH, keccak256("p2pfl"), keccak256("1"), block.chainid, address(this))
        );
    }

    function _digest(uint8 kind, bytes32 task, uint64 round, uint32 attempt, uint32 view_, bytes32 body)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(STATEMENT_TYPEHASH, kind, task, round, attempt, view_, body));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// ecrecover of a 65-byte r||s||v signature; address(0) when malformed or high-s.
    function _recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := calldataload(sig.offset)
            s := calldataload(add(sig.offset, 32))
            v := byte(0, calldataload(add(sig.offset, 64)))
        }
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }

    function _leaf(uint32 index, uint8 role, address account, uint256 amount) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(index, role, account, amount));
    }

    /// OpenZeppelin MerkleProof.verify with commutative (sorted-pair) keccak256.
    function _verify(bytes32[] calldata proof, bytes32 root, bytes32 leaf) internal pure returns (bool) {
        bytes32 h = leaf;
        for (uint256 i = 0; i < proof.length; ++i) {
            bytes32 p = proof[i];
            h = h < p ? keccak256(abi.encodePacked(h, p)) : keccak256(abi.encodePacked(p, h));
        }
        return h == root;
    }

    /// Mark leaf `index` used; returns the round's (possibly updated) book word.
    function _consume(bytes32 task, uint64 round, uint256 index) internal returns (uint256 book) {
        book = roundBook[task][round];
        if (index < PACKED_BITS) {
            if ((book >> index) & 1 == 1) revert AlreadyClaimed(index);
            book |= 1 << index;
        } else {
            uint256 j = index - PACKED_BITS;
            uint256 w = overflowBits[task][round][j >> 8];
            if ((w >> (j & 255)) & 1 == 1) revert AlreadyClaimed(index);
            overflowBits[task][round][j >> 8] = w | (1 << (j & 255));
        }
    }

    function _slot0(Task storage t) private view returns (uint256 v) {
        assembly ("memory-safe") {
            v := sload(t.slot)
        }
    }

    function _setSlot0(Task storage t, uint256 v) private {
        assembly ("memory-safe") {
            sstore(t.slot, v)
        }
    }
}
