"""crkd's own experiment: novel class discovery on Fashion-MNIST, with vs without Cr-KD's KD term.

    .venv/bin/python benchmarks/objectives_crkd_ncd.py            # 3 seeds (a few minutes on 2 cores)
    .venv/bin/python benchmarks/objectives_crkd_ncd.py --quick    # smoke run: 1 seed, tiny budget

The smallest setup faithful to the official code (kleinzcy/Cr-KD-NCD, rKD.py ``train_discover`` on
the UNO base, model/losses.py ``KD`` and ``SinkhornKnopp``, scripts/discover_cifar.yaml):

* known classes 0-4 (T-shirt, trouser, pullover, dress, coat) are labelled; novel classes 5-9
  (sandal, shirt, sneaker, bag, ankle boot) are in the training set without labels (label -1).
* Network (both phases): an MLP encoder 784-256-128 (BatchNorm, ReLU) with a known-class head
  (cosine prototypes over 5 classes) and 4 novel-class heads (projector 128-256-64 then cosine
  prototypes over 5 clusters each; the head with the lowest summed training loss is evaluated, as
  in the official code); logits are cosines, divided by temperature 0.1 in the losses. The
  official code uses a ResNet-18 / ViT and multi-crop (2 large + 2 small); here an MLP and 2 views
  (random flip + up to 2 px shift), to fit 2 shared CPU cores. The KD gate's batch mean is taken
  per head (the official code takes it over all heads at once).
* Supervised pretraining on the known classes only (CE on cosine/0.1, both views): this model,
  frozen, is the teacher (5 outputs); the student starts from its encoder and known head, with a
  fresh novel head.
* Discovery (the base, "without"): UNO's swapped prediction: targets are one-hot over the known
  classes for labelled images, Sinkhorn-Knopp (3 iterations, epsilon 0.05) over the novel head for
  unlabelled ones; view v's targets supervise the other view's logits (all 10, / 0.1).
* "with crkd": the same plus transfuse's registered ``crkd`` objective as the KD term, with the
  official values: alpha 0.1, T 4, logit temperature 0.1, on unlabelled images only (official
  ``KD(..., mask_lab)``), no CE of its own; the teacher has 5 classes, the student 10 (the loop
  allows this for crkd).
Both arms run through transfuse's loop (``transfuse.distill.loop.train``) with the same seed, the
same pretrained weights, data order and views. Metric: clustering accuracy on the novel classes
(Hungarian matching, scipy.optimize.linear_sum_assignment), task-aware (argmax over the novel
head), on the unlabelled training images (the official "train/novel") and on the novel-class
test images; plus known-class test accuracy (argmax over the known head). Reference: k-means on
the pretrained encoder's features of the novel images (no discovery training at all).
Writes every number to --out (JSON) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from transfuse.data import IndexedTensors, build_data  # noqa: E402
from transfuse.distill.loop import make_loader, train  # noqa: E402
from transfuse.objectives import Objective, build_objective  # noqa: E402
from transfuse.signals import Batch, Outputs  # noqa: E402
from transfuse.teachers import FrozenTeacher  # noqa: E402

KNOWN, NOVEL = 5, 5
TEMPERATURE = 0.1  # the official cosine-logit temperature (discover_cifar.yaml: temperature 0.1)


# ------------------------------------------------------------------------------------------ model
def _cosine(x: Tensor, weight: Tensor) -> Tensor:
    return F.normalize(x, dim=-1) @ F.normalize(weight, dim=-1).t()  # (B, K) cosines


class NCDNet(nn.Module):
    """Encoder + known-class prototypes + ``heads`` novel-class heads (projector + prototypes each); logits = cosines."""

    def __init__(self, *, feat: int = 128, hidden: int = 256, proj: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(),
                                     nn.Linear(256, feat), nn.ReLU())
        self.head_lab = nn.Parameter(torch.randn(KNOWN, feat) * 0.1)
        self.projectors = nn.ModuleList(
            nn.Sequential(nn.Linear(feat, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, proj)) for _ in range(heads))
        self.head_unlab = nn.Parameter(torch.randn(heads, NOVEL, proj) * 0.1)

    def known_logits(self, x: Tensor) -> Tensor:
        return _cosine(self.encoder(x), self.head_lab)  # (B, 5)

    def forward(self, x: Tensor) -> Tensor:
        f = self.encoder(x)  # (B, feat)
        novel = [_cosine(p(f), w) for p, w in zip(self.projectors, self.head_unlab)]  # heads x (B, 5)
        return torch.cat([_cosine(f, self.head_lab)] + novel, -1)  # (B, 5 + 5 heads)


class KnownOnly(nn.Module):
    """The pretrained model as a 5-class classifier (the teacher); ``scale`` for pretraining's CE."""

    def __init__(self, net: NCDNet, scale: float = 1.0) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net.known_logits(x) * self.scale


# ------------------------------------------------------------------------------------------ objectives
def two_views(batch: Batch, generator: torch.Generator) -> Batch:
    """Two random views (horizontal flip, shift up to 2 px) stacked: (2B, ...); labels repeated."""
    x = batch.inputs
    views = []
    bg = float(x.min())
    for _ in range(2):
        n = len(x)
        flip = torch.rand(n, generator=generator) < 0.5
        shift = (torch.randint(-2, 3, (n, 2), generator=generator).float() * 2 / 28)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
        theta[:, 1, 1] = 1.0
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        views.append(F.grid_sample(x - bg, grid, align_corners=False, mode="nearest") + bg)
    index = None if batch.index is None else batch.index.repeat(2)
    labels = None if batch.labels is None else batch.labels.repeat(2)
    return Batch(inputs=torch.cat(views), labels=labels, index=index, mask=None, extra=dict(batch.extra))


@torch.no_grad()
def sinkhorn(logits: Tensor, *, iters: int = 3, epsilon: float = 0.05) -> Tensor:
    """Equal-partition soft assignment of a batch to K clusters (UNO / Cr-KD-NCD SinkhornKnopp). (B, K)"""
    q = torch.exp((logits.float() - logits.float().max()) / epsilon).t()  # (K, B); the shift cancels out
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(1, keepdim=True) * k
        q /= q.sum(0, keepdim=True) * b
    return (q * b).t()


class Discovery(Objective):
    """UNO's swapped prediction over [known | novel head h] logits for each head, plus an optional
    KD term (crkd) per head; both averaged over heads. ``loss_per_head`` sums each head's swapped
    loss over training: the official code evaluates the head where it is lowest."""

    changes_inputs = True
    teacher_may_have_fewer_classes = True

    def __init__(self, kd: Optional[Objective] = None, heads: int = 4) -> None:
        super().__init__()
        self.kd, self.heads = kd, heads
        self.needs_teacher = kd is not None
        self.register_buffer("loss_per_head", torch.zeros(heads))

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        return two_views(batch, generator)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        b = student.logits.shape[0] // 2
        labels = batch.labels[:b]
        lab = labels >= 0
        total = student.logits.new_zeros((), dtype=torch.float32)
        for h in range(self.heads):
            logits = torch.cat([student.logits[:, :KNOWN], student.logits[:, KNOWN + NOVEL * h: KNOWN + NOVEL * (h + 1)]], -1)
            views = logits.float().view(2, b, -1)  # (2, B, 10) cosines
            targets = torch.zeros_like(views)
            for v in range(2):
                targets[v, lab, :KNOWN] = F.one_hot(labels[lab], KNOWN).float()
                if bool((~lab).any()):
                    targets[v, ~lab, KNOWN:] = sinkhorn(views[v, ~lab, KNOWN:])
            logp = (views / TEMPERATURE).log_softmax(-1)
            swapped = 0.5 * (-(targets[0] * logp[1]).sum(-1).mean() - (targets[1] * logp[0]).sum(-1).mean())
            self.loss_per_head[h] += float(swapped.detach())
            total = total + swapped
            if self.kd is not None:
                total = total + self.kd(Outputs(logits=logits), teacher, batch)
        return total / self.heads


class OfficialKD(Objective):
    """Reference only: Cr-KD-NCD's ``KD`` as written (a gated cross-entropy, not a KL). With the gate
    not detached its gradient differs from the gated KL of transfuse's ``crkd`` by the teacher's
    entropy times the gate's gradient."""

    teacher_may_have_fewer_classes = True

    def __init__(self, alpha: float = 0.1, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha, self.temperature = alpha, temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        t, unl = self.temperature, batch.labels < 0
        old = (teacher.logits.detach().float()[unl, :KNOWN] / TEMPERATURE / t).softmax(-1)  # (U, 5)
        new = student.logits.float()[unl] / TEMPERATURE / t  # (U, 10)
        gate = new.softmax(-1)[:, :KNOWN].sum(-1, keepdim=True)
        gate = gate / gate.mean()
        return self.alpha * (-(new[:, :KNOWN].log_softmax(-1)) * old * t**2 * gate).sum(-1).mean()


# ------------------------------------------------------------------------------------------ metrics
def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best one-to-one match of clusters to classes (Hungarian), then accuracy."""
    y_true = y_true - y_true.min()
    d = int(max(y_pred.max(), y_true.max())) + 1
    w = np.zeros((d, d), dtype=np.int64)
    np.add.at(w, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(w.max() - w)
    return float(w[rows, cols].sum() / len(y_pred))


@torch.no_grad()
def evaluate(net: NCDNet, novel_train: Tensor, novel_train_y: Tensor, test: IndexedTensors, head: int = 0) -> Dict[str, float]:
    net.eval()
    cols = slice(KNOWN + NOVEL * head, KNOWN + NOVEL * (head + 1))
    novel_pred = net(novel_train)[:, cols].argmax(-1).numpy()
    test_novel = test.labels >= KNOWN
    test_pred = net(test.inputs[test_novel])[:, cols].argmax(-1).numpy()
    known_acc = float((net.known_logits(test.inputs[~test_novel]).argmax(-1) == test.labels[~test_novel]).float().mean())
    return {
        "novel_train_cluster_acc": cluster_accuracy(novel_train_y.numpy(), novel_pred),
        "novel_test_cluster_acc": cluster_accuracy(test.labels[test_novel].numpy(), test_pred),
        "known_test_acc": known_acc,
    }


# ------------------------------------------------------------------------------------------ runs
def pretrain(known: IndexedTensors, *, seed: int, epochs: int, heads: int = 4) -> NCDNet:
    """Supervised training on the known classes only (the official pretrain stage): CE on cosine / 0.1."""
    torch.manual_seed(seed)
    net = NCDNet(heads=heads)

    class TwoViewCE(Objective):
        changes_inputs = True
        needs_teacher = False

        def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
            return two_views(batch, generator)

        def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
            return F.cross_entropy(student.logits.float(), batch.labels)

    train(student=KnownOnly(net, scale=1 / TEMPERATURE), teacher=None, objective=TwoViewCE(),
          train_loader=make_loader(known, batch_size=256, seed=seed), epochs=epochs, optimizer="adamw", lr=2e-3,
          schedule="onecycle", seed=seed, progress=False, cpu=True, log_every=10**9)
    return net.eval()


def kmeans_reference(pre: NCDNet, novel_x: Tensor, novel_y: Tensor, *, seed: int) -> float:
    """No discovery training: k-means (5 clusters) on the pretrained encoder's normalised features."""
    from sklearn.cluster import KMeans

    with torch.no_grad():
        feats = F.normalize(pre.eval().encoder(novel_x), dim=-1).numpy()
    pred = KMeans(NOVEL, n_init=10, random_state=seed).fit_predict(feats)
    return cluster_accuracy(novel_y.numpy(), pred)


def discover(pre: NCDNet, data: IndexedTensors, *, kd_kind: Optional[str], seed: int, epochs: int) -> tuple[NCDNet, int]:
    torch.manual_seed(1000 + seed)
    student = NCDNet(heads=pre.heads)
    fresh = {k: v for k, v in student.state_dict().items() if k.startswith(("projectors", "head_unlab"))}
    student.load_state_dict({**pre.state_dict(), **fresh})  # pretrained encoder + known head, new novel head
    teacher = None
    kd = None
    if kd_kind is not None:
        teacher_net = NCDNet(heads=pre.heads)
        teacher_net.load_state_dict(pre.state_dict())
        teacher = FrozenTeacher(KnownOnly(teacher_net))  # 5 outputs: the known classes
        kd = build_objective("crkd", {"alpha": 0.1, "temperature": 4.0, "logit_temperature": TEMPERATURE,
                                      "known_classes": KNOWN, "unlabelled_only": True, "ce_weight": 0.0}) \
            if kd_kind == "crkd" else OfficialKD()
    objective = Discovery(kd, heads=student.heads)
    train(student=student, teacher=teacher, objective=objective, train_loader=make_loader(data, batch_size=256, seed=seed),
          epochs=epochs, optimizer="adamw", lr=2e-3, weight_decay=1.5e-4, schedule="onecycle", seed=seed, progress=False,
          cpu=True, log_every=10**9)
    return student.eval(), int(objective.loss_per_head.argmin())


def summarise(vals):
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "runs": vals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=1200, help="training images per class (known labelled, novel unlabelled)")
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=30, help="discovery epochs")
    ap.add_argument("--arms", default="without,with crkd",
                    help="comma-separated: without, with crkd, with official KD (the official CE form, reference)")
    ap.add_argument("--heads", type=int, default=4, help="novel-class heads (the official code uses 4; the best by loss is evaluated)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "objectives_crkd_ncd.json"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.per_class, args.pretrain_epochs, args.epochs = 1, 200, 2, 2
    torch.set_num_threads(1)  # the 2 cores are shared
    full = build_data("fashion_mnist", {})
    x, y = full.train.inputs, full.train.labels
    picks = torch.cat([torch.nonzero(y == c).squeeze(1)[: args.per_class] for c in range(10)])
    x, y = x[picks], y[picks]
    is_novel = y >= KNOWN
    hidden = torch.where(is_novel, torch.full_like(y, -1), y)  # the novel classes' labels are never seen
    data = IndexedTensors(x, hidden)
    known = IndexedTensors(x[~is_novel], y[~is_novel])
    novel_x, novel_y = x[is_novel], y[is_novel]
    print(f"novel class discovery on Fashion-MNIST: known 0-4 labelled ({int((~is_novel).sum())} images), novel 5-9 "
          f"unlabelled ({int(is_novel.sum())} images); pretrain {args.pretrain_epochs} epochs, discovery {args.epochs} epochs, "
          f"seeds {list(range(args.seeds))}", flush=True)
    results: Dict[str, Any] = {"settings": vars(args), "torch": torch.__version__, "runs": []}
    started = time.perf_counter()
    kinds = {"without": None, "with crkd": "crkd", "with official KD": "official"}
    per_arm: Dict[str, list] = {arm: [] for arm in args.arms.split(",")}
    if not set(per_arm) <= set(kinds):
        raise SystemExit(f"--arms must be among {list(kinds)}")
    kmeans: list = []
    for seed in range(args.seeds):
        pre = pretrain(known, seed=seed, epochs=args.pretrain_epochs, heads=args.heads)
        record = {"seed": seed, "pretrained_known_test_acc": evaluate(pre, novel_x, novel_y, full.test)["known_test_acc"],
                  "kmeans_on_pretrained_features": kmeans_reference(pre, novel_x, novel_y, seed=seed)}
        kmeans.append(record["kmeans_on_pretrained_features"])
        print(f"  seed {seed} pretrained: known test {record['pretrained_known_test_acc'] * 100:.2f}; k-means on its features, "
              f"novel train {record['kmeans_on_pretrained_features'] * 100:.2f}", flush=True)
        for arm in per_arm:
            t0 = time.perf_counter()
            net, head = discover(pre, data, kd_kind=kinds[arm], seed=seed, epochs=args.epochs)
            m = evaluate(net, novel_x, novel_y, full.test, head=head)
            m["head"] = head
            m["seconds"] = time.perf_counter() - t0
            per_arm[arm].append(m)
            record[arm] = m
            print(f"  seed {seed} {arm:10s} novel train {m['novel_train_cluster_acc'] * 100:.2f}  novel test "
                  f"{m['novel_test_cluster_acc'] * 100:.2f}  known test {m['known_test_acc'] * 100:.2f}  ({m['seconds']:.0f}s)", flush=True)
        results["runs"].append(record)
    print("\n| discovery | novel clustering acc, train % | novel clustering acc, test % | known-class test acc % | s/run |")
    print("|---|---|---|---|---|")
    results["summary"] = {}
    for arm, runs in per_arm.items():
        s = {k: summarise([r[k] for r in runs]) for k in runs[0] if k != "head"}
        results["summary"][arm] = s
        print(f"| {arm} | {s['novel_train_cluster_acc']['mean'] * 100:.2f} ± {s['novel_train_cluster_acc']['std'] * 100:.2f} | "
              f"{s['novel_test_cluster_acc']['mean'] * 100:.2f} ± {s['novel_test_cluster_acc']['std'] * 100:.2f} | "
              f"{s['known_test_acc']['mean'] * 100:.2f} ± {s['known_test_acc']['std'] * 100:.2f} | {s['seconds']['mean']:.0f} |")
    results["kmeans_on_pretrained_features"] = summarise(kmeans)
    print(f"reference, no discovery training (k-means on the pretrained features): novel train "
          f"{statistics.fmean(kmeans) * 100:.2f} ± {(statistics.stdev(kmeans) if len(kmeans) > 1 else 0) * 100:.2f}")
    for arm in per_arm:
        if arm == "without" or "without" not in per_arm:
            continue
        deltas = [w["novel_train_cluster_acc"] - o["novel_train_cluster_acc"] for w, o in zip(per_arm[arm], per_arm["without"])]
        results.setdefault("paired_delta_novel_train", {})[arm] = summarise(deltas)
        print(f"paired delta ({arm} - without), novel train: {statistics.fmean(deltas) * 100:+.2f} points, per seed "
              + " ".join(f"{d * 100:+.2f}" for d in deltas))
    results["wall_seconds"] = time.perf_counter() - started
    print(f"total wall time {results['wall_seconds']:.0f}s")
    if not args.quick:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
