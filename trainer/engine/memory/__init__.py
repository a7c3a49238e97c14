"""Memory and speed options of the base model; ``prepare`` is what the training loop calls."""
