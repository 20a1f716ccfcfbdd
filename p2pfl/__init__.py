"""p2pfl: federated learning with no coordinator."""

import os

__version__ = "0.1.0"

# keccak256 is on every signature and every committee draw; eth-hash picks its backend at
# the first hash, by default pycryptodome (~15 us a call), while pysha3's C code takes ~5.
# ETH_HASH_BACKEND is eth-hash's own switch: a value the user set is kept, and without a
# pysha3 that eth-hash can load (its `sha3.keccak_256`) the default stays.
try:
    from sha3 import keccak_256 as _keccak_256  # noqa: F401  (safe-pysha3, pinned)
except ImportError:
    pass
else:
    os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
