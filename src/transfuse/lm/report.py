"""What a finished LM distillation leaves next to the weights: greedy generation samples, report.md
and the model card (README.md, Hugging Face's card layout: YAML metadata, then markdown).

The card names the teacher (path and weight fingerprint), the objective and its parameters, the
data (source and fingerprint of the tokenised training rows) and the metrics, so a reader of the
saved folder alone can tell how it was made (as TRL's and mergekit's cards do).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import torch
from jinja2 import Environment
from torch import nn


@torch.no_grad()
def generation_samples(models: Dict[str, nn.Module], tokenizer, prompts: List[List[int]], *, max_new_tokens: int,
                       pad_token_id: int, eos_token_id=None) -> List[Dict[str, str]]:
    """Greedy continuations (transformers ``generate``) of each prompt by each model: [{"prompt", name: text}]."""
    rows = [{"prompt": tokenizer.decode(p, skip_special_tokens=False)} for p in prompts]
    for name, model in models.items():
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        for row, p in zip(rows, prompts):
            ids = torch.tensor([p], device=dev)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad_token_id, eos_token_id=eos_token_id)  # (1, P + new)
            row[name] = tokenizer.decode(out[0, len(p):], skip_special_tokens=True)
        model.train(was)
    return rows


_ENV = Environment(autoescape=False, keep_trailing_newline=True)
_ENV.filters["num"] = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
_ENV.filters["cell"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")

_METRICS = """| metric | value |
|---|---|
{% for k, v in metrics.items() if v is number %}| {{ k }} | {{ v | num }} |
{% endfor %}"""

_REPORT = _ENV.from_string("""# LM distillation report

Teacher `{{ teacher }}` -> student ({{ student }}), objective `{{ objective }}` {{ params }}, {{ steps }} steps.

## Held-out metrics (after training)

""" + _METRICS + """
{% if evals %}
## Evaluations during training (`eval.every`)

| step | held-out perplexity | teacher NLL |
|---|---|---|
{% for e in evals %}| {{ e.step }} | {{ e.held_out_ppl | num }} | {{ e.teacher_nll | num }} |
{% endfor %}{% endif %}
{% if samples %}
## Generation samples (greedy, held-out prompts)

| prompt | student | teacher |
|---|---|---|
{% for s in samples %}| {{ s.prompt | cell }} | {{ s.student | cell }} | {{ s.teacher | cell }} |
{% endfor %}{% endif %}""")

_CARD = _ENV.from_string("""---
library_name: transformers
pipeline_tag: text-generation
tags:
- transfuse
- knowledge-distillation
---

# {{ name }}

A causal language model distilled with transfuse (`transfuse distill`, task `lm`).

- **Teacher**: `{{ teacher }}` (weights fingerprint `{{ teacher_fp }}`)
- **Student**: {{ student }}
- **Objective**: `{{ objective }}` {{ params }}{% if cache %}, teacher signal from a top-{{ cache.top_k }} cache ({{ cache.cache_format }}){% else %}, live teacher{% endif %}
- **Data**: `{{ data_source }}`, {{ rows }} training rows of at most {{ seq_len }} tokens, {{ tokens }} counted tokens
  (loss on {{ loss_on }} tokens, system prompt: {{ system_prompt }}); data fingerprint `{{ data_fp }}`
- **Training**: {{ steps }} steps, lr {{ lr }}, schedule {{ schedule }}, batch {{ batch_size }}, seed {{ seed }},
  mixed precision {{ mixed_precision }}

## Metrics (held-out data)

""" + _METRICS)


def _params(params: Dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True) if params else ""


def report_markdown(*, teacher: str, student: str, objective: str, params: Dict[str, Any], metrics: Dict[str, Any],
                    samples: List[Dict[str, str]]) -> str:
    return _REPORT.render(teacher=teacher, student=student, objective=objective, params=_params(params),
                          steps=metrics.get("steps"), metrics=metrics, evals=metrics.get("eval_history", []), samples=samples)


def model_card(cfg, *, name: str, teacher_fp: str, data_fp: str, rows: int, tokens: int, metrics: Dict[str, Any]) -> str:
    """README.md of the saved student, from the run's config (an ``LMConfig``) and its metrics."""
    student = f"`{cfg.student.path}`" if cfg.student.path else f"{cfg.student.layers} of the teacher's layers"
    return _CARD.render(
        name=name, teacher=cfg.teacher.path if cfg.teacher.ensemble is None else [m.path for m in cfg.teacher.ensemble],
        teacher_fp=teacher_fp, student=student, objective=cfg.objective.name, params=_params(cfg.objective.params),
        cache=cfg.teacher if cfg.teacher.cache else None, data_source=cfg.data.source, rows=rows, tokens=tokens,
        seq_len=cfg.data.seq_len, loss_on=cfg.data.loss_on, system_prompt=cfg.data.system_prompt, data_fp=data_fp,
        steps=metrics.get("steps"), lr=cfg.train.lr, schedule=cfg.train.schedule, batch_size=cfg.data.batch_size,
        seed=cfg.train.seed, mixed_precision=cfg.train.mixed_precision, metrics=metrics,
    )
