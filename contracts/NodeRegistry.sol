// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title NodeRegistry -- stake, identity keys, reputation and slashing for p2pfl nodes.
/// @notice A node binds its Ethereum address (the same secp256k1 key as its libp2p
/// identity) to its libp2p peer ID and X25519 encryption key, and bonds stake.
/// Active stake is checkpointed per block (like ERC20Votes) so that sortition for a
/// round reads stakes as of a fixed past block: `stakeAt(node, b)` is the active stake
/// at the END of block `b`. Exiting moves stake into an unbonding balance that can
/// still be slashed until `releaseBlock`, so stake cannot flee before evidence about
/// the node's last rounds can land. Only the bound RoundLedger slashes and penalises.
contract NodeRegistry {
    // ---------------------------------------------------------------- constants
    /// Reputation every node starts with; penalties subtract, floor 0.
    uint32 public constant INITIAL_REPUTATION = 1000;
    /// Tiers by active stake: 0 none, 1 basic (>= minStake), 2 compute, 3 trusted.
    uint8 public constant TIER_NONE = 0;
    uint8 public constant TIER_BASIC = 1;
    uint8 public constant TIER_COMPUTE = 2;
    uint8 public constant TIER_TRUSTED = 3;
    uint256 internal constant BPS = 10_000;

    // ---------------------------------------------------------------- config
    address public immutable deployer;
    uint256 public immutable minStake;
    uint256 public immutable computeStake;
    uint256 public immutable trustedStake;
    /// Blocks between exit() and withdraw(): the window for evidence to land.
    uint256 public immutable unbondingBlocks;
    /// The RoundLedger allowed to slash and penalise; bound once by the deployer.
    address public ledger;

    // ---------------------------------------------------------------- state
    struct Node {
        bytes32 encKey; // X25519 public key
        uint128 unbonding; // exited stake still slashable
        uint64 releaseBlock; // first block at which `unbonding` can be withdrawn
        uint32 reputation;
        bool known; // ever registered (listed in `nodeList`)
        bool banned; // slashed for proven misbehaviour: ejected and never registers again
        bytes peerId; // libp2p peer ID (multihash bytes)
        address successor; // the key this node rotated to (rotateKey); zero if none
    }

    mapping(address => Node) internal nodes;
    address[] internal nodeList;

    // Checkpoint trace, packed in one word: stake (bits 0..159), number of older
    // checkpoints in `history` (160..207), block from which `stake` holds (208..255).
    // Reading the head alone answers every lookup at or after its block: one SLOAD
    // per signer in commitRound.
    mapping(address => uint256) internal stakeHead;
    mapping(address => mapping(uint256 => uint256)) internal stakeHistory; // (block << 160) | stake
    uint256 internal totalHead;
    mapping(uint256 => uint256) internal totalHistory;

    // ---------------------------------------------------------------- events
    event LedgerBound(address indexed ledger);
    event Registered(address indexed node, bytes peerId, bytes32 encKey, uint256 stake, uint8 tier);
    event KeysUpdated(address indexed node, bytes peerId, bytes32 encKey);
    event ToppedUp(address indexed node, uint256 amount, uint256 stake, uint8 tier);
    event ExitStarted(address indexed node, uint256 amount, uint256 releaseBlock);
    event Withdrawn(address indexed node, uint256 amount);
    event Slashed(address indexed node, uint256 amount, address indexed reporter, uint256 reporterReward);
    event ReputationChanged(address indexed node, uint32 reputation, int256 delta);
    event KeyRotated(address indexed node, address indexed successor, bytes peerId, bytes32 encKey, uint256 stake);

    // ---------------------------------------------------------------- errors
    error NotDeployer();
    error LedgerAlreadyBound();
    error NotLedger();
    error StakeTooLow(uint256 sent, uint256 minimum);
    error AlreadyActive();
    error NotActive();
    error UnbondingPending(uint256 releaseBlock);
    error NothingToWithdraw();
    error NotYetReleased(uint256 releaseBlock);
    error NotRegistered(address node);
    error Banned(address node);
    error BadPeerId();
    error ZeroAmount();
    error TransferFailed();
    error BadTiers();
    error BadRotation(address successor);
    error BadPossessionProof();

    constructor(uint256 minStake_, uint256 computeStake_, uint256 trustedStake_, uint256 unbondingBlocks_) {
        if (minStake_ == 0 || computeStake_ < minStake_ || trustedStake_ < computeStake_) revert BadTiers();
        deployer = msg.sender;
        minStake = minStake_;
        computeStake = computeStake_;
        trustedStake = trustedStake_;
        unbondingBlocks = unbondingBlocks_;
    }

    /// @notice Bind the RoundLedger once (it is deployed after the registry).
    function bindLedger(address ledger_) external {
        if (msg.sender != deployer) revert NotDeployer();
        if (ledger != address(0)) revert LedgerAlreadyBound();
        ledger = ledger_;
        emit LedgerBound(ledger_);
    }

    modifier onlyLedger() {
        if (msg.sender != ledger) revert NotLedger();
        _;
    }

    // ---------------------------------------------------------------- node actions

    /// @notice Register (or re-register after a completed exit) with stake >= minStake.
    function register(bytes calldata peerId, bytes32 encKey) external payable {
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (peerId.length == 0 || peerId.length > 128) revert BadPeerId();
        Node storage n = nodes[msg.sender];
        if (n.banned) revert Banned(msg.sender);
        if (n.successor != address(0)) revert BadRotation(n.successor); // a retired key stays retired
        if (_stakeNow(msg.sender) != 0) revert AlreadyActive();
        if (n.unbonding != 0) revert UnbondingPending(n.releaseBlock);
        if (!n.known) {
            n.known = true;
            n.reputation = INITIAL_REPUTATION;
            nodeList.push(msg.sender);
        }
        n.peerId = peerId;
        n.encKey = encKey;
        _writeStake(msg.sender, msg.value);
        _writeTotal(_totalNow() + msg.value);
        emit Registered(msg.sender, peerId, encKey, msg.value, tierOf(msg.value));
    }

    /// @notice Change the peer ID / encryption key bound to an active node.
    function updateKeys(bytes calldata peerId, bytes32 encKey) external {
        if (_stakeNow(msg.sender) == 0) revert NotActive();
        if (peerId.length == 0 || peerId.length > 128) revert BadPeerId();
        Node storage n = nodes[msg.sender];
        n.peerId = peerId;
        n.encKey = encKey;
        emit KeysUpdated(msg.sender, peerId, encKey);
    }

    /// @notice Rotate the node's secp256k1 key (its address, and so its libp2p peer ID) to
    /// `successor`, with the successor's peer ID and X25519 key. Active stake and
    /// reputation move to the successor from this block on: sortition for a round reads
    /// stakes at that round's reference block, so rounds drawn before this block keep the
    /// old address (its statements stay verifiable and eligible for them) and the new key
    /// takes part from the next round drawn after. `proof` is the successor's signature
    /// (65 bytes, r || s || v) over rotationDigest(msg.sender, successor): proof that the
    /// new key is held, so stake cannot be moved onto someone else's address. The old
    /// address stays accountable: slash() and penalize() against it reach its successor,
    /// and its unbonding stake (if any) stays with it. Rewards already earned by the old
    /// address are still claimed by the old key.
    function rotateKey(address successor, bytes calldata peerId, bytes32 encKey, bytes calldata proof) external {
        uint256 s = _stakeNow(msg.sender);
        if (s == 0) revert NotActive();
        if (peerId.length == 0 || peerId.length > 128) revert BadPeerId();
        Node storage n = nodes[successor];
        if (successor == address(0) || successor == msg.sender || n.known) revert BadRotation(successor);
        if (_recoverProof(rotationDigest(msg.sender, successor), proof) != successor) revert BadPossessionProof();
        Node storage old = nodes[msg.sender];
        old.successor = successor;
        n.known = true;
        n.reputation = old.reputation;
        n.peerId = peerId;
        n.encKey = encKey;
        nodeList.push(successor);
        _writeStake(msg.sender, 0);
        _writeStake(successor, s);
        emit KeyRotated(msg.sender, successor, peerId, encKey, s);
    }

    /// @notice What the successor signs in rotateKey (raw secp256k1 over this digest).
    function rotationDigest(address node, address successor) public view returns (bytes32) {
        return keccak256(abi.encodePacked("p2pfl-rotate-key", block.chainid, address(this), node, successor));
    }

    /// @notice The key `node` answers for now: itself, or the last key of its rotations.
    function currentKey(address node) public view returns (address) {
        for (address next = nodes[node].successor; next != address(0); next = nodes[node].successor) {
            node = next;
        }
        return node;
    }

    /// @notice Add stake to an active node.
    function topUp() external payable {
        if (msg.value == 0) revert ZeroAmount();
        uint256 s = _stakeNow(msg.sender);
        if (s == 0) revert NotActive();
        s += msg.value;
        _writeStake(msg.sender, s);
        _writeTotal(_totalNow() + msg.value);
        emit ToppedUp(msg.sender, msg.value, s, tierOf(s));
    }

    /// @notice Leave: all active stake starts unbonding (still slashable) for `unbondingBlocks`.
    function exit() external {
        uint256 s = _stakeNow(msg.sender);
        if (s == 0) revert NotActive();
        Node storage n = nodes[msg.sender];
        n.unbonding += uint128(s);
        uint256 release = block.number + unbondingBlocks;
        n.releaseBlock = uint64(release);
        _writeStake(msg.sender, 0);
        _writeTotal(_totalNow() - s);
        emit ExitStarted(msg.sender, s, release);
    }

    /// @notice Withdraw unbonded stake once the unbonding delay has passed.
    function withdraw() external {
        Node storage n = nodes[msg.sender];
        uint256 amount = n.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (block.number < n.releaseBlock) revert NotYetReleased(n.releaseBlock);
        n.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    // ---------------------------------------------------------------- ledger hooks

    /// @notice Slash `bps` of the node's stake (unbonding first, then active); pay the
    /// reporter `reporterBps` of the slashed amount; the rest stays locked here (burnt).
    /// The node is also ejected and banned: what is left of its active stake starts
    /// unbonding (still slashable for `unbondingBlocks`), so from the next block its
    /// stake is 0 -- it is drawn into no committee and its updates are those of an
    /// unregistered node -- and it can never register again with this address.
    function slash(address node, uint256 bps, address reporter, uint256 reporterBps)
        external
        onlyLedger
        returns (uint256 amount)
    {
        // A key that rotated away answers through its successor (its own unbonding
        // stake, if any, is slashed too): rotating cannot escape evidence.
        address holder = currentKey(node);
        if (holder != node) nodes[node].banned = true;
        Node storage n = nodes[holder];
        uint256 active = _stakeNow(holder);
        uint256 unbonding = n.unbonding;
        if (holder != node) {
            unbonding += nodes[node].unbonding;
            nodes[node].unbonding = 0;
        }
        amount = ((active + unbonding) * bps) / BPS;
        if (amount == 0) revert NotRegistered(node);
        node = holder;
        uint256 fromUnbonding = amount <= unbonding ? amount : unbonding;
        uint256 rest = active - (amount - fromUnbonding); // active stake that survives
        n.unbonding = uint128(unbonding - fromUnbonding + rest);
        n.banned = true;
        if (active != 0) {
            _writeStake(node, 0);
            _writeTotal(_totalNow() - active);
        }
        if (rest != 0) {
            uint256 release = block.number + unbondingBlocks;
            n.releaseBlock = uint64(release);
            emit ExitStarted(node, rest, release);
        }
        uint256 reward = (amount * reporterBps) / BPS;
        emit Slashed(node, amount, reporter, reward);
        if (reward != 0) _pay(reporter, reward);
    }

    /// @notice Lower a node's reputation by `penalty` (floor 0).
    function penalize(address node, uint32 penalty) external onlyLedger {
        node = currentKey(node); // reputation moved with the key
        Node storage n = nodes[node];
        if (!n.known) revert NotRegistered(node);
        uint32 r = n.reputation;
        uint32 next = r > penalty ? r - penalty : 0;
        n.reputation = next;
        emit ReputationChanged(node, next, -int256(uint256(r - next)));
    }

    // ---------------------------------------------------------------- views

    /// @notice Tier for an amount of active stake.
    function tierOf(uint256 stake) public view returns (uint8) {
        if (stake >= trustedStake) return TIER_TRUSTED;
        if (stake >= computeStake) return TIER_COMPUTE;
        if (stake >= minStake) return TIER_BASIC;
        return TIER_NONE;
    }

    /// @notice Active stake of `node` at the end of block `blockNumber` (current value for future blocks).
    function stakeAt(address node, uint256 blockNumber) public view returns (uint256) {
        return _lookup(stakeHead[node], stakeHistory[node], blockNumber);
    }

    /// @notice Total active stake at the end of block `blockNumber`.
    function totalStakeAt(uint256 blockNumber) public view returns (uint256) {
        return _lookup(totalHead, totalHistory, blockNumber);
    }

    /// @notice Batch lookup used by RoundLedger.commitRound: one call for all signers.
    function stakesAt(address[] calldata nodes_, uint256 blockNumber)
        external
        view
        returns (uint256 total, uint256[] memory stakes)
    {
        total = _lookup(totalHead, totalHistory, blockNumber);
        stakes = new uint256[](nodes_.length);
        for (uint256 i = 0; i < nodes_.length; ++i) {
            address a = nodes_[i];
            stakes[i] = _lookup(stakeHead[a], stakeHistory[a], blockNumber);
        }
    }

    function stakeOf(address node) external view returns (uint256) {
        return _stakeNow(node);
    }

    function totalStake() external view returns (uint256) {
        return _totalNow();
    }

    function nodeCount() external view returns (uint256) {
        return nodeList.length;
    }

    /// @notice Registered addresses [start, start+count) in registration order.
    function nodesPage(uint256 start, uint256 count) external view returns (address[] memory out) {
        uint256 end = start + count;
        if (end > nodeList.length) end = nodeList.length;
        if (start > end) start = end;
        out = new address[](end - start);
        for (uint256 i = start; i < end; ++i) out[i - start] = nodeList[i];
    }

    /// @notice Everything known about a node.
    function nodeInfo(address node)
        external
        view
        returns (
            bytes memory peerId,
            bytes32 encKey,
            uint256 stake,
            uint256 unbonding,
            uint256 releaseBlock,
            uint32 reputation,
            uint8 tier,
            bool active,
            bool banned
        )
    {
        Node storage n = nodes[node];
        stake = _stakeNow(node);
        return (n.peerId, n.encKey, stake, n.unbonding, n.releaseBlock, n.reputation, tierOf(stake), stake != 0, n.banned);
    }

    function successorOf(address node) external view returns (address) {
        return nodes[node].successor;
    }

    function reputationOf(address node) external view returns (uint32) {
        return nodes[node].reputation;
    }

    // ---------------------------------------------------------------- internals

    function _stakeNow(address node) internal view returns (uint256) {
        return uint160(stakeHead[node]);
    }

    function _totalNow() internal view returns (uint256) {
        return uint160(totalHead);
    }

    function _writeStake(address node, uint256 value) internal {
        stakeHead[node] = _push(stakeHead[node], stakeHistory[node], value);
    }

    function _writeTotal(uint256 value) internal {
        totalHead = _push(totalHead, totalHistory, value);
    }

    /// Record `value` from the current block on; returns the new head.
    function _push(uint256 head, mapping(uint256 => uint256) storage history, uint256 value)
        internal
        returns (uint256)
    {
        uint256 fromBlock = head >> 208;
        uint256 len = (head >> 160) & type(uint48).max;
        if (head != 0 && fromBlock != block.number) {
            history[len] = (fromBlock << 160) | uint160(head);
            ++len;
        }
        return (block.number << 208) | (len << 160) | uint160(value);
    }

    /// Value at the end of `blockNumber`: the head if it started at or before, otherwise
    /// the last older checkpoint at or before (binary search, rare: stake changed since).
    function _lookup(uint256 head, mapping(uint256 => uint256) storage history, uint256 blockNumber)
        internal
        view
        returns (uint256)
    {
        if ((head >> 208) <= blockNumber) return uint160(head);
        uint256 lo = 0;
        uint256 hi = (head >> 160) & type(uint48).max;
        while (lo < hi) {
            uint256 mid = (lo + hi) >> 1;
            if ((history[mid] >> 160) > blockNumber) hi = mid;
            else lo = mid + 1;
        }
        return lo == 0 ? 0 : uint160(history[lo - 1]);
    }

    /// The signer of a 65-byte (r || s || v) signature over `digest`; zero if malformed.
    function _recoverProof(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s_ = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        // Lower-half s only (EIP-2), like the ledger's signatures.
        if (uint256(s_) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) return address(0);
        return ecrecover(digest, v, r, s_);
    }

    function _pay(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
