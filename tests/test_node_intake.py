"""The node's intake: what it keeps beside the messages it delivers."""

from collections import Counter

import pytest

from p2pfl.node import intake as intake_module
from p2pfl.node.intake import Intake


def test_pushed_attachments_first_kept_bounded_and_dropped_with_their_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deltas pushed beside updates (updates to the committee): the first for an update is
    kept (anyone may push a signed update again with other bytes), the total is bounded
    (beyond it the delta is fetched as usual), each is handed over once, and a round's
    unused ones go when the next round starts."""
    counts: Counter[str] = Counter()
    count = lambda name: counts.update([name])  # noqa: E731
    intake = Intake(bytes(32), bytes(20), None, {}, None, count)  # type: ignore[arg-type]
    monkeypatch.setattr(intake_module, "ATTACHMENTS_MAX_BYTES", 10)
    a, b, c = [(bytes([i]) * 20, b"delta") for i in (1, 2, 3)]
    intake._attach(a, 1, b"12345")
    intake._attach(a, 1, b"other")
    intake._attach(b, 1, b"123456")  # 11 bytes in all: over the bound
    assert counts["attachment-dropped"] == 1
    intake._attach(c, 2, b"abcde")
    intake.forget_attachments(2)  # round 2 starts: round 1's unused one goes
    assert intake.take_attachment(a) == b""
    assert intake.take_attachment(c) == b"abcde" and intake.take_attachment(c) == b""
    assert intake._attached_bytes == 0 and not intake.attachments


async def test_an_update_pushed_to_a_member_holds_its_relay_until_the_pushes_go_quiet() -> None:
    """A member relays (pulls from the other members) once no update was pushed to it for
    MEMBER_PULL_QUIET_S, and at least every MEMBER_PULL_BUSY_S while pushes keep coming:
    an answer asked for mid-push brings what the authors push to it meanwhile. The intake
    times the updates pushed to it, not those a pull relayed."""
    from p2pfl.core.cid import blob_cid
    from p2pfl.core.messages import Update
    from p2pfl.core.signing import Domain
    from p2pfl.node.node import (
        MEMBER_PULL_BUSY_S,
        MEMBER_PULL_QUIET_S,
        MEMBER_PULL_UNPUSHED_S,
        relay_due,
    )

    now = [100.0]
    queued: list[object] = []

    class Queue:
        async def put(self, event: object) -> None:
            queued.append(event)

    intake = Intake(
        bytes(32),
        bytes(20),
        None,
        {},
        Queue(),
        lambda _: None,
        lambda: now[0],  # type: ignore[arg-type]
    )
    # Nothing pushed yet this round (the authors are still training): a quiet spell that is
    # not the end of the pushes; the relay waits MEMBER_PULL_UNPUSHED_S for a first push.
    none = float("-inf")
    assert not relay_due(100.0 + MEMBER_PULL_BUSY_S, intake.pushed_at, none, pulled_at=100.0)
    assert relay_due(100.0 + MEMBER_PULL_UNPUSHED_S, intake.pushed_at, none, pulled_at=100.0)
    # A proposal closed our collection: voting on it needs what it names, relay at once.
    assert relay_due(100.5, intake.pushed_at, none, pulled_at=100.0, voting=True)
    assert relay_due(100.5, pushed_at=100.4, first_pushed_at=100.1, pulled_at=100.0, voting=True)

    def update(author: int) -> bytes:
        cid = blob_cid(bytes([author]) * 64).to_bytes()
        plain = Update(bytes(32), 1, cid, cid, 10, 1.0, b"", bytes([author]) * 20)
        return plain.signed(bytes([author]) * 32, Domain(1, bytes(20))).encode()

    await intake.deliver(update(1), "peer-a", b"delta", via="pull")  # relayed: not a push
    assert intake.pushed_at == float("-inf") and len(queued) == 1
    await intake.deliver(update(2), "peer-b", b"delta", via="push")
    assert intake.pushed_at == 100.0 and len(queued) == 2
    first = intake.pushed_at
    assert not relay_due(100.0 + MEMBER_PULL_QUIET_S / 2, intake.pushed_at, first, pulled_at=95.0)
    assert relay_due(100.0 + MEMBER_PULL_QUIET_S, intake.pushed_at, first, pulled_at=95.0)
    # Pushes every tenth of a second: the relay still runs every MEMBER_PULL_BUSY_S, counted
    # from the first push (not the round start: the relay would meet the push storm)...
    busy = 100.0 + MEMBER_PULL_BUSY_S
    assert not relay_due(busy - 0.5, pushed_at=busy - 0.6, first_pushed_at=first, pulled_at=95.0)
    assert relay_due(busy, pushed_at=busy - 0.1, first_pushed_at=first, pulled_at=95.0)
    # ... or from the last pulls.
    assert not relay_due(busy + 3, pushed_at=busy + 2.9, first_pushed_at=first, pulled_at=busy)
    assert relay_due(
        busy * 2 - 100, pushed_at=busy * 2 - 100.1, first_pushed_at=first, pulled_at=busy
    )
