"""The probation history a node keeps on disk (p2pfl.node.load_strikes / save_strikes)."""

from __future__ import annotations

import pytest

from p2pfl.errors import P2PFLError
from p2pfl.node import load_strikes, save_strikes


def test_history_survives_a_restart_and_drops_rounds_out_of_every_window(tmp_path):
    path = tmp_path / "strikes.json"
    assert load_strikes(path) == {}  # a new node has none
    a, b = b"\x01" * 20, b"\x02" * 20
    history = {1: {a: 1}, 2: {}, 3: {a: 1, b: 2}}
    save_strikes(path, history, keep_from=2)
    assert history == {2: {}, 3: {a: 1, b: 2}}  # round 1 left the window
    assert load_strikes(path) == history
    assert not path.with_suffix(".json.tmp").exists()


def test_an_unreadable_history_is_a_clear_error(tmp_path):
    path = tmp_path / "strikes.json"
    path.write_text('{"1": ["not", "a", "map"]}')
    with pytest.raises(P2PFLError, match="delete it"):
        load_strikes(path)
    path.write_text("{trunc")
    with pytest.raises(P2PFLError, match="unreadable"):
        load_strikes(path)
