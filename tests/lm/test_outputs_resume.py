"""Issue 15: LM outputs load as plain float models (no leaked GGUF quantization entry) and fine-tune in a
plain HF loop; a killed LM run resumes to the weights of an uninterrupted one; the output folder rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from process_helpers import kill_at_checkpoint
import torch
from safetensors.torch import load_file

from lm_helpers import make_llama, make_tokenizer

HERE = Path(__file__).parent
SCRIPT = HERE / "_lm_resume_script.py"
GGUF = {"quant_method": "gguf", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dequantize": False}


def _gguf_teacher(folder: Path) -> Path:
    """A float teacher folder whose config.json carries the GGUF entry transformers leaves behind."""
    make_llama(layers=3, seed=1).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "quantization_config": GGUF}))
    return folder


def _text(path: Path) -> Path:
    path.write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 32}" for j in range(24)) for i in range(10)))
    return path


def _cfg(tmp_path, teacher, **extra):
    from transfuse.recipes.distill_lm import LMConfig

    base = {
        "teacher": {"path": str(teacher), "cache": True, "cache_dir": str(tmp_path / "cache"), "top_k": 8},
        "student": {"layers": 2},
        "data": {"source": str(_text(tmp_path / "text.txt")), "seq_len": 8, "batch_size": 4},
        "train": {"max_steps": 2},
        "eval": {"samples": 2, "new_tokens": 2, "prompt_tokens": 2},
        "output": str(tmp_path / "out"),
    }
    for k, v in extra.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and k in base else v
    return LMConfig.model_validate(base)


def test_gguf_entry_is_dropped_on_load_and_save(tmp_path):
    from transformers import AutoModelForCausalLM

    from transfuse.lm.models import load_causal_lm
    from transfuse.recipes.distill_lm import main

    teacher = _gguf_teacher(tmp_path / "teacher")
    model, _ = load_causal_lm(str(teacher))
    assert getattr(model.config, "quantization_config", None) is None and not getattr(model, "is_quantized", False)
    assert "quantization_config" in json.loads((teacher / "config.json").read_text())  # the user's folder is untouched
    main(_cfg(tmp_path, teacher))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in saved
    student = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert getattr(student, "hf_quantizer", None) is None and not getattr(student, "is_quantized", False)
    # one step of a plain HF training loop (what Trainer / TRL / PEFT do) changes the weights
    before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    ids = torch.randint(3, 40, (2, 6))
    student.train()
    student(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_hf_trainer_accepts_a_saved_student(tmp_path):
    """transformers.Trainer refuses quantized models; a saved student trains one step."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from transfuse.recipes.distill_lm import main

    main(_cfg(tmp_path, _gguf_teacher(tmp_path / "teacher")))
    student = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    ids = torch.randint(3, 40, (6,))
    rows = [{"input_ids": ids, "labels": ids} for _ in range(2)]
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True)
    result = Trainer(model=student, args=args, train_dataset=rows).train()
    assert result.global_step == 1


def test_output_rule_and_key_names(tmp_path):
    from transfuse.errors import TransfuseError
    from transfuse.recipes.distill import DistillConfig
    from transfuse.recipes.distill_lm import LMConfig, main

    assert LMConfig.model_validate({"output_dir": "a"}).output == "a" == LMConfig.model_validate({"output": "a"}).output
    d = {"data": {"name": "digits"}, "student": {"name": "mlp"}}
    assert DistillConfig.model_validate({**d, "output_dir": "b"}).output == "b"
    teacher = tmp_path / "teacher"
    make_llama(layers=3, seed=1).save_pretrained(teacher)
    make_tokenizer().save_pretrained(teacher)
    cfg = _cfg(tmp_path, teacher)
    main(cfg)
    first = load_file(tmp_path / "out" / "model.safetensors")
    with pytest.raises(TransfuseError, match="already holds a finished run.*overwrite=true"):
        main(cfg)
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["lm_head.weight"], first["lm_head.weight"])
    main(cfg.model_copy(update={"overwrite": True, "train": cfg.train.model_copy(update={"max_steps": 3})}))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["steps"] == 3
    with pytest.raises(TransfuseError, match="nothing to resume"):
        main(cfg.model_copy(update={"output": str(tmp_path / "empty")}), resume=True)


def _run(work, output, sleep, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(work), str(output), str(sleep), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_killed_lm_run_resumes_to_the_same_weights(tmp_path):
    """TAID, 2 epochs of 7 steps, a checkpoint every 2 steps: killed after step 8 (mid epoch 2),
    resumed with --resume: the same weights and TAID t as an uninterrupted run."""
    ref = _run(tmp_path, tmp_path / "ref", 0)
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-2000:]

    out = tmp_path / "run"
    proc = _run(tmp_path, out, 0.5)
    kill_at_checkpoint(proc, out, 8, timeout=300)
    assert not (out / "metrics.json").exists(), "the run finished before it was killed; the test proves nothing"

    resumed = _run(tmp_path, out, 0, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    ra, rb = (json.loads((p / "metrics.json").read_text()) for p in (tmp_path / "ref", out))
    assert ra["steps"] == rb["steps"] == 14 and rb["final_train_loss"] == pytest.approx(ra["final_train_loss"], rel=1e-6)
    from transfuse.distill import checkpoint as ckpt

    # the last checkpoint of each (step 12 of 14: the resumed run wrote it) holds the same TAID t
    t = [float(ckpt.read_checkpoint(ckpt.latest_checkpoint(p / "checkpoints"), ("objective",))["objective"]["inner.t"])
         for p in (tmp_path / "ref", out)]
    assert t[0] == t[1] == pytest.approx(0.4 + 0.6 * 12 / 14)


def test_checkpoint_of_a_tied_model_saves_and_loads(tmp_path):
    """SmolLM2 ties its embeddings and lm_head: a checkpoint of its state must not hit safetensors' shared-memory refusal."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from transfuse.distill.checkpoint import load_state, save_state

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    save_state(tmp_path, "student", state)
    back = load_state(tmp_path, "student")
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
