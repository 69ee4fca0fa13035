import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.models import build_model
from transfuse.models.hf_text import every_other, tokenizer_of


def test_student_from_every_other_teacher_layer(teacher_dir):
    teacher = build_model("hf_text", {"path": str(teacher_dir)}, in_shape=(16,), num_classes=3)
    student = build_model("hf_text", {"from_teacher": str(teacher_dir), "num_layers": 2}, in_shape=(16,), num_classes=3)
    assert every_other(4, 2) == [0, 2] and every_other(6, 2) == [0, 3] and every_other(12, 6) == [0, 2, 4, 6, 8, 10]
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in ((0, 0), (1, 2)):
        for k, v in s.items():
            prefix = f"bert.encoder.layer.{new}."
            if k.startswith(prefix):
                assert torch.equal(v, t[f"bert.encoder.layer.{old}." + k[len(prefix):]]), k
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    picked = build_model("hf_text", {"from_teacher": str(teacher_dir), "layers": [3]}, in_shape=(16,), num_classes=3)
    assert torch.equal(picked.state_dict()["bert.encoder.layer.0.output.dense.weight"], t["bert.encoder.layer.3.output.dense.weight"])
    assert tokenizer_of(student) is not None and tokenizer_of(student).pad_token_id == 0


def test_missing_mask_is_the_pad_mask_and_floats_are_refused(teacher_dir):
    model = build_model("hf_text", {"path": str(teacher_dir)}, in_shape=(16,), num_classes=3).eval()
    enc = tokenizer_of(model)(["the dog", "a green tree and a cat"], padding="max_length", max_length=12, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        implicit = model(ids).logits
        assert torch.allclose(implicit, model(ids, attention_mask=mask).logits)
        assert not torch.allclose(implicit, model(ids, attention_mask=torch.ones_like(mask)).logits)
    with pytest.raises(TransfuseError, match="takes token ids, but got float inputs"):
        model(torch.randn(2, 12))


def test_errors(teacher_dir, tmp_path):
    with pytest.raises(TransfuseError, match="exactly one of path"):
        build_model("hf_text", {}, in_shape=(16,), num_classes=3)
    with pytest.raises(TransfuseError, match="num_layers=<k>"):
        build_model("hf_text", {"from_teacher": str(teacher_dir)}, in_shape=(16,), num_classes=3)
    with pytest.raises(TransfuseError, match="layers must be distinct ids in 0..3"):
        build_model("hf_text", {"from_teacher": str(teacher_dir), "layers": [0, 7]}, in_shape=(16,), num_classes=3)
    with pytest.raises(TransfuseError, match="has 3 labels but the data has 5"):
        build_model("hf_text", {"path": str(teacher_dir)}, in_shape=(16,), num_classes=5)
    with pytest.raises(TransfuseError, match="reads at most 64 tokens"):
        build_model("hf_text", {"path": str(teacher_dir)}, in_shape=(100,), num_classes=3)
    with pytest.raises(TransfuseError, match="no config.json"):
        build_model("hf_text", {"path": str(tmp_path)}, in_shape=(16,), num_classes=3)


def test_attention_probabilities_through_feature_hooks(teacher_dir):
    from transfuse.objectives._features import forward_with_features

    model = build_model("hf_text", {"path": str(teacher_dir), "attn_implementation": "eager"}, in_shape=(16,), num_classes=3)
    ids = tokenizer_of(model)(["the dog and a cat"], padding="max_length", max_length=10, return_tensors="pt")["input_ids"]
    out = forward_with_features(model.eval(), ids, ["bert.encoder.layer.1", "bert.encoder.layer.1.attention.self:1"])
    hidden, attn = out.hidden["bert.encoder.layer.1"], out.hidden["bert.encoder.layer.1.attention.self:1"]
    assert hidden.shape == (1, 10, 32) and attn.shape == (1, 2, 10, 10)
    assert torch.allclose(attn.sum(-1), torch.ones(1, 2, 10), atol=1e-5)
    assert float(attn[..., 7:].detach().abs().max()) == 0.0  # padded keys get no attention: the mask reached the model
