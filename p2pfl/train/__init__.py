"""Training: torch models, local trainer, datasets and partitions.

- `models`: architectures by name (`build_model`, `register_model`, "module:pkg:factory"),
  seeded `init_weights`, weights <-> numpy (`model_to_numpy`, `load_numpy`).
- `data`: `Dataset`, Fashion-MNIST from Debian's IDX files, sklearn digits,
  `load_user_data` for a laptop user's own .npz or image folder.
- `partition`: seeded IID and Dirichlet splits.
- `config`: `TrainConfig` (no torch import: manifests and scenarios read it).
- `trainer`: `train_local` (base + private data -> float32 delta),
  `evaluate`, `client_seed`.
- `reference`: centralised FedAvg (`reference_fedavg`), the simulation's comparison curve.

Normative text: protocol/spec/training.md.
"""
