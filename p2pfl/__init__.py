"""p2pfl: federated learning with no coordinator."""

__version__ = "0.1.0"
