# The two commands from the README: `make run` and `make test`. Both set up first.
.PHONY: setup run test bench

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python -m p2pfl.selfcheck
	.venv/bin/python -W ignore -m sim sim/scenarios/quickstart.toml

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m sim.bench all
