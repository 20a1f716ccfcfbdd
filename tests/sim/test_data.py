"""A node process's partition file: what the parent writes is what the child trains on."""

import numpy as np

from sim.data import load_data, load_partition, save_partition
from sim.scenario import load_scenario


def test_partition_file_round_trips_memory_mapped(tmp_path):
    scenario = load_scenario("sim/scenarios/tiny.toml")
    part = load_data(scenario)[2][1]
    save_partition(part, tmp_path / "node1")
    loaded = load_partition(tmp_path / "node1")
    assert isinstance(loaded.x, np.memmap) and not loaded.x.flags.writeable
    assert loaded.x.tobytes() == part.x.tobytes() and loaded.y.tobytes() == part.y.tobytes()
    assert loaded.x.dtype == np.float32 and loaded.y.dtype == np.int64
