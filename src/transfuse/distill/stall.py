"""A guard against silent no-learning: the training loss has not moved, or the gradients are ~0.

A run can exit 0 having learnt nothing (issue 14: mixkd on two classes, whose std-normalised
logits keep only their sign, trained at a gradient norm of ~1e-6 and ended at chance). The
guard watches the first ``after`` optimizer steps of a run (from where it resumed) and says so
once, in the log and the report, instead of failing the run: a user may mean it (a frozen
model), and a warning costs nothing when it is wrong.

- loss not moved: the mean loss of the window's last fifth differs from its first fifth's by
  less than ``rel_tol`` of it and by less than twice the standard error of that difference
  (batches differ, so a flat loss still wobbles);
- gradients ~0: the median of the sampled gradient norms (about ten per window) is below ``grad_tol``
  times the parameters' norm (at least 1). A learning MLP's ratio is ~1e-1; mixkd on two classes ~1e-6
  (a single step may be larger: rounding where two logits are nearly equal).
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, List, Optional, Union


class StallGuard:
    """Watches losses and sampled gradient norms of steps ``start+1 .. start+after``; ``check`` gives one warning or None."""

    def __init__(self, *, after: int = 100, start: int = 0, total_steps: int, rel_tol: float = 1e-3, grad_tol: float = 1e-5) -> None:
        self.start, self.rel_tol, self.grad_tol = start, rel_tol, grad_tol
        self.end = min(start + after, total_steps)  # the step at which the window is judged
        self.every = max(1, (self.end - start) // 10)
        self.losses: List[Union[float, Callable[[], float]]] = []
        self.grad_ratios: List[float] = []
        self.done = self.end - start < 20  # too few steps to judge
        self.warning: Optional[str] = None

    def wants_grad_norm(self, step: int) -> bool:
        """Whether the step after ``step`` steps done should measure its gradient norm."""
        return not self.done and (step - self.start) % self.every == 0

    def observe(self, step: int, loss: Union[float, Callable[[], float]], grad_norm: Optional[float] = None,
                param_norm: Optional[float] = None) -> None:
        """Record step ``step`` (steps done, counting it): its loss (or a function giving it, called only
        when the window is judged, so a step need not read its loss) and, when measured, its gradient norm."""
        if self.done:
            return
        self.losses.append(loss)
        if grad_norm is not None:
            self.grad_ratios.append(grad_norm / max(param_norm or 0.0, 1.0))

    def check(self, step: int) -> Optional[str]:
        """At the window's last step: the warning (once), else None."""
        if self.done or step < self.end:
            return None
        self.done = True
        k = max(2, len(self.losses) // 5)
        first, last = ([v() if callable(v) else v for v in part] for part in (self.losses[:k], self.losses[-k:]))
        self.losses = []
        m1, m2 = statistics.fmean(first), statistics.fmean(last)
        se = math.sqrt(statistics.variance(first) / k + statistics.variance(last) / k)
        n = step - self.start
        if self.grad_ratios and statistics.median(self.grad_ratios) < self.grad_tol:
            self.warning = (
                f"the gradients are ~0 over the first {n} steps (median norm {statistics.median(self.grad_ratios):.1e} of the "
                "weights' norm): the student is not learning; check the objective (e.g. mixkd needs 3+ classes), "
                "the learning rate and frozen parameters"
            )
        elif abs(m2 - m1) <= max(self.rel_tol * abs(m1), 2 * se):
            self.warning = (
                f"the training loss has not moved over the first {n} steps ({m1:.4g} -> {m2:.4g}): the student may "
                "not be learning; check the learning rate (optim.lr), the objective and the data's labels"
            )
        return self.warning
