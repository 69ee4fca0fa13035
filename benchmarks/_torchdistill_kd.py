"""torchdistill's KDLoss (torchdistill.losses.mid_level.KDLoss) in a plain PyTorch loop; run by objectives_table.py.

Runs in .bench/tdvenv (torch==2.13.0 + torchdistill from PyPI). Same student architecture and
initial weights, same teacher logits, same batches in the same order (transfuse's EpochSampler
rule: randperm seeded by seed * 100003 + epoch, drop_last), same AdamW lr 3e-3 and one-cycle
schedule as transfuse's loop. transfuse kd alpha=0.9 on the soft term == torchdistill alpha=0.1 (CE), beta=0.9.
Prints one JSON line: accuracy and seconds.
"""
import json
import math
import sys
import time

import torch
from safetensors.torch import load_file
from torch import nn
from torchdistill.losses.mid_level import KDLoss

folder, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
d = load_file(f"{folder}/td_data.safetensors")


class MLP(nn.Module):  # transfuse's mlp(hidden=[32]) layout, so the same state dict loads
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1).float()))


def onecycle(step, total):
    warm = max(1, int(0.3 * total))
    if step < warm:
        return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / warm)) / 2
    p = (step - warm) / max(1, total - warm)
    return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * min(1.0, p))) / 2


model = MLP()
model.load_state_dict(load_file(f"{folder}/td_init.safetensors"))
criterion = KDLoss("head", "output", "teacher", "output", temperature=4.0, alpha=0.1, beta=0.9, reduction="batchmean")
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
n, batch = len(d["x"]), 128
total = epochs * (n // batch)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: onecycle(s, total))
t0 = time.perf_counter()
model.train()
for epoch in range(epochs):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    for i in range(0, n - batch + 1, batch):
        idx = order[i : i + batch]
        logits = model(d["x"][idx])
        loss = criterion({"head": {"output": logits}}, {"teacher": {"output": d["t"][idx]}}, d["y"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
seconds = time.perf_counter() - t0
model.eval()
with torch.no_grad():
    acc = float((model(d["tx"]).argmax(-1) == d["ty"]).float().mean())
print(json.dumps({"accuracy": acc, "seconds": seconds, "torch": torch.__version__}))
