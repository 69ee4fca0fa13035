"""The distillation loop (one explicit loop on Accelerate), checkpoints and the Python API."""
