import pytest
import torch

from transfuse.data import build_data
from transfuse.data._text import tokenize_for
from transfuse.distill.api import distill
from transfuse.distill.loop import make_loader
from transfuse.models import build_model
from transfuse.models.hf_text import tokenizer_of


def test_python_api_gives_each_model_its_own_ids_and_mask(toy_csv, teacher_dir, other_tok_dir):
    student = build_model("hf_text", {"from_teacher": str(teacher_dir), "num_layers": 1}, in_shape=(12,), num_classes=3)
    teacher = build_model("hf_text", {"path": str(other_tok_dir)}, in_shape=(12,), num_classes=3)
    data = tokenize_for(build_data("text_table", {"path": str(toy_csv), "max_length": 12}), student, teacher)
    seen = {}

    def spy(name):
        def hook(_m, args, kwargs):
            seen.setdefault(name, (args[0].clone(), kwargs.get("attention_mask")))
        return hook

    student.register_forward_pre_hook(spy("student"), with_kwargs=True, prepend=True)
    teacher.register_forward_pre_hook(spy("teacher"), with_kwargs=True, prepend=True)
    loader = make_loader(data.train, batch_size=8, seed=0, shuffle=False)
    distill(student, teacher, "kd", loader, max_steps=2, progress=False)
    first = data.train.__getitems__(list(range(8)))
    ids, mask = seen["teacher"]
    assert torch.equal(ids, first["teacher_inputs"]) and torch.equal(mask, first["teacher_attention_mask"])
    ids, mask = seen["student"]
    assert torch.equal(ids, first["inputs"]) and torch.equal(mask, first["attention_mask"])


@pytest.mark.slow
def test_recipe_end_to_end_saves_a_pretrained_student(toy_csv, teacher_dir, other_tok_dir, tmp_path):
    from transfuse.recipes.distill import DistillConfig, run

    def config(cache: bool, out: str) -> DistillConfig:
        return DistillConfig.model_validate({
            "student": {"name": "hf_text", "params": {"from_teacher": str(teacher_dir), "num_layers": 2}},
            "teacher": {"name": "hf_text", "params": {"path": str(other_tok_dir)}, "cache": cache,
                        "cache_dir": str(tmp_path / "cache")},
            "objective": {"name": "kd"},
            "data": {"name": "text_table", "params": {"path": str(toy_csv), "max_length": 12, "labelled": 9}, "batch_size": 8},
            "train": {"max_steps": 6, "progress": False}, "eval": {"latency": False}, "output": str(tmp_path / out),
        })

    live = run(config(False, "live"))
    cached = run(config(True, "cached"))
    assert live["agreement"] == pytest.approx(cached["agreement"], abs=1e-6)  # the cache saw the same ids and masks
    assert live["accuracy"] == pytest.approx(cached["accuracy"], abs=1e-6)
    saved = build_model("hf_text", {"path": str(tmp_path / "live" / "model")}, in_shape=(12,), num_classes=3).eval()
    again = build_model("hf_text", {"from_teacher": str(teacher_dir), "num_layers": 2}, in_shape=(12,), num_classes=3)
    from safetensors.torch import load_file

    again.load_state_dict(load_file(str(tmp_path / "live" / "student.safetensors")))
    ids = tokenizer_of(saved)(["the dog and a tree"], padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(saved(ids).logits, again.eval()(ids).logits, atol=1e-6)
    assert saved.config.num_hidden_layers == 2


def test_text_data_needs_a_text_student(toy_csv, tmp_path):
    from transfuse.errors import TransfuseError
    from transfuse.recipes.distill import DistillConfig, build_pieces

    cfg = DistillConfig.model_validate({
        "student": {"name": "mlp"}, "objective": {"name": "ce"},
        "data": {"name": "text_table", "params": {"path": str(toy_csv)}}, "output": str(tmp_path / "o"),
    })
    with pytest.raises(TransfuseError, match="is text, but the student has no tokenizer"):
        build_pieces(cfg)
