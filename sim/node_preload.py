"""What every node process imports, imported once by the fork server `sim.processes` forks
its node processes from (`multiprocessing`'s "forkserver" with this module preloaded).

A node's imports (torch, web3, libp2p, trio: ~1,900 modules, ~250 MiB) are then pages the
ten children share copy-on-write instead of ten private copies: the tree's PSS counts them
once (issue #13). `gc.freeze()` moves the imported objects out of the collector's reach so
its passes in the children do not write to (and so un-share) their pages. Nothing here
starts a thread: the server forks, and a forked thread pool would be a dead one.
"""

import gc

import trio  # noqa: F401

import p2pfl.cli.launch  # noqa: F401
import p2pfl.core.identity  # noqa: F401
import p2pfl.logs  # noqa: F401
import p2pfl.manifest  # noqa: F401
import p2pfl.train.trainer  # noqa: F401
import sim.data  # noqa: F401
import sim.node_proc  # noqa: F401

gc.freeze()
