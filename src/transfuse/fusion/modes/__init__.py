"""What ``transfuse fuse`` runs, one module per ``mode:`` (``generate``, ``classifiers``, ``cards``).

Each module has ``run(config: Mapping[str, Any]) -> dict``: it receives the whole recipe after
overrides, checks it, writes its outputs and returns the report it also wrote.
"""
