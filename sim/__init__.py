"""Multi-node local simulation, scenarios, benchmarks."""

# The cyclic collector's thresholds where one process hosts many nodes (a shard, the DES;
# CPython's defaults: 700, 10, 10): a young collection per 20,000 container allocations, a
# full one per 2,000 of those. Fifty hosts make a heap of millions of long-lived containers
# (connections, streams, peer stores, round state) and every stream and RPC allocates; at
# the defaults the collector walked that heap so often that py-spy found it in about half
# of a 100-node shard's samples (at coroutine creation in py-libp2p's per-stream
# notifications, mostly).
GC_THRESHOLDS = (20_000, 20, 100)
