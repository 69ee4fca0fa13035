"""`transfuse fuse` mode generate through the CLI, on tiny random models the test writes to disk."""
import json

import pytest
import torch

from fusion_helpers import make_tokenizer, sharp_llama
from transfuse.errors import TransfuseError
from transfuse.fusion.generate import fused_generate
from transfuse.fusion.modes import generate as mode
from transfuse.recipes.fuse import load

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models in a subprocess on a shared 2-core machine
PROMPTS = ["w1 w2", "w3", "w4 w5 w6", "w7 w8"]


@pytest.fixture
def workdir(tmp_path):
    """tiny_fuse/{a,b} models, prompts.txt and qa.jsonl, as the shipped fuse_generate recipe expects."""
    tok = make_tokenizer()
    root = tmp_path / "tiny_fuse"
    models = {}
    for name, seed in (("a", 1), ("b", 2)):
        models[name] = sharp_llama(seed)
        models[name].save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    # answers: model a's own greedy continuation for two rows, a wrong one for the other two
    own = fused_generate([models["a"]], "mean", PROMPTS, tokenizer=tok, max_new_tokens=3, do_sample=False)
    answers = [own[0], own[1], "w30 w31", "w32"]
    (root / "qa.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in zip(PROMPTS, answers)))
    return tmp_path, models, tok


@torch.no_grad()
def _nll_by_hand(model, tok, rows):
    total, count = 0.0, 0
    for r in rows:
        p = tok(r["prompt"])["input_ids"]
        a = tok(r["answer"], add_special_tokens=False)["input_ids"]
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0].float(), -1)
        total -= sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a))
        count += len(a)
    return total / count


def test_the_shipped_recipe_runs_through_the_cli_with_eval(workdir, run_cli, monkeypatch):
    cwd, models, tok = workdir
    proc = run_cli("fuse", "fuse_generate", "eval.max_new_tokens=3", "--eval", cwd=cwd, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    out = cwd / "runs" / "fuse_generate"
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and all(r["completion"] for r in rows)
    report = json.loads((out / "report.json").read_text())
    results = {r["model"]: r for r in report["eval"]["results"]}
    assert list(results) == ["fused", "tiny_fuse/a", "tiny_fuse/b"]
    assert results["tiny_fuse/a"]["exact_match"] == 0.5  # its own greedy answers on two rows of four
    labelled = [json.loads(line) for line in (cwd / "tiny_fuse" / "qa.jsonl").read_text().splitlines()]
    assert results["tiny_fuse/a"]["nll"] == pytest.approx(_nll_by_hand(models["a"], tok, labelled), rel=1e-3)
    assert results["fused"]["nll"] != results["tiny_fuse/a"]["nll"]
    assert "| fused |" in (out / "report.md").read_text()
    # finished output is never overwritten silently
    monkeypatch.chdir(cwd)
    with pytest.raises(TransfuseError, match="overwrite=true"):
        mode.run(load("fuse_generate", []))
    assert mode.run(load("fuse_generate", ["overwrite=true"]))["generate"]["prompts"] == 4


@pytest.mark.parametrize("overrides,message", [
    (["models=[tiny_fuse/a, tiny_fuse/missing]"], "model folder 'tiny_fuse/missing' does not exist"),
    (["rule=prodcut"], "prodcut"),
    (["rule=proxy"], "base, expert, anti-expert"),
    (["prompts=tiny_fuse/empty.txt"], "is empty"),
    (["generation.max_new_token=3"], "Did you mean: max_new_tokens"),
    (["weights=[1, 2]"], "either per model"),
])
def test_bad_input_is_one_line_before_any_model_loads(workdir, monkeypatch, overrides, message):
    cwd, _, _ = workdir
    (cwd / "tiny_fuse" / "empty.txt").write_text("\n")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(mode, "FusedModel", lambda *a, **k: pytest.fail("models were loaded before the checks"))
    with pytest.raises(TransfuseError, match=message):
        mode.run(load("fuse_generate", overrides))


def test_cli_bad_input_exits_2_without_traceback(workdir, run_cli):
    cwd, _, _ = workdir
    proc = run_cli("fuse", "fuse_generate", "rule=proxy", cwd=cwd, env=ONE_THREAD)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
