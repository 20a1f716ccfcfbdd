"""Training: torch models, local trainer, datasets and partitions."""
