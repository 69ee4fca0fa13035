"""Online methods: one file per method, registered as ``@methods.register("name")``.

A joint method (``kind = "joint"``: dml, bdkd) returns one :class:`~transfuse.objectives.Objective`
per student; the loop calls student i's objective with its own outputs and its peers' outputs
stacked as the "teacher" (logits (P, B, C), P = number of peers, in student order without i),
detached when ``detach_peers`` is set. Other kinds run their own schedule (``takd``: offline
stages; ``comd``: competitive LM rounds) through ``run``.
"""
from __future__ import annotations

from typing import List

from ...errors import TransfuseError
from ...registry import Registry

methods: Registry = Registry("online-method", "transfuse.online.methods")


class OnlineMethod:
    """Base of the registered online methods."""

    #: "joint": all students step together in one loop; "staged" / "rounds": the method's own ``run``.
    kind: str = "joint"
    #: True: a student's loss sees its peers' outputs detached (no gradient reaches them).
    detach_peers: bool = True
    #: the fewest students the method takes
    min_students: int = 2

    def check(self, n_students: int) -> None:
        """Refuse a student count the method cannot use (one clear sentence)."""
        name = getattr(self, "registry_name", type(self).__name__)
        if n_students < self.min_students:
            raise TransfuseError(
                f"online method {name!r} needs at least {self.min_students} students and {n_students} "
                f"{'was' if n_students == 1 else 'were'} given; list them under `students:`"
            )

    def objectives(self, n_students: int) -> List:
        """One objective per student (joint methods)."""
        raise NotImplementedError


def build_method(name: str, params: dict | None = None) -> OnlineMethod:
    """An online method from its registered name and keyword parameters."""
    from ...registry import build

    return build(methods, name, params)


__all__ = ["OnlineMethod", "build_method", "methods"]
