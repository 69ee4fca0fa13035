"""MTARD: multi-teacher adversarial robustness distillation (Zhao et al. 2022; balanced B-MTARD, TPAMI 2024)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import TransfuseError
from ..signals import Batch, Outputs, as_outputs
from . import Objective, objectives
from ._adversarial import AttackBudget
from ._functional import kl_from_logprobs, log_softmax


def entropy(logits: Tensor, temperature: float) -> Tensor:
    """Mean entropy of softmax(logits / T) over the batch. (B, C) -> scalar."""
    logp = log_softmax(logits, temperature)
    return -(logp.exp() * logp).sum(-1).mean()


def balance_temperatures(t_adv: float, t_nat: float, h_adv: float, h_nat: float, *, rate: float, low: float, high: float) -> Tuple[float, float]:
    """B-MTARD's entropy balance: the teacher whose softened outputs have more entropy is sharpened,
    the other softened, by ``rate`` a step: T_k -= rate sign(H_k / H_other - 1), clamped to [low, high]."""
    sign = lambda v: float((v > 0) - (v < 0))  # noqa: E731
    t_adv = min(max(t_adv - rate * sign(h_adv / h_nat - 1), low), high)
    t_nat = min(max(t_nat - rate * sign(h_nat / h_adv - 1), low), high)
    return t_adv, t_nat


def balance_weights(w: Tensor, losses: Tensor, initial: Tensor, *, rate: float) -> Tensor:
    """B-MTARD's loss weights: each moves by ``rate`` towards its share of the normalised losses
    (L_k / L_k(0)) / sum_j (L_j / L_j(0)), then the weights are clipped at 0 and renormalised.
    w, losses, initial: (K,) -> (K,)."""
    relative = losses / initial  # (K,): how far each loss still is from where it started
    w = w - rate * (w - relative / relative.sum())
    w = w.clamp_min(0.0)
    return w / w.sum().clamp_min(1e-12)


@objectives.register("mtard")
class MultiTeacherAdversarialDistillation(Objective):
    """Zhao et al. 2022 (ECCV) / 2024 (TPAMI), Enhanced Accuracy and Robustness via Multi-Teacher Adversarial
    Distillation, as the official code (zhaoshiji123/MTARD-extension) does it:

    x_adv = PGD-``steps`` against the student (CE to the labels, student in eval mode);
    L = w_adv KL(softmax(T_adv(x_adv) / tau_adv) || s(x_adv)) + w_nat KL(softmax(T_nat(x) / tau_nat) || s(x)),
    the student's logits unscaled; after each batch's losses are known, the temperatures follow
    :func:`balance_temperatures` (rate 0.001, tau in [1, 10], both start at 1) and the weights
    :func:`balance_weights` (rate 0.025, start 1/2 each) before the loss is formed, as in the code.

    The two teachers are ``teacher.ensemble`` in the recipe: the clean (naturally trained) one first,
    the adversarially robust one second (``objective: adv_train`` trains it), each live
    (``cache: false``); the fusion rule is not used. Differences from the official code: the KL is
    summed over classes (the code averages over classes too, a constant 1/C), the attack starts from
    a uniform point in the ball (the code: 0.001 N(0, 1)), and the rates do not decay with the
    learning rate. ``eps`` is a fraction of the input range, as for ``adv_train``. Temperatures,
    weights and the first losses are buffers, so checkpoints carry them; they update once per
    micro-batch.
    """

    needs_teacher = False  # the objective runs its two teachers itself: clean on x, robust on x_adv
    #: the members of ``teacher.ensemble`` it reads (contract tests bind it to an ensemble of this many)
    teacher_members = (2, 2)  # (fewest, most)
    changes_inputs = True

    def __init__(self, *, eps: float = 0.1, steps: int = 10, step_size: Optional[float] = None, weight_rate: float = 0.025,
                 temperature_rate: float = 0.001, min_temperature: float = 1.0, max_temperature: float = 10.0) -> None:
        super().__init__()
        if not 0 < min_temperature <= max_temperature:
            raise ValueError("mtard needs 0 < min_temperature <= max_temperature")
        if weight_rate < 0 or temperature_rate < 0:
            raise ValueError("mtard weight_rate and temperature_rate must be >= 0")
        self.budget = AttackBudget(eps=eps, steps=steps, step_size=step_size, what="mtard")
        self.weight_rate, self.temperature_rate = weight_rate, temperature_rate
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.register_buffer("weights", torch.tensor([0.5, 0.5]))  # (w_adv, w_nat)
        self.register_buffer("temperatures", torch.tensor([min_temperature, min_temperature]))  # (tau_adv, tau_nat)
        self.register_buffer("initial_losses", torch.zeros(2))  # (L_adv(0), L_nat(0)); 0 = not seen yet
        self._models: list = []

    def set_input_range(self, bounds: Tuple[float, float]) -> None:
        self.budget.set_input_range(bounds)

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        members = getattr(teacher, "members", None)
        if members is None or len(members) != 2:
            raise TransfuseError(
                "mtard needs two live teachers: teacher.ensemble = [clean teacher, adversarially robust teacher], "
                "each with cache: false (train the robust one with objective: adv_train)"
            )
        self._models = [student, members[0], members[1]]

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        """The batch doubled: clean rows then their PGD examples (2B rows), so one student forward serves both terms."""
        if not self._models:
            raise ValueError("mtard attacks the student: call objective.bind(student, teacher=EnsembleModel([clean, robust]))")
        x_adv = self.budget.attack(self._models[0], batch.inputs, batch.labels, generator)  # (B, ...)
        double = lambda v: None if v is None else torch.cat([v, v], 0)  # noqa: E731
        return Batch(inputs=torch.cat([batch.inputs, x_adv], 0), labels=double(batch.labels), index=double(batch.index),
                     mask=None, extra=dict(batch.extra))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        _, clean_teacher, robust_teacher = self._models
        half = len(batch.inputs) // 2
        with torch.no_grad():
            t_nat = as_outputs(clean_teacher(batch.inputs[:half])).logits.float()  # (B, C)
            t_adv = as_outputs(robust_teacher(batch.inputs[half:])).logits.float()  # (B, C)
        return self.loss_from_logits(student.logits[:half], student.logits[half:], t_nat, t_adv, update=torch.is_grad_enabled())

    def loss_from_logits(self, s_nat: Tensor, s_adv: Tensor, t_nat: Tensor, t_adv: Tensor, *, update: bool = True) -> Tensor:
        """The weighted two-teacher loss from the four (B, C) logits; ``update`` moves temperatures and weights first."""
        tau_adv, tau_nat = (float(v) for v in self.temperatures)
        loss_adv = kl_from_logprobs(log_softmax(t_adv, tau_adv), log_softmax(s_adv)).mean()
        loss_nat = kl_from_logprobs(log_softmax(t_nat, tau_nat), log_softmax(s_nat)).mean()
        if update:
            h_adv, h_nat = float(entropy(t_adv.detach(), tau_adv)), float(entropy(t_nat.detach(), tau_nat))
            new = balance_temperatures(tau_adv, tau_nat, h_adv, h_nat, rate=self.temperature_rate,
                                       low=self.min_temperature, high=self.max_temperature)
            self.temperatures.copy_(torch.tensor(new))
            losses = torch.tensor([float(loss_adv.detach()), float(loss_nat.detach())], device=self.weights.device)
            if bool((self.initial_losses == 0).all()):
                self.initial_losses.copy_(losses.clamp_min(1e-12))
            self.weights.copy_(balance_weights(self.weights, losses, self.initial_losses, rate=self.weight_rate))
        w_adv, w_nat = self.weights.to(s_adv.device)
        return w_adv * loss_adv + w_nat * loss_nat
