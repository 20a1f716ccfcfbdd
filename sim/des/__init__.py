"""A discrete-event simulation of many p2pfl nodes (issue #14): the unmodified round
machine of every node, driven on virtual time by simpy over models of the network
(network.py), the chain (chain.py) and training (training.py); node.py is the shell of one
node, engine.py the engine, report.py the run's folder. `python -m sim.des SCENARIO.toml`."""
