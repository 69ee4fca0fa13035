import torch
from torch import nn

from transfuse.objectives import build_objective
from transfuse.objectives._adam import BufferAdam, step_parts
from transfuse.signals import Batch


def test_buffer_adam_matches_torch_adam():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    mine, ref = BufferAdam(lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    x = torch.randn(8, 3)
    for _ in range(5):
        step_parts(mine, list(a.parameters()), (a(x) ** 2).sum())
        ref.zero_grad()
        (b(x) ** 2).sum().backward()
        ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert all(p.grad is None for p in a.parameters())


def _hard():
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    t = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    obj = build_objective("hard", {"aug_lr": 0.05})
    obj.bind(s, teacher=t)
    return obj, s, t


def test_hard_resumes_to_the_same_augmentor():
    x = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    batch = Batch(inputs=x, labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    gen = lambda i: torch.Generator().manual_seed(100 + i)  # noqa: E731 (the loop seeds by step)
    whole, _, _ = _hard()
    for i in range(3):
        whole.prepare(batch, generator=gen(i))
    first, s, t = _hard()
    first.prepare(batch, generator=gen(0))
    resumed = build_objective("hard", {"aug_lr": 0.05})
    resumed.bind(s, teacher=t)
    resumed.load_state_dict(first.state_dict())
    for i in (1, 2):
        resumed.prepare(batch, generator=gen(i))
    for key, value in whole.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-7), key
