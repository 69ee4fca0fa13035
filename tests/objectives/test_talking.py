import pytest
import torch
import torch.nn.functional as F

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _outs():
    torch.manual_seed(0)
    s = Outputs(logits=torch.randn(3, 4, requires_grad=True), hidden={"penultimate": torch.randn(3, 5, requires_grad=True)})
    t = Outputs(logits=torch.randn(3, 4), hidden={"penultimate": torch.randn(3, 7)})
    return s, t


def test_talking_loss_by_formula():
    obj = build_objective("talking", {"student_dim": 5, "teacher_dim": 7, "message_dim": 6, "alpha": 1.0, "recon_weight": 0.5, "interaction_weight": 2.0})
    s, t = _outs()
    got = obj(s, t, Batch(inputs=torch.zeros(3)))
    hs, ht = s.hidden["penultimate"], t.hidden["penultimate"]
    ms, mt = obj.enc_s(hs), obj.enc_t(ht)
    recon = F.mse_loss(obj.dec_t(mt), ht) + F.mse_loss(obj.dec_s(ms), hs)
    inter = F.mse_loss(hs, obj.dec_s(mt)) + F.mse_loss(ms, mt)
    kd = F.kl_div(F.log_softmax(s.logits / 4, -1), F.softmax(t.logits / 4, -1), reduction="batchmean") * 16
    assert float(got) == pytest.approx(float(kd + 0.5 * recon + 2.0 * inter), rel=1e-5)


def test_teacher_side_learns_only_from_reconstruction():
    obj = build_objective("talking", {"student_dim": 5, "teacher_dim": 7, "recon_weight": 0.0})
    s, t = _outs()
    obj(s, t, Batch(inputs=torch.zeros(3), labels=torch.tensor([0, 1, 2]))).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in obj.enc_t.parameters())
    assert s.hidden["penultimate"].grad.abs().sum() > 0  # the student's hidden state hears the teacher
