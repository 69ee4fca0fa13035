"""A tiny LM distillation through the CLI (`transfuse distill RECIPE ... [--resume]`), slowed per step
so that a test can kill it mid-run; run with tests/lm on PYTHONPATH (the objective is reached by its
dotted path ``_lm_resume_script.SlowTAID``).

usage: _lm_resume_script.py WORK_DIR OUTPUT SLEEP [--resume]
"""
import sys
import time
from pathlib import Path

from transfuse.objectives import Objective, build_objective


class SlowTAID(Objective):
    """TAID (its t is the state a resume must restore), sleeping after each step."""

    supports_tokens = True

    def __init__(self, *, sleep: float = 0.0) -> None:
        super().__init__()
        self.inner = build_objective("taid", {"adaptive": False})
        self.sleep = sleep
        self.is_divergence = getattr(self.inner, "is_divergence", False)

    def forward(self, student, teacher, batch):
        return self.inner(student, teacher, batch)

    def on_step_end(self, *, step, total_steps, loss):
        self.inner.on_step_end(step=step, total_steps=total_steps, loss=loss)
        time.sleep(self.sleep)


def prepare(work: Path) -> Path:
    """The tiny teacher folder, the text and the recipe (written once per work folder)."""
    from lm_helpers import make_llama, make_tokenizer

    recipe = work / "recipe.yaml"
    if recipe.exists():
        return recipe
    make_llama(layers=3, seed=1).save_pretrained(work / "teacher")
    make_tokenizer().save_pretrained(work / "teacher")
    (work / "text.txt").write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 32}" for j in range(24)) for i in range(10)))
    recipe.write_text(
        f"task: lm\nteacher: {{path: {work / 'teacher'}, cache: true, cache_dir: {work / 'cache'}, top_k: 8}}\n"
        f"student: {{layers: 2}}\ndata: {{source: {work / 'text.txt'}, seq_len: 8, batch_size: 4}}\n"
        "objective: {name: _lm_resume_script.SlowTAID}\n"
        "train: {epochs: 2, checkpoint_every: 2, lr: 0.01}\neval: {samples: 2, new_tokens: 2, prompt_tokens: 2}\n"
    )
    return recipe


if __name__ == "__main__":
    work, output, sleep = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    from transfuse.cli import main

    main(["distill", str(prepare(work)), f"output={output}", f"objective.params.sleep={sleep}", *sys.argv[4:]])
