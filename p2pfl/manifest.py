"""Task manifests: what a training task is, named by the CID of its canonical bytes.

The manifest fixes everything every node must agree on: the model architecture, the
local training recipe, the aggregation pipeline, the committee size and deadlines, the
genesis model's CID and where the contracts live. Its canonical form is JSON with
sorted keys and no whitespace; the task id is the sha2-256 digest of its CID, which is
how the RoundLedger names the task.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from p2pfl.core.aggregate import RuleSpec
from p2pfl.core.cid import CID, blob_cid
from p2pfl.core.round import RoundConfig
from p2pfl.errors import ConfigError

MANIFEST_VERSION = 1
# The `privacy` table's keys and their defaults (spec sealing.md): updates are sealed to
# the committee unless a task says otherwise (e.g. to measure what sealing costs), and
# gossiped to every node ("all") unless the task sends them to the committee only
# ("committee": RoundConfig.updates_to_committee; spec round.md).
PRIVACY_DEFAULTS: dict[str, Any] = {"sealed": True, "updates": "all"}
UPDATES_TO = ("all", "committee")


def privacy_options(table: Any) -> dict[str, Any]:
    """A `privacy` table over its defaults; ConfigError for an unknown key or a value of
    the wrong type (a typo must not silently publish plain deltas)."""
    if not isinstance(table, dict):
        raise ConfigError("manifest privacy must be a table")
    unknown = sorted(set(table) - set(PRIVACY_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"manifest privacy has unknown keys {unknown} (known: {sorted(PRIVACY_DEFAULTS)})"
        )
    options = {**PRIVACY_DEFAULTS, **table}
    if type(options["sealed"]) is not bool:
        raise ConfigError(
            f"manifest privacy.sealed must be true or false, not {options['sealed']!r}"
        )
    if options["updates"] not in UPDATES_TO:
        raise ConfigError(
            f"manifest privacy.updates must be one of {list(UPDATES_TO)}, "
            f"not {options['updates']!r}"
        )
    return options


@dataclass(frozen=True)
class TaskManifest:
    name: str
    model: str  # p2pfl.train model registry name (or "module:pkg.mod:factory")
    initial_model: str  # CID (text) of the genesis model's canonical safetensors
    chain_id: int
    registry: str  # NodeRegistry address (checksum hex)
    ledger: str  # RoundLedger address
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # p2pfl.train.TrainConfig.from_dict
    aggregation: dict[str, Any] = field(default_factory=dict)  # RuleSpec.from_dict; {} = default
    committee_size: int = 7
    quorum: int = 0  # votes to commit; 0 = ceil(2k/3)
    collect_deadline_s: float = 60.0
    collect_quorum_percent: int = 80
    view_timeout_s: float = 15.0
    commit_fallback_delay_s: float = 5.0
    redraw_timeout_s: float = 150.0
    small_redraw_delay_s: float = 5.0  # also the contract's redrawDelay for the task
    # Round liveness (p2pfl.core.round.RoundConfig says why these values): collection stays
    # open this long after the quorum for late updates; timeouts grow by this factor per
    # failed attempt/view of a round, up to the cap. Growth is shared by every node (their
    # attempt schedules must agree), so it is the task's, not a node's, choice.
    straggler_grace_s: float = 5.0
    timeout_growth: float = 1.5
    max_timeout_factor: float = 8.0
    reward_per_round_wei: int = 0
    seed: int = 0  # task seed: clients' per-round training seeds derive from it
    version: int = MANIFEST_VERSION
    # `[privacy]`: {"sealed": bool}; {} = the defaults (PRIVACY_DEFAULTS). Left out of the
    # canonical bytes when empty, so a manifest written before it keeps its task id.
    privacy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        CID.parse(self.initial_model)
        self.rule_spec()  # validates the aggregation table
        self.privacy_options()  # validates the privacy table
        if self.version != MANIFEST_VERSION:
            raise ConfigError(
                f"manifest version {self.version} is not supported (expected {MANIFEST_VERSION})"
            )

    def encode(self) -> bytes:
        raw = asdict(self)
        if not raw["privacy"]:
            del raw["privacy"]
        return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()

    def privacy_options(self) -> dict[str, Any]:
        """The `privacy` table over its defaults (`privacy_options`)."""
        return privacy_options(self.privacy)

    @property
    def sealed(self) -> bool:
        """Whether updates are sealed to the committee (spec sealing.md)."""
        return bool(self.privacy_options()["sealed"])

    @property
    def cid(self) -> CID:
        return blob_cid(self.encode())

    @property
    def task_id(self) -> bytes:
        return self.cid.digest

    def rule_spec(self) -> RuleSpec:
        return RuleSpec.from_dict(self.aggregation) if self.aggregation else RuleSpec.default()

    def round_config(self, **overrides: Any) -> RoundConfig:
        return RoundConfig(
            task=self.task_id,
            committee_size=self.committee_size,
            rule=self.rule_spec().name,
            task_quorum=self.quorum,
            collect_deadline_s=self.collect_deadline_s,
            collect_quorum_percent=self.collect_quorum_percent,
            view_timeout_s=self.view_timeout_s,
            commit_fallback_delay_s=self.commit_fallback_delay_s,
            redraw_timeout_s=self.redraw_timeout_s,
            small_redraw_delay_s=self.small_redraw_delay_s,
            **{
                "straggler_grace_s": self.straggler_grace_s,
                "timeout_growth": self.timeout_growth,
                "max_timeout_factor": self.max_timeout_factor,
                "sealed": self.sealed,
                "updates_to_committee": self.privacy_options()["updates"] == "committee",
                **overrides,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> TaskManifest:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"manifest is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("manifest must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"manifest has unknown keys {unknown}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ConfigError(f"bad manifest: {exc}") from None

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.encode())
        return target

    @classmethod
    def load(cls, path: str | Path) -> TaskManifest:
        try:
            return cls.decode(Path(path).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"no manifest at {path}") from None
