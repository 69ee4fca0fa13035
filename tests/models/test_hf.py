import json

import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.models import build_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=10,
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config)
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=3,
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_image_model_loads_the_saved_weights(tiny_vit):
    folder, original = tiny_vit
    model = build_model("hf", {"path": str(folder)}, in_shape=(1, 28, 28), num_classes=10)
    saved = original.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    model.eval()
    original.eval()
    x = torch.randn(2, 1, 28, 28)
    out = model(x)
    assert out.logits.shape == (2, 10)
    assert torch.allclose(out.logits, original(x).logits)


def test_sequence_model(tiny_bert):
    model = build_model("hf", {"path": str(tiny_bert), "task": "sequence"}, in_shape=(12,), num_classes=3)
    assert model(torch.randint(0, 100, (2, 12))).logits.shape == (2, 3)


def test_num_labels_mismatch(tiny_vit):
    folder, _ = tiny_vit
    with pytest.raises(TransfuseError, match="has 10 labels but the data has 4 classes; pass ignore_mismatched_sizes"):
        build_model("hf", {"path": str(folder)}, in_shape=(1, 28, 28), num_classes=4)
    model = build_model("hf", {"path": str(folder), "ignore_mismatched_sizes": True}, in_shape=(1, 28, 28), num_classes=4)
    assert model(torch.randn(1, 1, 28, 28)).logits.shape == (1, 4)


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(TransfuseError, match="does not exist"):
        build_model("hf", {"path": str(tmp_path / "nope")}, in_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(TransfuseError, match="has no config.json"):
        build_model("hf", {"path": str(tmp_path)}, in_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(TransfuseError, match="needs path"):
        build_model("hf", {}, in_shape=(1, 28, 28), num_classes=10)


def test_wrong_task_and_shapes(tiny_vit, tiny_bert):
    folder, _ = tiny_vit
    with pytest.raises(TransfuseError, match="takes 1-channel images but the data has 3"):
        build_model("hf", {"path": str(folder)}, in_shape=(3, 28, 28), num_classes=10)
    with pytest.raises(TransfuseError, match="takes 28x28 images but the data has 32x32"):
        build_model("hf", {"path": str(folder)}, in_shape=(1, 32, 32), num_classes=10)
    with pytest.raises(TransfuseError, match="has no AutoModelForImageClassification"):
        build_model("hf", {"path": str(tiny_bert)}, in_shape=(1, 28, 28), num_classes=3)
    with pytest.raises(TransfuseError, match="reads at most 32 tokens"):
        build_model("hf", {"path": str(tiny_bert), "task": "sequence"}, in_shape=(64,), num_classes=3)
    with pytest.raises(TransfuseError, match="task must be one of image, sequence"):
        build_model("hf", {"path": str(folder), "task": "audio"}, in_shape=(1, 28, 28), num_classes=10)


def test_remote_code_is_refused_by_default(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my_custom", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}, "num_labels": 2,
    }))
    (tmp_path / "configuration_my.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(TransfuseError, match="trust_remote_code=true only if you trust it"):
        build_model("hf", {"path": str(tmp_path)}, in_shape=(1, 28, 28), num_classes=2)
