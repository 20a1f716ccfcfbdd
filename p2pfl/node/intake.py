"""Gossip intake: the validator in front of the node's topics, and validated messages
turned into round events (`p2pfl.core.round_events.event_for`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from p2pfl.core import round_events as ev
from p2pfl.core.messages import Proposal, Signed, Update, decode_message
from p2pfl.core.round import RoundMachine
from p2pfl.core.validation import ACCEPT, Verdict, check_gossip
from p2pfl.errors import InvalidMessage
from p2pfl.node.queue import EventQueue

log = logging.getLogger("p2pfl.node")

# Pushed attachments kept at once (a round's deltas for a member: 100 x a 400 KB model is
# 40 MB; beyond this, deltas are fetched).
ATTACHMENTS_MAX_BYTES = 256 * 1024 * 1024

# (round, result CID, contributors root): names one proposal's content.
ProposalKey = tuple[int, bytes, bytes]


class Intake:
    """Validates gossip, keeps the updates and proposals seen (the node needs them later:
    inline delta bytes for a fetch, a committed round's proposal for its reward tree),
    and queues the machine's events."""

    def __init__(
        self,
        task: bytes,
        address: bytes,
        machine: RoundMachine,
        registered: Mapping[bytes, str],
        queue: EventQueue,
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.address = address
        self.machine = machine
        self.registered = (
            registered  # address -> peer ID (PeerDirectory.ids, filled as rounds start)
        )
        self.queue = queue
        self.count = count
        self.updates: dict[ev.UpdateKey, Update] = {}
        # Two proposals can share a result and differ in their rejected list (an
        # equivocator's second version seen by one leader and not by another), so the
        # contributors root is part of the key.
        self.proposals: dict[ProposalKey, Proposal] = {}
        # Delta bytes pushed beside an update (updates to the committee), unverified: the
        # delta fetch checks them against the CID and takes them instead of fetching.
        # Dropped when used or when the round is over (`forget_attachments`); the first
        # for an update is kept, up to `ATTACHMENTS_MAX_BYTES` in all (anyone may push a
        # signed update again with other bytes: they would only make us fetch).
        self.attachments: dict[ev.UpdateKey, tuple[int, bytes]] = {}
        self._attached_bytes = 0
        # Updates a committee member pulled from another member (updates to the
        # committee): the peer that relayed each, by round. It holds the delta (pushed to
        # it by the author), so the fetch asks it first instead of dialling the author.
        self.relayed_by: dict[ev.UpdateKey, tuple[int, str]] = {}
        # When an update was last pushed to us (`clock()`; updates to the committee): a
        # member relays from the others once the pushes go quiet (`Node._pull_from_members`).
        self.pushed_at = float("-inf")
        self.clock = clock

    def validate(self, data: bytes) -> Verdict:
        """The gossip validator's checks (p2pfl.core.validation): canonical decoding, our
        task, a round near ours, valid signatures by registered nodes. The round machine
        does the stateful checks afterwards (base, membership, duplicates)."""
        return check_gossip(
            data,
            task=self.task,
            domain=self.machine.domain,
            registered=self.registered or None,
            current_round=self.machine.round if self.machine.round > 0 else None,
        )

    def validator(self, topic: str, data: bytes, from_peer: str) -> Any:
        """`validate` as the network layer's validator callback."""
        from p2pfl.net.gossip import ValidationResult

        verdict = self.validate(data)
        if verdict.action != ACCEPT:
            self.count(f"gossip-{verdict.action}-{verdict.reason}")
        return ValidationResult.of(verdict)

    async def run(self, channel: Any) -> None:
        """Deliver every message admitted on one topic (one task per topic)."""
        async for message in channel:
            await self.deliver(message.data, message.from_peer, message.attachment, message.via)

    async def deliver(
        self, data: bytes, from_peer: str = "", attachment: bytes = b"", via: str = ""
    ) -> None:
        """Queue the event for a message that passed `validate` (waits while the queue is
        full: see p2pfl.node.queue for the back-pressure rule)."""
        try:
            message = decode_message(data)
        except InvalidMessage:
            self.count("decode-rejected")
            return
        if isinstance(message, Signed) and message.signer == self.address:  # type: ignore[attr-defined]
            return  # our own message echoed back; the machine already has it
        self.remember(message)
        if attachment and isinstance(message, Update) and not message.inline:
            self._attach((message.signer, message.delta), message.round, attachment)
        if via == "push" and isinstance(message, Update):
            self.pushed_at = self.clock()
        if via == "pull" and from_peer and isinstance(message, Update):
            self.relayed_by.setdefault((message.signer, message.delta), (message.round, from_peer))
        event = ev.event_for(message)  # `validate` checked the signature
        if event is not None:
            await self.queue.put(event)

    def _attach(self, key: ev.UpdateKey, round_: int, attachment: bytes) -> None:
        if key in self.attachments:
            return
        if self._attached_bytes + len(attachment) > ATTACHMENTS_MAX_BYTES:
            self.count("attachment-dropped")  # (the delta is fetched as usual)
            return
        self.attachments[key] = (round_, attachment)
        self._attached_bytes += len(attachment)

    def take_attachment(self, key: ev.UpdateKey) -> bytes:
        """The bytes pushed beside `key`'s update (b"" if none), handed over once."""
        _, attachment = self.attachments.pop(key, (0, b""))
        self._attached_bytes -= len(attachment)
        return attachment

    def forget_attachments(self, before_round: int) -> None:
        """Drop the attachments of rounds before `before_round` (never fetched: unused)."""
        for key in [k for k, (r, _) in self.attachments.items() if r < before_round]:
            self.take_attachment(key)
        for key in [k for k, (r, _) in self.relayed_by.items() if r < before_round]:
            del self.relayed_by[key]

    def remember(self, message: Any) -> None:
        """Keep an update (its inline bytes serve a Fetch) or a proposal (a committed
        round's reward tree is rebuilt from it), ours or another's."""
        if isinstance(message, Update):
            self.updates[(message.signer, message.delta)] = message
        elif isinstance(message, Proposal):
            self.proposals.setdefault(
                (message.round, message.result, message.contributors_root), message
            )
