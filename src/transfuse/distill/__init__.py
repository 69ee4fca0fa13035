"""The distillation loop (one explicit loop on Accelerate), checkpoints and the Python API.

The package is callable: ``transfuse.distill(student, teacher, objective, loader)`` runs
:func:`transfuse.distill.api.distill`.
"""
from .._callable import make_callable

make_callable(__name__, "transfuse.distill.api:distill")
