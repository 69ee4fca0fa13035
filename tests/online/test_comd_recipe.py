"""`transfuse distill` with `task: lm` and `students:` runs CoMD end to end on a tiny random Llama:
students saved with save_pretrained, a report with judge scores per round, --resume to the same
weights; bad recipes are one `error:` line, exit code 2, nothing written."""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "lm"))
from lm_helpers import make_llama, make_tokenizer  # noqa: E402

from transfuse.errors import TransfuseError  # noqa: E402


def _recipe(tmp_path, **changes):
    teacher = tmp_path / "teacher"
    if not teacher.exists():
        model = make_llama(layers=3, seed=0, hidden=32)
        with torch.no_grad():  # a confident random teacher (as tests/online/test_comd.py)
            model.lm_head.weight.mul_(8.0)
        model.save_pretrained(teacher)
        make_tokenizer().save_pretrained(teacher)
        make_llama(layers=1, seed=5, hidden=32).save_pretrained(tmp_path / "student")  # a random student folder
        make_tokenizer().save_pretrained(tmp_path / "student")
        rows = [{"messages": [{"role": "user", "content": " ".join(f"w{(i + j) % 32}" for j in range(3))},
                              {"role": "assistant", "content": " ".join(f"w{(2 * i + j) % 32}" for j in range(4))}]}
                for i in range(12)]
        (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = {
        "task": "lm", "teacher": {"path": str(teacher)}, "students": [{"layers": [2]}, {"path": str(tmp_path / "student")}],
        "method": {"name": "comd", "params": {"rounds": 2, "epochs_per_round": 4, "max_new_tokens": 4, "lr": 0.01}},
        "data": {"source": str(tmp_path / "chat.jsonl"), "seq_len": 32, "held_out": 0.25},
        "prompts": {"count": 12}, "eval": {"samples": 3, "new_tokens": 4}, "output": str(tmp_path / "out"),
    }
    cfg.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # two CLI runs, 16-22 s on the shared machine; already tiny, so the same under TRANSFUSE_CI_SMALL
def test_comd_recipe_end_to_end_and_resume(run_cli, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    proc = run_cli("distill", _recipe(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert "judge_score" in (out / "report" / "report.md").read_text()
    for i in range(2):
        curve = report["curves"][f"student{i}"]
        assert [p["round"] for p in curve] == [0, 1, 2]
        assert curve[-1]["judge_score"] > curve[0]["judge_score"] + 0.05  # nearer the teacher's answers
        assert all(p["held_out_ppl"] > 1 and p["teacher_nll"] > 0 for p in curve)
        model = AutoModelForCausalLM.from_pretrained(out / f"student{i}")  # save_pretrained folder
        assert model.config.num_hidden_layers == 1
        final = load_file(out / "rounds" / "round2" / f"student{i}.safetensors")
        assert torch.equal(model.state_dict()["lm_head.weight"], final["lm_head.weight"])
    again = run_cli("distill", tmp_path / "recipe.yaml")
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    # an interrupted run (round 2 of student 1 not saved): --resume redoes that round alone, to the same weights
    want = load_file(out / "rounds" / "round2" / "student1.safetensors")
    (out / "run_config.json").unlink()
    (out / "rounds" / "round2" / "student1.safetensors").unlink()
    proc = run_cli("distill", tmp_path / "recipe.yaml", "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = load_file(out / "rounds" / "round2" / "student1.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert (out / "run_config.json").exists()


def test_shipped_online_comd_recipe_validates():
    from transfuse.config import load_config
    from transfuse.recipes.distill import resolve_recipe
    from transfuse.recipes.online_lm import OnlineLMConfig, check_recipe

    cfg = load_config(OnlineLMConfig, resolve_recipe("online_comd"), [])
    assert cfg.teacher.path == "smollm2-135m-instruct" and len(cfg.students) == 2
    assert check_recipe(cfg).kind == "rounds"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"students": [{"name": "cnn"}, {"layers": [0]}]}, "is not an LM student"),
        ({"students": [{"layers": [7]}, {"layers": [0]}]}, "students[0]: student layers [7] must lie in [0, 3)"),
        ({"method": {"name": "comd", "params": {"rounds": 0}}}, "comd needs rounds"),
        ({"method": {"name": "dml"}}, "trains classifiers"),
        ({"data": {"source": "MISSING/chat.jsonl"}}, "MISSING"),
        ({"data": {"source": "EMPTY"}}, "no text found"),
    ],
)
def test_bad_comd_recipes_fail_before_writing(tmp_path, changes, message):
    from transfuse.config import load_config
    from transfuse.recipes.online_lm import OnlineLMConfig, run

    if changes.get("data", {}).get("source") == "EMPTY":
        (tmp_path / "empty.jsonl").write_text("")
        changes = {"data": {"source": str(tmp_path / "empty.jsonl"), "seq_len": 32}}
    elif "data" in changes:
        changes = {"data": {"source": str(tmp_path / changes["data"]["source"])}}
    path = _recipe(tmp_path, **changes)
    with pytest.raises(TransfuseError) as err:
        run(load_config(OnlineLMConfig, path, []))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_bad_comd_recipe_is_one_line_exit_2(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path), "method.params.rounds=0")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
