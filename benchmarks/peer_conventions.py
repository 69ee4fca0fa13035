"""Reference outputs of TRL 1.16.0 generalized_jsd_loss and torchdistill 1.1.5 losses on seeded inputs.

Run in each peer's venv: /work/venvs/trl/bin/python benchmarks/peer_conventions.py trl ;
/work/venvs/torchdistill/bin/python benchmarks/peer_conventions.py torchdistill
(writes tests/objectives/data/peer_<name>.json, compared by tests/objectives/test_peer_conventions.py).
"""
import json, sys
import torch

def inputs():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 11, generator=g) * 2, torch.randn(3, 5, 11, generator=g) * 2
    labels = torch.randint(0, 11, (3, 5), generator=g); labels[:, 3:] = -100
    return s, t, labels

def trl():
    from trl.experimental.gkd.gkd_trainer import GKDTrainer
    s, t, labels = inputs(); out = {}
    for beta in (0.0, 0.5, 1.0):
        for temp in (1.0, 2.0):
            for red in ("batchmean", "sum", "mean"):
                out[f"{beta}|{temp}|{red}"] = float(GKDTrainer.generalized_jsd_loss(s, t, labels, beta=beta, temperature=temp, reduction=red))
            out[f"{beta}|{temp}|num_items_in_batch"] = float(GKDTrainer.generalized_jsd_loss(s, t, labels, beta=beta, temperature=temp, num_items_in_batch=7))
    from trl.experimental.iw_opd.iw_opd_trainer import IWOPDTrainer
    for beta in (0.0, 0.5, 1.0):
        for tail in (True, False):
            out[f"topk|{beta}|{tail}"] = float(IWOPDTrainer.generalized_jsd_loss(s, t, labels, beta=beta, temperature=2.0, top_k=3, add_tail=tail))
    return out

def torchdistill():
    from torchdistill.losses.mid_level import KDLoss, DISTLoss, LogitStdKDLoss, SKDInstanceLoss, SKDDirectionLoss
    s, t, _ = inputs(); s, t = s[:, 0] , t[:, 0]
    g = torch.Generator().manual_seed(1); s, t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = torch.randint(0, 6, (8,), generator=g)
    io = lambda z: {".": {"output": z}}
    a = (".", "output", ".", "output")
    return {
        "kd": float(KDLoss(*a, temperature=4.0, alpha=0.3, beta=0.6, label_smoothing=0.1)(io(s), io(t), y)),
        "kd_noce": float(KDLoss(*a, temperature=4.0, alpha=0.0)(io(s), io(t), y)),
        "dist": float(DISTLoss(*a, beta=1.0, gamma=2.0, tau=2.0)(io(s), io(t))),
        "logit_std": float(LogitStdKDLoss(*a, temperature=2.0, alpha=0.5, beta=9.0)(io(s), io(t), y)),
        "skd_instance_paper": float(SKDInstanceLoss(*a, temperature=4.0, mode="paper")(io(s), io(t))),
        "skd_instance_code": float(SKDInstanceLoss(*a, temperature=4.0, mode="code")(io(s), io(t))),
        "skd_direction_paper": float(SKDDirectionLoss(*a, tikhonov=0.1, mode="paper")(io(s), io(t))),
        "skd_direction_code": float(SKDDirectionLoss(*a, tikhonov=0.1, mode="code")(io(s), io(t))),
    }

if __name__ == "__main__":
    name = sys.argv[1]
    res = {"trl": trl, "torchdistill": torchdistill}[name]()
    json.dump(res, open(f"tests/objectives/data/peer_{name}.json", "w"), indent=1)
