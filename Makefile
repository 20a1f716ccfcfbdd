# The two commands from the README: `make run` and `make test`. Both set up first.
.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python -m p2pfl.selfcheck
	.venv/bin/python -W ignore -m sim sim/scenarios/quickstart.toml

# Two pytest workers (pytest-xdist): the slow tests mostly wait on rounds, chains and
# timeouts, so two at a time about halve the suite's wall time (1,060 -> 552-649 s here,
# ~1.1 cores busy on average with the two).
test: setup
	.venv/bin/python -m pytest -q -n 2 --dist worksteal

bench: setup
	.venv/bin/python -m sim.bench all
