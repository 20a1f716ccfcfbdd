"""The probation history's byte format (p2pfl.core.probation_history)."""

from __future__ import annotations

import pytest

from p2pfl.core.probation_history import decode_strikes, encode_strikes, forget_before
from p2pfl.errors import P2PFLError

A, B = b"\x01" * 20, b"\x02" * 20


def test_encoding_is_canonical_and_round_trips():
    history = {3: {B: 2, A: 1}, 1: {A: 1}, 2: {}}
    data = encode_strikes(history)
    assert data == encode_strikes(
        dict(sorted(history.items()))
    )  # order of insertion does not matter
    assert data.index(b'"1"') < data.index(b'"2"') < data.index(b'"3"')
    assert decode_strikes(data) == history


@pytest.mark.parametrize(
    "data", [b"{trunc", b'{"1": ["not", "a", "map"]}', b'{"x": {}}', b'{"1": {"zz": 1}}']
)
def test_what_is_not_a_history_is_refused(data):
    with pytest.raises(P2PFLError, match="unreadable"):
        decode_strikes(data)


def test_forget_before_drops_rounds_out_of_every_window():
    history = {1: {A: 1}, 2: {}, 3: {B: 1}}
    forget_before(history, 2)
    assert history == {2: {}, 3: {B: 1}}
