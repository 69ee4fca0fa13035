import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.models import build_model, count_parameters, models

ZOO = [name for name in models.names() if name not in ("hf", "hf_text")]  # both need a saved folder


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 16, 16), (1, 8, 8)])
def test_logits_shape_and_gradients(name, in_shape):
    torch.manual_seed(0)
    model = build_model(name, None, in_shape=in_shape, num_classes=7)
    x = torch.randn(4, *in_shape)
    logits = model(x)
    assert logits.shape == (4, 7) and logits.dtype == torch.float32
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ZOO)
def test_fits_a_tiny_batch(name):
    torch.manual_seed(0)
    model = build_model(name, None, in_shape=(1, 12, 12), num_classes=4)
    x, y = torch.randn(16, 1, 12, 12), torch.arange(16) % 4
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_parameter_counts_by_hand():
    # mlp 784-128-10: 784*128 + 128 + 128*10 + 10.
    assert count_parameters(build_model("mlp", None, in_shape=(1, 28, 28), num_classes=10)) == 101_770
    # mlp 784-32-10.
    assert count_parameters(build_model("mlp", {"hidden": [32]}, in_shape=(1, 28, 28), num_classes=10)) == 25_450
    # cnn: conv 1->32 (9*32+32) + conv 32->64 (9*32*64+64) + linear 64*7*7->128 + linear 128->10.
    expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10)
    assert expected == 421_642
    assert count_parameters(build_model("cnn", None, in_shape=(1, 28, 28), num_classes=10)) == expected
    assert count_parameters(build_model("mlp", {"hidden": 32}, in_shape=(1, 28, 28), num_classes=10)) == 25_450
    # mlp with no hidden layer is logistic regression.
    assert count_parameters(build_model("mlp", {"hidden": []}, in_shape=(4,), num_classes=3)) == 4 * 3 + 3


def test_resnet_layout():
    model = build_model("resnet", {"width": 8, "blocks": [2, 1]}, in_shape=(1, 28, 28), num_classes=10)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 3
    assert model.head.in_features == 16  # widths 8, 16


def test_cnn_takes_grey_images_without_a_channel_axis():
    model = build_model("cnn", None, in_shape=(28, 28), num_classes=10)
    assert model(torch.randn(2, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "name, params, in_shape, match",
    [
        ("cnn", None, (784,), "cnn needs image inputs"),
        ("cnn", {"channels": [8, 8, 8, 8]}, (1, 8, 8), "shrinks 8x8 images to nothing"),
        ("resnet", None, (784,), "resnet needs image inputs"),
        ("resnet", {"width": 0}, (1, 28, 28), "must be positive"),
        ("mlp", {"hidden": [0]}, (4,), "must be positive"),
        ("mlp", {"dropout": 1.0}, (4,), "dropout"),
        ("mlp", {"hiden": [4]}, (4,), "no parameter 'hiden'. Did you mean: hidden"),
    ],
)
def test_bad_parameters(name, params, in_shape, match):
    with pytest.raises(TransfuseError, match=match):
        build_model(name, params, in_shape=in_shape, num_classes=3)
