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
