"""Training: configuration, "auto" hyperparameters, the loop, checkpoints and metrics."""
