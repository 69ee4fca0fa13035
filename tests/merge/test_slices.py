"""slices: on the streaming engine: virtual models read lazily (fused kernels included), layers renumbered,
and the slice mistakes mergekit would only find later (or never) refused before any work.

The merged values are compared with mergekit 0.1.5 in test_mergekit_compat.py (cases slices_*)."""
import json

import pytest

from merge_helpers import load_mergekit_references, read_model, run_merge_text
from transfuse.merge import kernels

mk = load_mergekit_references()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    mk.build_inputs(root)
    return root


def _run(root, monkeypatch, text, *args):
    return run_merge_text(root, monkeypatch, text, *args)


def test_frankenmerge_layers_renumbered_and_streamed(root, monkeypatch, tmp_path):
    out = tmp_path / "out"
    assert _run(root, monkeypatch, mk.CASES["slices_ties"][0], str(out)) == 0
    card = (out / "README.md").read_text()
    assert "2 slices stacked into 4 layers" in card
    if kernels.available():  # the virtual models are safetensors maps: every tensor through a fused kernel
        assert "fused kernels: 38 of 38" in card
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    tall = mk.model_tensors("tall_a")
    out2 = tmp_path / "out2"
    assert _run(root, monkeypatch, mk.CASES["slices_passthrough"][0], str(out2)) == 0
    got = read_model(out2)
    b = mk.model_tensors("tall_b")
    assert sorted({int(k.split(".")[2]) for k in got if ".layers." in k}) == list(range(6))
    assert got["model.layers.2.mlp.up_proj.weight"].equal(tall["model.layers.2.mlp.up_proj.weight"])
    assert got["model.layers.3.mlp.up_proj.weight"].equal(b["model.layers.1.mlp.up_proj.weight"])
    assert got["model.embed_tokens.weight"].equal(tall["model.embed_tokens.weight"])
    assert got["model.norm.weight"].equal(b["model.norm.weight"])


@pytest.mark.parametrize("text,needle", [
    ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n      - model: tall_a\n        layer_range: [2, 4]\n"
     "merge_method: linear\n", "listed twice in one slice"),
    ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n      - model: tall_b\n        layer_range: [0, 3]\n"
     "merge_method: linear\n", "span the same number of layers"),
    ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n        parameters: {densty: 0.5}\n"
     "      - model: tall_b\n        layer_range: [0, 2]\n      - model: tall_base\n        layer_range: [0, 2]\n"
     "merge_method: ties\nbase_model: tall_base\n", "Did you mean: density"),
    ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n      - model: tall_b\n        layer_range: [0, 2]\n"
     "merge_method: passthrough\n", "takes exactly 1 models"),
    ("models:\n  - model: tall_a\nslices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\nmerge_method: passthrough\n",
     "both models: and slices:"),
])
def test_slice_mistakes_refused_before_any_work(root, monkeypatch, text, needle, capsys, tmp_path):
    assert _run(root, monkeypatch, text, str(tmp_path / "out"), "--check") == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
