"""libp2p node: host, gossip, block exchange, discovery (trio).

Entry point: `open_node_host(NetConfig(...), private_key)` yields a `NodeNet`.
"""

from p2pfl.net.blocks import FetchError
from p2pfl.net.blockstore import BlockNotFound, BlockStore
from p2pfl.net.config import NetConfig, topic_name
from p2pfl.net.gossip import GossipMessage, ValidationResult, Validator, Verdict, message_id
from p2pfl.net.host import NodeNet, NoPeersError, open_node_host

__all__ = [
    "BlockNotFound",
    "BlockStore",
    "FetchError",
    "GossipMessage",
    "NetConfig",
    "NoPeersError",
    "NodeNet",
    "ValidationResult",
    "Validator",
    "Verdict",
    "message_id",
    "open_node_host",
    "topic_name",
]
