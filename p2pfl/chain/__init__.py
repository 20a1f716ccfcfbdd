"""Chain client: contracts, providers (embedded / anvil / RPC), event follower."""
