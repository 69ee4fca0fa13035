"""A tiny LM distillation (top-k cache, chat rows of uneven length) run directly or under
`accelerate launch`; prints the process count. usage: _lm_two_proc_script.py WORK OUTPUT BATCH GRAD_ACCUM"""
import json
import sys
from pathlib import Path


def prepare(work: Path) -> None:
    from lm_helpers import make_llama, make_tokenizer

    if (work / "chat.jsonl").exists():
        return
    work.mkdir(parents=True, exist_ok=True)
    teacher = make_llama(layers=3, seed=1)
    teacher.lm_head.weight.data.mul_(40)  # peaked distributions: a loss with signal
    teacher.save_pretrained(work / "teacher")
    make_tokenizer().save_pretrained(work / "teacher")
    recs = [{"messages": [{"role": "user", "content": " ".join(f"w{(i + j) % 32}" for j in range(3 + i % 4))},
                          {"role": "assistant", "content": " ".join(f"w{(i * 5 + j) % 32}" for j in range(2 + i % 7))}]}
            for i in range(40)]
    (work / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


if __name__ == "__main__":
    work, output, batch, accum = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    from accelerate import PartialState

    from transfuse.recipes.distill_lm import LMConfig, main

    if PartialState(cpu=True).is_main_process:
        prepare(work)
    PartialState().wait_for_everyone()
    cfg = LMConfig.model_validate({
        "teacher": {"path": str(work / "teacher"), "cache": True, "cache_dir": str(work / "cache"), "top_k": 8},
        "student": {"layers": 2},
        "data": {"source": str(work / "chat.jsonl"), "seq_len": 24, "batch_size": batch},
        "train": {"max_steps": 4, "lr": 0.01, "grad_accum": accum, "device": "cpu", "log_every": 1},
        "eval": {"samples": 2, "new_tokens": 2, "generations": 1},
        "output": output,
    })
    main(cfg)
    print(f"world={PartialState().num_processes}")
