"""With the loop: the gradient does not depend on how a batch is split into micro-batches; TAID's t is
checkpointed; the recipe runs end to end on a tiny model folder with the top-k cache and the chunked loss."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from transfuse.distill.loop import train
from transfuse.lm.chunked import ChunkedLMObjective
from transfuse.lm.data import TokenDataset
from transfuse.lm.models import CausalLM, LMTeacher
from transfuse.objectives import build_objective

from lm_helpers import make_llama


def _data():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(3, 40, (4, 6), generator=g)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, :5] = True  # very different counted-token counts per sample
    mask[1, 2:3] = True
    mask[2, 1:4] = True
    mask[3, :2] = True
    labels = torch.where(mask, torch.roll(inputs, -1, 1), torch.tensor(-100))
    return TokenDataset(inputs, labels, mask, torch.ones_like(inputs))


def _one_step(batch_size, grad_accum, chunked):
    student = make_llama(seed=0)
    teacher = make_llama(seed=1, layers=3)
    obj = build_objective("forward_kl")
    if chunked:
        obj = ChunkedLMObjective(obj, teacher_head=teacher.get_output_embeddings(), chunk_size=3)
    loader = DataLoader(_data(), batch_size=batch_size, shuffle=False, collate_fn=lambda x: x)
    result = train(student=CausalLM(student, hidden=chunked), teacher=LMTeacher(teacher, hidden=chunked), objective=obj,
                   train_loader=loader, max_steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_accum=grad_accum,
                   progress=False, cpu=True)
    return {k: v.detach().clone() for k, v in result.student.state_dict().items()}


@pytest.mark.parametrize("chunked", [False, True])
def test_gradient_independent_of_micro_batch_split(chunked):
    whole = _one_step(4, 1, chunked)
    for bs, acc in [(2, 2), (1, 4)]:
        split = _one_step(bs, acc, chunked)
        for k in whole:
            assert torch.allclose(whole[k], split[k], atol=1e-5), (bs, acc, k)


def test_taid_t_is_checkpointed(tmp_path):
    from transfuse.distill import checkpoint as ckpt

    student, teacher = make_llama(seed=0), make_llama(seed=1)
    loader = DataLoader(_data(), batch_size=1, shuffle=False, collate_fn=lambda x: x)
    obj = build_objective("taid", {"adaptive": False})
    train(student=CausalLM(student), teacher=LMTeacher(teacher), objective=obj, train_loader=loader, max_steps=4,
          output_dir=tmp_path, checkpoint_every=1, progress=False, cpu=True)
    assert float(obj.t) == pytest.approx(1.0)
    folder = ckpt.latest_checkpoint(tmp_path / "checkpoints")  # written after step 3 of 4
    state = ckpt.read_checkpoint(folder, ("objective",))["objective"]
    assert float(state["t"]) == pytest.approx(0.4 + 0.6 * 3 / 4)


@pytest.mark.slow
def test_recipe_end_to_end_on_a_tiny_folder(tiny_lm_folder, tmp_path):
    from transfuse.recipes.distill_lm import LMConfig, main

    cfg = LMConfig.model_validate({
        "teacher": {"path": str(tiny_lm_folder), "cache": True, "cache_dir": str(tmp_path / "cache"), "top_k": 8},
        "student": {"layers": 2},
        "data": {"source": str(tmp_path / "text.txt"), "seq_len": 8, "batch_size": 4},
        "objective": {"name": "taid", "chunked": True, "chunk_size": 5},
        "train": {"epochs": 2},
        "eval": {"samples": 4, "new_tokens": 4, "prompt_tokens": 2},
        "output_dir": str(tmp_path / "out"),
    })
    (tmp_path / "text.txt").write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 32}" for j in range(30)) for i in range(12)))
    metrics = main(cfg)
    assert metrics["steps"] > 0 and torch.isfinite(torch.tensor(metrics["held_out_ppl"]))
    assert (tmp_path / "out" / "config.json").exists() and json.loads((tmp_path / "out" / "metrics.json").read_text())
    # a second run reads the finished cache instead of building it
    again = main(cfg)
    assert again["held_out_ppl"] == pytest.approx(metrics["held_out_ppl"], rel=1e-4)
