"""p2pfl: federated learning with no coordinator."""

import importlib.util
import os

__version__ = "0.1.0"

# keccak256 is on every signature and every committee draw; eth-hash picks its backend at
# the first hash, by default pycryptodome (~15 us a call), while pysha3's C code takes ~5.
# ETH_HASH_BACKEND is eth-hash's own switch: a value the user set is kept.
if importlib.util.find_spec("sha3") is not None:
    os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
