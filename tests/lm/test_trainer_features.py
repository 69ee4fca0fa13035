"""Issue 15, the trainer around LM distillation: logging rows (metrics.jsonl, TensorBoard), evaluation
every N steps and before training, the report and model card, chat-template control (system prompt,
template file, loss on all tokens), bf16 autocast and gradient checkpointing, two processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from process_helpers import free_port
import torch
from safetensors.torch import load_file

from lm_helpers import TEMPLATE, make_llama, make_tokenizer

HERE = Path(__file__).parent
# a template that adds its own default system prompt when a conversation has none (as SmolLM2's does)
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<s> system : w30 w31 </s> {% endif %}" + TEMPLATE
)


def _chat(n: int = 24):
    return [{"messages": [{"role": "user", "content": " ".join(f"w{(i + j) % 30}" for j in range(3 + i % 3))},
                          {"role": "assistant", "content": " ".join(f"w{(i * 7 + j) % 30}" for j in range(4 + i % 5))}]}
            for i in range(n)]


def _teacher(folder: Path, sharpen: float = 40.0) -> Path:
    """A tiny teacher whose output layer is scaled up, so its distributions are peaked and the KL has signal."""
    model = make_llama(layers=3, seed=1)
    model.lm_head.weight.data.mul_(sharpen)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _cfg(tmp_path, **extra):
    from transfuse.recipes.distill_lm import LMConfig

    data = tmp_path / "chat.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in _chat()))
    teacher = tmp_path / "teacher"
    if not teacher.exists():
        _teacher(teacher)
    base = {
        "teacher": {"path": str(teacher), "cache": True, "cache_dir": str(tmp_path / "cache"), "top_k": 8},
        "student": {"layers": 2},
        "data": {"source": str(data), "seq_len": 24, "batch_size": 4},
        "train": {"max_steps": 6, "lr": 0.01, "log_every": 2},
        "eval": {"samples": 2, "new_tokens": 3, "prompt_tokens": 2, "generations": 2},
        "output": str(tmp_path / "out"),
    }
    for k, v in extra.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return LMConfig.model_validate(base)


def _rows(path: Path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_jsonl_rows_per_log_every_and_eval_every(tmp_path):
    from transfuse.recipes.distill_lm import main

    metrics = main(_cfg(tmp_path, train={"max_steps": 6, "log_every": 2}, eval={"every": 3}))
    rows = _rows(tmp_path / "out" / "metrics.jsonl")
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6]
    for r in steps:
        assert {"loss", "lr", "tokens_per_s", "kl_to_teacher", "epoch"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["kl_to_teacher"] >= 0
        # forward_kl on the top-k cache: the logged KL is the loss itself (same buckets, same tokens)
        assert r["kl_to_teacher"] == pytest.approx(r["loss"], rel=1e-4, abs=1e-6)
    assert steps[0]["lr"] > steps[-1]["lr"]  # cosine schedule, logged per row
    evals = [r for r in rows if "held_out_ppl" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]  # before training and every 3 steps
    assert [e["step"] for e in metrics["eval_history"]] == [0, 3, 6]
    assert metrics["eval_history"][-1]["held_out_ppl"] == pytest.approx(metrics["held_out_ppl"])
    assert evals[0]["held_out_ppl"] != evals[-1]["held_out_ppl"]  # training changed the student between them


def test_chunked_kl_to_teacher_matches_the_loss(tmp_path):
    from transfuse.recipes.distill_lm import main

    main(_cfg(tmp_path, objective={"chunked": True, "chunk_size": 5}, train={"max_steps": 2, "log_every": 1}))
    for r in (r for r in _rows(tmp_path / "out" / "metrics.jsonl") if "loss" in r):
        assert r["kl_to_teacher"] == pytest.approx(r["loss"], rel=1e-4, abs=1e-6)


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from transfuse.recipes.distill_lm import main

    main(_cfg(tmp_path, train={"max_steps": 2, "log_every": 1}))
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))


def test_report_and_model_card(tmp_path):
    from transfuse.recipes.distill_lm import Prepared, main

    cfg = _cfg(tmp_path)
    metrics = main(cfg)
    out = tmp_path / "out"
    card = (out / "README.md").read_text()
    data_fp = Prepared(cfg, log=lambda *_: None).train_data.fingerprint()
    assert card.startswith("---\n") and "knowledge-distillation" in card
    assert str(tmp_path / "teacher") in card and "forward_kl" in card and data_fp in card
    assert f"{metrics['held_out_ppl']:.4f}" in card and f"{metrics['teacher_nll']:.4f}" in card
    report = (out / "report.md").read_text()
    assert len(metrics["samples"]) == 2 and {"prompt", "student", "teacher"} <= set(metrics["samples"][0])
    assert metrics["samples"][0]["prompt"].replace("|", "\\|") in report
    assert json.loads((out / "metrics.json").read_text())["samples"] == metrics["samples"]


def _decoded(tok, data, i=0):
    return tok.decode(data.inputs[i][data.attention_mask[i].bool()])


def test_system_prompt_none_default_text():
    from transfuse.lm.data import tokenize_records

    tok = make_tokenizer()
    tok.chat_template = DEFAULT_SYSTEM_TEMPLATE
    recs = _chat(2)
    default = _decoded(tok, tokenize_records(recs, tok, seq_len=40))
    none = _decoded(tok, tokenize_records(recs, tok, seq_len=40, system_prompt="none"))
    given = _decoded(tok, tokenize_records(recs, tok, seq_len=40, system_prompt="w5 w6 w7"))
    assert "system : w30 w31" in default  # the template's own default
    assert "system" not in none and none.startswith("<s> user : w0 w1 w2")
    assert "system : w5 w6 w7" in given and "w30 w31" not in given
    # a record's own system turn: kept by default, dropped by none
    own = [{"messages": [{"role": "system", "content": "w9"}] + recs[0]["messages"]}]
    assert "system : w9" in _decoded(tok, tokenize_records(own, tok, seq_len=40))
    assert "system" not in _decoded(tok, tokenize_records(own, tok, seq_len=40, system_prompt="none"))
    # the counted tokens are the response either way
    for sp in ("default", "none", "w5 w6 w7"):
        d = tokenize_records(recs, tok, seq_len=40, system_prompt=sp)
        assert tok.decode(d.labels[0][d.mask[0]]).startswith(recs[0]["messages"][1]["content"])


def test_loss_on_all_vs_assistant():
    from transfuse.lm.data import tokenize_records

    tok = make_tokenizer()
    recs = _chat(3)
    a = tokenize_records(recs, tok, seq_len=40)
    b = tokenize_records(recs, tok, seq_len=40, loss_on="all")
    assert torch.equal(a.inputs, b.inputs)
    for i in range(3):
        length = int(a.attention_mask[i].sum())
        assert int(b.mask[i].sum()) == length - 1  # every next token of the row counts
        assert int(a.mask[i].sum()) < length - 1 and bool((b.mask[i] | ~a.mask[i]).all())  # assistant: a subset
        answer = recs[i]["messages"][1]["content"].split()
        assert tok.decode(a.labels[i][a.mask[i]]).split()[: len(answer)] == answer


def test_chat_template_file(tmp_path):
    from transfuse.errors import TransfuseError
    from transfuse.lm.data import load_chat_template
    from transfuse.recipes.distill_lm import Prepared

    (tmp_path / "t.jinja").write_text(DEFAULT_SYSTEM_TEMPLATE)
    p = Prepared(_cfg(tmp_path, data={"chat_template": str(tmp_path / "t.jinja")}), log=lambda *_: None)
    assert p.tokenizer.chat_template == DEFAULT_SYSTEM_TEMPLATE
    assert "system : w30 w31" in _decoded(p.tokenizer, p.train_data)
    with pytest.raises(TransfuseError, match="is not a file"):
        load_chat_template(make_tokenizer(), str(tmp_path / "missing.jinja"))
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}")
    with pytest.raises(TransfuseError, match="does not render"):
        load_chat_template(make_tokenizer(), str(tmp_path / "bad.jinja"))


def test_system_prompt_none_needs_a_separable_template():
    from transfuse.errors import TransfuseError
    from transfuse.lm.data import tokenize_records

    tok = make_tokenizer()
    # the system turn goes last: it is no leading block that could be cut off
    tok.chat_template = ("{% for m in messages if m['role'] != 'system' %}<s> {{ m['role'] }} : {{ m['content'] }} </s> "
                         "{% endfor %}<s> system : w30 </s>")
    with pytest.raises(TransfuseError, match="system_prompt=none"):
        tokenize_records(_chat(1), tok, seq_len=40, system_prompt="none")


def _train_losses(tmp_path, name, **train):
    from transfuse.recipes.distill_lm import main

    cfg = _cfg(tmp_path, train={"max_steps": 4, "log_every": 1, **train}, output=str(tmp_path / name))
    main(cfg)
    return [r["loss"] for r in _rows(tmp_path / name / "metrics.jsonl") if "loss" in r]


def test_bf16_autocast_loss_close_to_fp32_and_checkpointing_equal(tmp_path, monkeypatch):
    import transformers.modeling_utils as hf

    fp32 = _train_losses(tmp_path, "fp32")
    bf16 = _train_losses(tmp_path, "bf16", mixed_precision="bf16")
    calls, real = [], hf.checkpoint
    monkeypatch.setattr(hf, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    ckpt = _train_losses(tmp_path, "ckpt", gradient_checkpointing=True)
    assert len(calls) >= 4 * 2  # every decoder layer of every step went through torch.utils.checkpoint
    assert min(fp32) > 0.01  # a loss with signal
    assert bf16 != fp32  # autocast really ran in bf16
    for a, b in zip(fp32, bf16):
        assert b == pytest.approx(a, rel=0.05)
    for a, b in zip(fp32, ckpt):  # recomputing activations changes no number
        assert b == pytest.approx(a, rel=1e-5)


def test_fp16_on_the_cpu_is_refused(tmp_path):
    from transfuse.errors import TransfuseError
    from transfuse.recipes.distill_lm import main

    with pytest.raises(TransfuseError, match="fp16 needs a GPU"):
        main(_cfg(tmp_path, train={"mixed_precision": "fp16", "device": "cpu"}))
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """accelerate launch with 2 CPU processes (gloo) gives the weights of one process with the same global batch."""
    script = HERE / "_lm_two_proc_script.py"
    env = {**os.environ, "PYTHONPATH": f"{HERE.parents[1] / 'src'}:{HERE}", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]

    def run(cmd, out, batch, accum, work="work"):
        proc = subprocess.run([*cmd, str(script), str(tmp_path / work), str(tmp_path / out), str(batch), str(accum)],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    run([sys.executable], "one", 8, 1)
    assert "world=2" in run(launcher, "two", 8, 1, work="work2")  # its own cache folder: built under two processes
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    run([sys.executable], "other", 4, 1)  # another global batch gives other weights: the comparison can fail
    other = load_file(tmp_path / "other" / "model.safetensors")
    assert max((one[k] - other[k]).abs().max().item() for k in one) > 1e-4
    # the logged loss is the global batch's (every process's tokens), as in one process
    l1 = [r["loss"] for r in _rows(tmp_path / "one" / "metrics.jsonl") if "loss" in r]
    l2 = [r["loss"] for r in _rows(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    assert l2 == pytest.approx(l1, rel=1e-4)


def test_checkpoint_of_a_model_with_tied_embeddings(tmp_path):
    """SmolLM2 ties its input embedding and output layer: a checkpoint holds the shared tensor once."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from transfuse.distill.checkpoint import load_state, save_state

    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    save_state(tmp_path, "student", {"weights": state, "view": state["lm_head.weight"][:3]})
    back = load_state(tmp_path, "student")
    assert all(torch.equal(back["weights"][k], v) for k, v in state.items())
    assert torch.equal(back["view"], state["lm_head.weight"][:3])
    fresh = LlamaForCausalLM(cfg)
    fresh.load_state_dict(back["weights"])
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_cli_bad_chat_template_is_one_line_exit_2(tmp_path, run_cli):
    import os

    cfg = _cfg(tmp_path)  # writes the teacher and the data
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"task: lm\nteacher: {{path: {tmp_path / 'teacher'}, cache: true, cache_dir: {tmp_path / 'cache'}, top_k: 8}}\n"
        f"student: {{layers: 2}}\ndata: {{source: {cfg.data.source}, seq_len: 24, batch_size: 4, "
        f"chat_template: {tmp_path / 'missing.jinja'}}}\ntrain: {{max_steps: 1}}\noutput: {tmp_path / 'out'}\n"
    )
    proc = run_cli("distill", recipe, env={"PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)])})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: data.chat_template" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()
