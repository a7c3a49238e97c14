"""The sections of the training config, one module per group (see trainer/config/schema.py)."""
