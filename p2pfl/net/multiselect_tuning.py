"""Stream negotiation in one round trip instead of two (py-libp2p 0.8.1's multistream-select
client), measured on our simulations.

**What it was.** Opening a stream (`BasicHost.new_stream`) runs multistream-select: the
client writes the `/multistream/1.0.0` header and waits for the peer's, then writes the
protocol it wants and waits for the echo (`MultiselectClient.handshake`, then
`try_select`): two round trips before the first byte of the request, each through both
hosts' event loops, and two writes (each a yamux frame and a Noise message). Every push,
pull, sync and block request opens a stream. With 100 simulated nodes on two cores an open
on an existing connection took 0.77 s at the median (p90 5.2 s).

Measured after the fix, the same simulation: opens no faster at the median (0.9-1.1 s; ~0.2
s of an open is in py-libp2p's `Swarm.new_stream`, the rest waiting on the peer, whose loop
lags 7 ms at the median and ~250 ms at p99): the saving is a round trip and a frame per
stream, not what makes an open slow there.

**The fix.** With one protocol to propose (every stream we open), the header and the
proposal go out in one write and the two answers are read after it, as go-libp2p's
`SelectProtoOrFail` does; the listener's side is unchanged (it reads the header, then the
proposal, and answers each: the protocol allows the dialer to send both at once). A peer
that answers `na` fails the open as before; one that restarts the handshake mid-selection
(the library's own retry for go-libp2p peers) is handled by the library's path. More than
one protocol to choose from, or another communicator, goes through the library unchanged.

Version-guarded like `yamux_tuning`: replaced only for a libp2p version this was read
against.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import trio

from p2pfl.net.yamux_tuning import install_once


def make_pipelined(select_one_of: Any) -> Any:
    """Wrap `MultiselectClient.select_one_of(self, protocols, communicator, timeout)`."""
    from libp2p.io.exceptions import IOException
    from libp2p.protocol_muxer.exceptions import (
        MultiselectClientError,
        MultiselectCommunicatorError,
    )
    from libp2p.protocol_muxer.multiselect_client import (
        DEFAULT_NEGOTIATE_TIMEOUT,
        MULTISELECT_PROTOCOL_ID,
        PROTOCOL_NOT_FOUND_MSG,
    )
    from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
    from libp2p.utils import encode_delim

    @functools.wraps(select_one_of)
    async def pipelined_select_one_of(
        self: Any,
        protocols: Sequence[Any],
        communicator: Any,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> Any:
        if len(protocols) != 1 or type(communicator) is not MultiselectCommunicator:
            return await select_one_of(self, protocols, communicator, negotiate_timeout)
        (protocol,) = protocols
        proposal = "" if protocol is None else str(protocol)
        with trio.move_on_after(negotiate_timeout):
            try:
                await communicator.read_writer.write(
                    encode_delim(MULTISELECT_PROTOCOL_ID.encode()) + encode_delim(proposal.encode())
                )
            except (IOException, AssertionError, ValueError) as error:
                raise MultiselectClientError(f"handshake write failed: {error}") from error
            try:
                header = await communicator.read()
                if header != MULTISELECT_PROTOCOL_ID:
                    raise MultiselectClientError(
                        f"multiselect protocol ID mismatch: expected "
                        f"{MULTISELECT_PROTOCOL_ID}, got {header!r}"
                    )
                response = await communicator.read()
            except MultiselectCommunicatorError as error:
                raise MultiselectClientError(
                    f"protocol read failed: {error}, protocol={protocol}"
                ) from error
            if response == proposal:
                return protocol
            if response == PROTOCOL_NOT_FOUND_MSG:
                raise MultiselectClientError(
                    f"protocols not supported: tried [{protocol!r}] (response 'na')"
                )
            if response == MULTISELECT_PROTOCOL_ID:  # the peer restarted the handshake
                await self.handshake(communicator)
                return await self.try_select(communicator, protocol)
            raise MultiselectClientError(
                f"unrecognized response: {response!r}, expected {proposal!r} "
                f"or {PROTOCOL_NOT_FOUND_MSG!r}"
            )
        raise MultiselectClientError(
            f"response timed out after {negotiate_timeout}s, protocols tried: [{protocol!r}]"
        )

    return pipelined_select_one_of


def apply() -> bool:
    """Install the fix once per process; False if this libp2p is untested."""
    return install_once(__name__, "a stream's protocol negotiation takes two round trips", _install)


def _install() -> None:
    from libp2p.protocol_muxer.multiselect_client import MultiselectClient

    MultiselectClient.select_one_of = make_pipelined(  # type: ignore[method-assign]
        MultiselectClient.select_one_of
    )
