"""A small spam flood on real hosts (sim/fuzz/flood.py): every kind of hostile message is
rejected and counted by reason, and a member's votes for views that never run reach the
round machine but leave no state behind. The big flood and its RSS are
`python -m sim.bench spam`."""

from pathlib import Path

from sim.fuzz.flood import run_flood


def test_spam_flood_is_rejected_and_counted(tmp_path: Path) -> None:
    result = run_flood(tmp_path, 500, defended=False, seed=3)
    assert result.sent == 500 and result.refused == 0
    # The flood reaches the validator: nothing is lost on the way (truncated messages cut to
    # the same few bytes are one message, hence not all 500).
    assert result.validated >= 0.95 * result.sent
    reasons = {r.split("-", 1)[1] for r in result.rejections_by_reason}  # gossip-/sync- prefix
    assert {
        "malformed",
        "oversized",
        "wrong-task",
        "bad-signature",
        "unregistered-signer",
        "replayed-round",
    } <= reasons
    assert result.ignored > 0  # future rounds: not wrong, not forwarded
    assert result.machine_rejected.get("rejected:future-view", 0) > 0
    assert result.machine_statements == 0


def test_default_limits_ban_the_spammers(tmp_path: Path) -> None:
    result = run_flood(tmp_path, 600, defended=True, seed=4)
    assert result.peers_banned == 3
    # Once banned, the victim judges nothing more from them: what they had already written
    # is dropped unread (~77 of 600 judged). How many of their writes fail rather than land
    # in socket buffers before the connection closes depends on their speed, not ours.
    assert result.validated < result.sent / 4
    assert result.rejected <= result.validated
