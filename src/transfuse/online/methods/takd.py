"""TAKD: Teacher Assistant Knowledge Distillation (Mirzadeh et al., AAAI 2020, "Improved Knowledge
Distillation via Teacher Assistant").

Followed from the paper: a chain teacher -> assistant(s) -> student of decreasing size, trained as
sequential offline stages; each stage is Hinton KD (``kd``: (1 - alpha) CE + alpha T^2 KL) from
the frozen previous model of the chain. The students are listed from the largest (the teacher;
trained with plain CE first unless it comes with weights) to the smallest. Each stage is one run
of :func:`transfuse.distill.loop.train` with its own checkpoints in ``stage<k>/``; a finished
stage is kept (``stage<k>/stage.safetensors``) and skipped on ``--resume``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from safetensors.torch import load_file, save_file
from torch import nn

from . import OnlineMethod, methods


@methods.register("takd")
class TAKD(OnlineMethod):
    """Teacher Assistant KD (Mirzadeh et al. 2020): teacher -> assistant -> student, sequential offline kd stages."""

    kind = "staged"

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.9, train_teacher: Optional[bool] = None) -> None:
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError("takd needs temperature > 0 and alpha in [0, 1]")
        self.temperature, self.alpha = temperature, alpha
        self.train_teacher = train_teacher  # None: train the first model with CE unless it was given weights

    def run(self, students: Sequence[nn.Module], loader, *, lrs: Sequence[float], output_dir: Optional[Path] = None,
            resume: bool = False, evaluate: Optional[Callable[[List[nn.Module]], Dict[str, Any]]] = None,
            teacher_has_weights: bool = False, **loop: Any):
        """Train the chain stage by stage; returns (the trained models, learning curves per stage)."""
        from ...distill.loop import train
        from ...objectives import build_objective
        from ...teachers import FrozenTeacher

        train_teacher = (not teacher_has_weights) if self.train_teacher is None else self.train_teacher
        models, curves = list(students), {}
        for k, model in enumerate(models):
            if k == 0 and not train_teacher:
                continue
            folder = Path(output_dir) / f"stage{k}" if output_dir is not None else None
            done = folder / "stage.safetensors" if folder is not None else None
            if done is not None and done.exists() and resume:
                model.load_state_dict(load_file(str(done)))
                continue
            teacher = FrozenTeacher(models[k - 1]) if k else None
            objective = build_objective("kd", {"temperature": self.temperature, "alpha": self.alpha}) if k else build_objective("ce")
            again = resume and folder is not None and (folder / "checkpoints" / "latest").exists()
            result = train(student=model, teacher=teacher, objective=objective, train_loader=loader, lr=float(lrs[k]),
                           output_dir=folder, resume=again, progress=False,
                           evaluate=(lambda m: evaluate([m])) if evaluate is not None else None, **loop)
            models[k] = result.student
            curves[f"stage{k}"] = result.history
            if done is not None:
                tmp = done.with_name(".stage.safetensors.tmp")
                save_file({n: t.detach().contiguous().cpu() for n, t in result.student.state_dict().items()}, str(tmp))
                os.replace(tmp, done)
        for model in models:  # FrozenTeacher froze each teacher of the chain; hand back trainable models
            for p in model.parameters():
                p.requires_grad_(True)
        return models, curves
