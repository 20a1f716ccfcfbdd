"""Spam flood against a real node (sim/fuzz/flood.py): `python -m sim.bench spam`.

Prints, for the `open` phase (bans and per-peer rate limits off, so every message is
validated: the worst case for memory), messages sent, rejected by reason, ignored,
admitted, RSS before/after, and the headline `spam-flood-peak-rss`; for the `defended`
phase (default limits) how many rejections it took to ban the attackers.
SPAM_MESSAGES (default 20,000) sets the open phase's size.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sim.bench import BenchError, figure

DEFAULT_MESSAGES = 20_000
DEFENDED_MESSAGES = 3_000


def run() -> None:
    from sim.fuzz.flood import run_flood

    try:
        messages = int(os.environ.get("SPAM_MESSAGES", DEFAULT_MESSAGES))
    except ValueError as exc:
        raise BenchError(f"bad SPAM_MESSAGES: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="p2pfl-spam-") as tmp:
        defended = run_flood(Path(tmp) / "defended", DEFENDED_MESSAGES, defended=True, seed=1)
        figure("spam-defended-sent", defended.sent, "messages")
        figure("spam-defended-refused", defended.refused, "messages")
        figure("spam-defended-rejected", defended.rejected, "messages")
        figure("spam-defended-peers-banned", defended.peers_banned, "peers")
        result = run_flood(Path(tmp) / "open", messages, defended=False, seed=2)
    if result.rejected == 0:
        raise BenchError("the victim rejected nothing: the flood did not arrive")
    figure("spam-flood-sent", result.sent, "messages")
    for category, count in sorted(result.sent_by_category.items()):
        figure(f"spam-flood-sent-{category}", count, "messages")
    figure("spam-flood-refused", result.refused, "messages")
    figure("spam-flood-validated", result.validated, "messages")
    figure("spam-flood-rejected", result.rejected, "messages")
    for reason, count in sorted(result.rejections_by_reason.items()):
        figure(f"spam-flood-rejected-{reason}", count, "messages")
    figure("spam-flood-ignored", result.ignored, "messages")
    figure("spam-flood-admitted", result.admitted, "messages")
    for reason, count in sorted(result.machine_rejected.items()):
        figure(f"spam-flood-machine-{reason.replace(':', '-')}", count, "messages")
    figure("spam-flood-machine-statements", result.machine_statements, "statements")
    figure("spam-flood-seconds", result.seconds, "s")
    figure("spam-flood-rss-before", result.rss_before_mib, "MiB")
    figure("spam-flood-rss-at-half", result.rss_half_mib, "MiB")
    figure("spam-flood-rss-after", result.rss_after_mib, "MiB")
    if result.rss_after_trim_mib is not None:
        figure("spam-flood-rss-after-trim", result.rss_after_trim_mib, "MiB")
    figure("spam-flood-rss-growth", result.rss_peak_mib - result.rss_before_mib, "MiB")
    figure("spam-flood-peak-rss", result.rss_peak_mib, "MiB")
