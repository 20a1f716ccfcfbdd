"""The node: one participant in one task, a tree of trio nurseries around the round
machine (p2pfl.core.round), which holds all the protocol logic. The node only turns the
machine's actions into I/O and the I/O's outcomes back into events.

    Node.run()                    node nursery: lives as long as the node (node.py)
      ├── event loop              run()'s body: queue -> RoundMachine.handle -> action table
      ├── ticker                  Tick(now) at the machine's deadlines (0.25 s collecting, else 2 s)
      ├── heartbeat               signed Heartbeat every 5 s on the consensus topic (heartbeat.py)
      ├── chain follower          RoundCommitted -> reward file, probation history,
      │                           round record (committed.py) -> ChainCommitted
      ├── gossip intake ×3        one per topic: validator, message -> event (intake.py)
      ├── publish                 one short task per gossiped message
      ├── chain transactions      commitRound, submitEquivocation (chain_tx.py)
      ├── round start             Advance -> committed model held -> on_round -> chain
      │                           shows the commit -> snapshot -> RoundStarted
      └── round r nursery         (rounds.py) opened just before RoundStarted(r), cancelled
            │                     as a whole on Advance(r+1): no worker checks the round
            ├── training          base -> delta: worker thread or the simulator's pool
            ├── delta fetch ×n    inline bytes or holders, retried while it is worth it
            └── aggregation       ComputeAggregate -> AggregateComputed, worker thread

Everything passes through one bounded event queue (queue.py, which states the
back-pressure rule: lossless, producers wait, gossip sheds overload where its sync
repairs it). Disk reads, hashing and decoding run in worker threads (models.py,
workers.py). The node reaches the layers below only through `NodeNet` and `ChainPort`
(ports.py). Everything a restarted node needs is on disk (block store, follower cursor,
probation history) or on-chain (latest committed model digest), so a node killed at any
point rejoins from the chain.

Modules: node.py (life cycle, nursery tree, action table, round start), intake.py
(gossip validation and intake), heartbeat.py (liveness beats), queue.py (event queue),
rounds.py (round nurseries), workers.py (training, fetching, aggregating), models.py
(model cache, fetch retries), peers.py (registered peer IDs, provider order), chain_tx.py
(chain transactions), committed.py (reward files, probation history), roundlog.py
(RoundLog, Behaviour), ports.py (NodeNet, ChainPort), metrics.py (Prometheus collector
reading the counters above at scrape time; p2pfl.cli.launch serves it).
"""

from p2pfl.core.round_result import compute_aggregate
from p2pfl.node.committed import STRIKES_FILE, CommittedRounds, load_strikes, save_strikes
from p2pfl.node.intake import Intake
from p2pfl.node.models import FETCH_RETRY_MAX_S, FETCH_RETRY_S, ModelCache
from p2pfl.node.node import (
    CHAIN_WAIT_POLL_S,
    DEFAULT_FOLLOW_POLL_S,
    DEFAULT_TICK_S,
    LATE_START_S,
    TOPIC_COMMITS,
    TOPIC_CONSENSUS,
    TOPIC_UPDATES,
    Node,
    topic_of,
)
from p2pfl.node.ports import ChainPort, NodeNet
from p2pfl.node.queue import EVENT_QUEUE_SIZE, EventQueue
from p2pfl.node.roundlog import Behaviour, RoundLog, Trainer
from p2pfl.node.workers import DEFAULT_INLINE_MAX_BYTES

__all__ = [
    "CHAIN_WAIT_POLL_S",
    "DEFAULT_FOLLOW_POLL_S",
    "DEFAULT_INLINE_MAX_BYTES",
    "DEFAULT_TICK_S",
    "EVENT_QUEUE_SIZE",
    "FETCH_RETRY_MAX_S",
    "FETCH_RETRY_S",
    "LATE_START_S",
    "STRIKES_FILE",
    "TOPIC_COMMITS",
    "TOPIC_CONSENSUS",
    "TOPIC_UPDATES",
    "Behaviour",
    "ChainPort",
    "CommittedRounds",
    "EventQueue",
    "Intake",
    "ModelCache",
    "Node",
    "NodeNet",
    "RoundLog",
    "Trainer",
    "compute_aggregate",
    "load_strikes",
    "save_strikes",
    "topic_of",
]
