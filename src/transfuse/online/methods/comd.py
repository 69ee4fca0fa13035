"""CoMD: competitive distillation of LLM students with a shared judge/teacher (Li et al. 2023,
"CoMD: Competitive Multi-modal Distillation"), at small scale and text only.

What was followed (METHODS.md section C and the abstract; no official code exists): training
goes in rounds; in each round (1) the teacher answers every prompt of a student's pool, (2) the
student is tuned on the teacher's answers (sequence-level KD: cross-entropy on the teacher's
response tokens, :func:`transfuse.distill.loop.train` with ``ce``), (3) a judge scores the
student's own answer against the teacher's on each prompt, and (4) the prompts where the student
loses are added to its training set of the next round (``hard_repeats`` extra copies each), so
later rounds spend more of their budget where the student is still behind (the paper's "new data
where the student loses"; here the losing prompts themselves, not new generated instructions).
Training on the losing prompts alone made a student forget the ones it had won (measured on the
tiny test model), hence the whole prompt set stays in every round. Several students compete in the same rounds, each with its own
pool, against the same teacher and judge.

The judge here is the teacher's likelihood: the score of an answer is its mean token
log-probability under the judge given the prompt (the paper's judge is an LLM asked which answer
is better; a likelihood judge needs no prompt template and runs on a tiny model). A student wins
a prompt when its answer's score is at least the teacher answer's minus ``margin``. Reported per
round and student: its mean judge score on all prompts and its win rate, which rise as it learns.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ...errors import TransfuseError
from . import OnlineMethod, methods


@dataclass
class CoMDResult:
    students: List[nn.Module]
    history: List[Dict[str, Any]] = field(default_factory=list)  # per round and student: judge score, win rate, pool size


@torch.no_grad()
def judge_scores(judge: nn.Module, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], *,
                 pad_token_id: int, seq_len: int) -> Tensor:
    """Mean log-probability of each answer's tokens under ``judge`` given its prompt: (N,)."""
    from ...lm.generate import join_rows

    rows = join_rows(prompts, answers, seq_len=seq_len, pad_token_id=pad_token_id)
    was_training = judge.training
    judge.eval()
    logits = judge(input_ids=rows.inputs, attention_mask=rows.attention_mask).logits.float()  # (N, T, V)
    judge.train(was_training)
    logp = torch.log_softmax(logits, -1).gather(-1, rows.labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (N, T)
    mask = rows.mask.float()
    return (logp * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


@methods.register("comd")
class CoMD(OnlineMethod):
    """CoMD (Li et al. 2023): LM students in competitive rounds: tune on teacher answers, judge vs teacher, retrain where they lose."""

    kind = "rounds"
    min_students = 1

    def __init__(self, *, rounds: int = 3, epochs_per_round: int = 2, max_new_tokens: int = 8, margin: float = 0.0,
                 hard_repeats: int = 1, lr: float = 3e-3, batch_size: int = 8) -> None:
        if rounds < 1 or epochs_per_round < 1 or max_new_tokens < 1 or batch_size < 1 or hard_repeats < 0:
            raise ValueError("comd needs rounds, epochs_per_round, max_new_tokens and batch_size >= 1 and hard_repeats >= 0")
        self.rounds, self.epochs, self.max_new_tokens = rounds, epochs_per_round, max_new_tokens
        self.margin, self.hard_repeats, self.lr, self.batch_size = margin, hard_repeats, lr, batch_size

    def run(self, students: Sequence[nn.Module], teacher: nn.Module, prompts: Sequence[Sequence[int]], *,
            judge: Optional[nn.Module] = None, eos_token_id: Optional[int] = None, pad_token_id: int = 0, seed: int = 0,
            output_dir: Optional[str | Path] = None, resume: bool = False) -> CoMDResult:
        """Competitive rounds for Hugging Face causal-LM ``students`` (sharing ``teacher``'s vocabulary) on token-id ``prompts``.

        judge: the model that scores answers (default the teacher). output_dir: each round's
        students (``round<r>/student<i>.safetensors``) and each training run's checkpoints (deleted once its round is saved); with
        ``resume``, finished rounds are loaded and the unfinished run continues from its checkpoint.
        """
        from ...distill.loop import make_loader, train
        from ...lm.generate import join_rows, sample_continuations
        from ...lm.models import CausalLM
        from ...objectives import build_objective

        self.check(len(students))
        if not prompts:
            raise TransfuseError("comd needs at least one prompt")
        judge = teacher if judge is None else judge
        vocab = teacher.get_output_embeddings().weight.shape[0]
        for i, s in enumerate(students):
            if s.get_output_embeddings().weight.shape[0] != vocab:
                raise TransfuseError(f"comd student {i} has another vocabulary size than the teacher ({vocab}); students must share the teacher's tokenizer")
        prompts = [list(p) for p in prompts]
        seq_len = max(len(p) for p in prompts) + self.max_new_tokens
        gen = dict(max_new_tokens=self.max_new_tokens, greedy=True, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        teacher_answers = sample_continuations(teacher, prompts, **gen)  # greedy: the same every round
        teacher_scores = judge_scores(judge, prompts, teacher_answers, pad_token_id=pad_token_id, seq_len=seq_len)  # (N,)
        students = list(students)
        everything = list(range(len(prompts)))
        pools = [everything for _ in students]  # round 1: every prompt once
        history: List[Dict[str, Any]] = []
        out = Path(output_dir) if output_dir is not None else None

        def standing(r: int, i: int) -> Dict[str, Any]:
            answers = sample_continuations(students[i], prompts, **gen)
            scores = judge_scores(judge, prompts, answers, pad_token_id=pad_token_id, seq_len=seq_len)
            wins = scores >= teacher_scores - self.margin  # (N,)
            return {"round": r, "student": i, "judge_score": float(scores.mean()), "teacher_score": float(teacher_scores.mean()),
                    "win_rate": float(wins.float().mean()), "losing": [int(j) for j in torch.nonzero(~wins).squeeze(-1).tolist()]}

        for i in range(len(students)):
            history.append({**standing(0, i), "pool": len(prompts)})
        for r in range(1, self.rounds + 1):
            for i, student in enumerate(students):
                pool = pools[i]
                done = out / f"round{r}" / f"student{i}.safetensors" if out is not None else None
                if done is not None and resume and done.exists():
                    student.load_state_dict(load_file(str(done)))
                elif pool:
                    rows = join_rows([prompts[j] for j in pool], [teacher_answers[j] for j in pool], seq_len=seq_len,
                                     pad_token_id=pad_token_id)
                    folder = out / f"round{r}" / f"student{i}" if out is not None else None
                    again = resume and folder is not None and (folder / "checkpoints" / "latest").exists()
                    train(student=CausalLM(student), teacher=None, objective=build_objective("ce"),
                          train_loader=make_loader(rows, batch_size=min(self.batch_size, len(pool)), seed=seed + r, drop_last=False),
                          epochs=self.epochs, lr=self.lr, schedule="constant", seed=seed + 1000 * r + i,
                          output_dir=folder, resume=again, progress=False)
                    if done is not None:
                        tmp = done.with_name(f".{done.name}.tmp")
                        save_file({k: v.detach().cpu().clone() for k, v in student.state_dict().items()}, str(tmp))  # clone: tied weights
                        os.replace(tmp, done)
                        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the round is saved: resume loads `done`
                record = standing(r, i)
                pools[i] = everything + record["losing"] * self.hard_repeats  # more of where this student still loses
                history.append({**record, "pool": len(pool)})
        for s in students:
            s.eval()
        return CoMDResult(students=students, history=history)


def run_comd(students: Sequence[nn.Module], teacher: nn.Module, prompts: Sequence[Sequence[int]], **options: Any) -> CoMDResult:
    """Python API: ``comd`` with its parameters (rounds, epochs_per_round, max_new_tokens, margin, lr,
    batch_size) and :meth:`CoMD.run`'s options (judge, eos_token_id, pad_token_id, seed, output_dir, resume)."""
    import inspect

    names = set(inspect.signature(CoMD.__init__).parameters) - {"self"}
    method = CoMD(**{k: v for k, v in options.items() if k in names})
    return method.run(students, teacher, prompts, **{k: v for k, v in options.items() if k not in names})
