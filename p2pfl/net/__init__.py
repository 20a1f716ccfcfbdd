"""libp2p node: host, gossip, block exchange, discovery (trio)."""
