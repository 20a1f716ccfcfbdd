"""Multi-node local simulation, scenarios, benchmarks."""
