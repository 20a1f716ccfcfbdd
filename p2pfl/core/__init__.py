"""Pure, deterministic protocol logic. Imports none of trio, libp2p, web3, torch."""
