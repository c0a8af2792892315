"""Training: the recipe (`train(cfg)`), the Trainer and its callbacks, checkpoints, safeguards and loggers."""
