"""One exception hierarchy for the whole project.

Every error says what was wrong and, where it can, what to do about it.
Network input never raises out of a handler: it becomes an `InvalidMessage`
(or `InvalidBlock`) that the caller counts and drops.
"""


class P2PFLError(Exception):
    """Root of every error p2pfl raises on purpose."""


class InvalidMessage(P2PFLError):
    """Bytes or a decoded message that break the protocol rules.

    `reason` is a short machine-friendly tag (e.g. "unknown-field"), the message
    text adds the detail for people.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidSignature(InvalidMessage):
    """A signature that does not verify or does not match its claimed signer."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("bad-signature", detail)


class InvalidBlock(P2PFLError):
    """A block or DAG whose bytes do not match its CID, or that is malformed."""


class AggregationError(P2PFLError):
    """Inputs that no aggregation rule can combine (shape mismatch, too few updates)."""


class ChainError(P2PFLError):
    """A chain call failed; `revert_reason` is set when the EVM reverted."""

    def __init__(self, message: str, revert_reason: str | None = None) -> None:
        self.revert_reason = revert_reason
        super().__init__(message)


class KeystoreError(P2PFLError):
    """A keystore that cannot be read or decrypted."""


class ConfigError(P2PFLError):
    """A configuration, manifest or scenario file with a missing or bad value."""
