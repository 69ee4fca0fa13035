"""One optimizer step of a token objective on uneven masks; run directly or under `accelerate launch`.

usage: _token_script.py OUT.safetensors BATCH GRAD_ACCUM
"""
import sys

import torch
from safetensors.torch import save_file
from torch import nn

from transfuse.distill.loop import make_loader, train
from transfuse.objectives import build_objective
from transfuse.teachers import FrozenTeacher


class Tokens(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 11, (8, 6), generator=g)
        lengths = torch.tensor([1, 6, 2, 5, 3, 6, 1, 4])  # uneven counted tokens per sample
        self.mask = (torch.arange(6)[None] < lengths[:, None]).long()

    def __len__(self):
        return 8

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx)
        return {"inputs": self.x[idx], "mask": self.mask[idx], "index": idx}


class TinyLM(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(11, 8)
        self.head = nn.Linear(8, 11)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x)))  # (B, T, V)


if __name__ == "__main__":
    out, batch, accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    student = TinyLM(0)
    result = train(student=student, teacher=FrozenTeacher(TinyLM(1)), objective=build_objective("forward_kl"),
                   train_loader=make_loader(Tokens(), batch_size=batch, shuffle=False, drop_last=False),
                   max_steps=1, optimizer="sgd", lr=1.0, momentum=0.0, grad_accum=accum, progress=False)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"world={dist.get_world_size() if dist.is_initialized() else 1}")
        save_file({k: v.contiguous() for k, v in result.student.state_dict().items()}, out)
