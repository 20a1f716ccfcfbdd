"""Fuzz targets with planted bugs, for tests of the libFuzzer runner (sim/fuzz/libfuzzer.py)."""

from __future__ import annotations

import time


class PlantedCrash:
    """Raises on inputs starting with DE AD; the seed is one mutation away."""

    name = "planted-crash"

    def seeds(self) -> list[bytes]:
        return [b"\xde\xac"]

    def run(self, data: bytes) -> str:
        if data[:2] == b"\xde\xad":
            raise KeyError("planted bug")
        return "ok"


class PlantedHang:
    """Sleeps 3 s on inputs starting with BE EF (past a 1 s timeout)."""

    name = "planted-hang"

    def seeds(self) -> list[bytes]:
        return [b"\xbe\xee"]

    def run(self, data: bytes) -> str:
        if data[:2] == b"\xbe\xef":
            time.sleep(3)
        return "ok"
