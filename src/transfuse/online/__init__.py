"""Online distillation: several trainable students in one loop, teaching each other.

A method (``transfuse list online-methods``; one file each under ``online.methods``) gives each
student an objective that reads the other students' outputs as its teacher (detached or not, as
the method says). :func:`transfuse.online.loop.train_students` runs them on the distillation
loop's named steps (``distill.loop.Learner``): one optimizer per student, or one over all.
Staged methods (``takd``) chain offline stages of ``distill.loop.train``; ``comd`` runs
competitive rounds of small causal-LM students with a shared judge/teacher.
"""
from __future__ import annotations

from .methods import OnlineMethod, build_method, methods


def train_students(*args, **kwargs):
    """Python API: see :func:`transfuse.online.loop.train_students`."""
    from .loop import train_students as run

    return run(*args, **kwargs)


__all__ = ["OnlineMethod", "methods", "build_method", "train_students"]
