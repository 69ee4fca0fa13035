"""mergekit-yaml's flags and tokenizer keys on ``transfuse merge``: each accepted with its meaning or refused by name."""
import json

import pytest
import torch

from merge_helpers import read_model, write_model
from transfuse.cli import main as cli


def _run(args):
    try:
        cli(args)
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        write_model(tmp_path / name, {"w": torch.randn(4, 4, generator=g)})
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps({"name": name}))
    (tmp_path / "c.yaml").write_text("models:\n  - model: a\n  - model: b\nmerge_method: linear\n")
    return tmp_path


def test_no_copy_tokenizer_and_value_flags(folder):
    assert _run(["merge", "c.yaml", "out", "--no-copy-tokenizer", "--out-shard-size", "1MB", "--random-seed", "3",
                 "--allow-crimes", "-j", "1"]) == 0
    assert (folder / "out" / "config.json").exists() and not (folder / "out" / "tokenizer_config.json").exists()
    assert set(read_model(folder / "out")) == {"w"}


def test_tokenizer_source_and_chat_template(folder):
    with open(folder / "c.yaml", "a") as f:
        f.write("tokenizer_source: b\nchat_template: \"{{ messages | length }} messages\"\n")
    assert _run(["merge", "c.yaml", "out"]) == 0
    tc = json.loads((folder / "out" / "tokenizer_config.json").read_text())
    assert tc == {"name": "b", "chat_template": "{{ messages | length }} messages"}


@pytest.mark.parametrize("flag,needle", [("--no-safe-serialization", "--no-safe-serialization is refused"),
                                         ("--bogus", "unknown flag --bogus")])
def test_refused_flags_name_themselves(folder, flag, needle, capsys):
    assert _run(["merge", "c.yaml", "out", flag]) == 2
    assert needle in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_no_write_model_card_and_cpu_flags(folder, capsys):
    """--no-write-model-card: no README.md; GPU flags: accepted with a note (the merge runs on CPU, same values)."""
    assert _run(["merge", "c.yaml", "out", "--no-write-model-card", "--cuda", "--device", "cuda:1", "--gpu-rich"]) == 0
    err = capsys.readouterr().err
    assert "--cuda: accepted, ignored" in err and "--device cuda:1" in err
    assert not (folder / "out" / "README.md").exists() and (folder / "out" / "transfuse_merge.json").exists()
    assert not (folder / "out" / "mergekit_config.yml").exists()
    assert _run(["merge", "c.yaml", "out2", "--write-model-card"]) == 0
    assert (folder / "out2" / "README.md").exists()
    assert (folder / "out2" / "mergekit_config.yml").read_text() == (folder / "c.yaml").read_text()  # as mergekit-yaml


def test_unsafe_truncate_embeddings_is_vocab_policy_truncate(folder):
    write_model(folder / "big", {"w": torch.ones(6, 4)})
    (folder / "v.yaml").write_text("models:\n  - model: a\n  - model: big\nmerge_method: linear\n")
    # w is not a vocabulary tensor by name: still a shape mismatch, caught before any work
    assert _run(["merge", "v.yaml", "out", "--unsafe-truncate-embeddings"]) == 2
    write_model(folder / "e1", {"model.embed_tokens.weight": torch.zeros(4, 2)})
    write_model(folder / "e2", {"model.embed_tokens.weight": torch.ones(6, 2)})
    (folder / "e.yaml").write_text("models:\n  - model: e1\n  - model: e2\nmerge_method: linear\n")
    assert _run(["merge", "e.yaml", "out", "--unsafe-truncate-embeddings"]) == 0
    assert torch.equal(read_model(folder / "out")["model.embed_tokens.weight"], torch.full((4, 2), 0.5))


@pytest.mark.parametrize("line,needle", [("tokenizer_source: union", "no tokenizer transformers can load"), ("chat_template: chatmlx", "neither a named template"),
                                         ("tokenizer_source: zzz", "neither base"), ("slices: [{sources: [{model: a, layer_range: [0, 1]}]}]", "both models: and slices:"),
                                         ("tokenizer: {source: union}", "tokenizer:")])
def test_refused_keys_name_themselves(folder, line, needle, capsys):
    with open(folder / "c.yaml", "a") as f:
        f.write(line + "\n")
    assert _run(["merge", "c.yaml", "out"]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("params,needle", [
    ("{weight: [1, abc]}", "only numbers"), ("{weight: true}", "weight must be a number"),
    ("{densty: 0.2}", "Did you mean: density"), ("{density: [{filter: mlp}]}", "{filter: NAME_PART, value: ...}"),
    ("{density: []}", "expected a number"), ("{density: [0.1, 0.5, abc]}", "only numbers"),
    ("{density: 1.5}", "density must be in (0, 1]")])
def test_check_refuses_before_any_work(folder, params, needle, capsys):
    """--check names every config mistake that would otherwise fail mid-merge, and writes nothing."""
    import torch as _t
    write_model(folder / "base", {"w": _t.zeros(4, 4)})
    (folder / "k.yaml").write_text(f"models:\n  - model: a\n    parameters: {params}\n  - model: b\nbase_model: base\nmerge_method: ties\n")
    assert _run(["merge", "k.yaml", "out", "--check"]) == 2
    assert needle in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_check_accepts_gradient_and_filter_lists(folder, capsys):
    import torch as _t
    write_model(folder / "base", {"w": _t.zeros(4, 4)})
    (folder / "k.yaml").write_text("models:\n  - model: a\n    parameters: {density: [0.2, 0.5], weight: [{filter: w, value: 0.3}, {value: 1}]}\n"
                                   "  - model: b\nbase_model: base\nmerge_method: ties\n")
    assert _run(["merge", "k.yaml", "out", "--check"]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("config,needle", [
    # a gradient whose value leaves the range (here at t = 0: the per-model epsilon band)
    ("models:\n  - model: a\n    parameters: {density: 0.5, epsilon: [0.9, 0.1]}\n  - model: b\nbase_model: base\nmerge_method: della\n",
     "epsilon 0.9 must keep density"),
    ("models:\n  - model: a\n    parameters: {weight: 1.0}\n  - model: b\n    parameters: {weight: -1.0}\nmerge_method: linear\n",
     "the weights sum to 0"),
    ("models:\n  - model: a\n  - model: b\nmerge_method: linear\nshard_size: 5Q\n", "shard_size '5Q' is not a size"),
    ("models:\n  - model: a\n  - model: b\nmerge_method: linear\nconfig_from: nowhere\n", "config_from 'nowhere' does not exist"),
    ("models:\n  - model: a\nbase_model: base\nmerge_method: model_stock\n", "takes at least 2 models"),
    ("models:\n  - model: a\n  - model: b\nbase_model: base\nmerge_method: ties\nparameters: {normalize: maybe}\n", "must be true or false"),
    ("slices:\n  - sources:\n      - model: la\n        layer_range: [0, 3]\nmerge_method: passthrough\n", "outside its 2 layers"),
    ("slices:\n  - sources:\n      - model: la\n        layer_range: [0, 1]\n      - model: lb\n        layer_range: [0, 1]\nmerge_method: ties\n",
     "needs a base model among the slice's sources"),
])
def test_check_refuses_what_would_fail_mid_merge(folder, config, needle, capsys):
    """Each of these used to pass --check (or fail only once the merge ran): now refused before any work."""
    write_model(folder / "base", {"w": torch.zeros(4, 4)})
    for name in ("la", "lb"):
        write_model(folder / name, {f"model.layers.{i}.w": torch.ones(2, 2) for i in range(2)})
    (folder / "k.yaml").write_text(config)
    assert _run(["merge", "k.yaml", "out", "--check"]) == 2
    assert needle in capsys.readouterr().err
    assert _run(["merge", "k.yaml", "out"]) == 2
    assert not (folder / "out").exists() and not list(folder.glob(".out*"))


def test_allow_crimes_merges_other_architectures(folder, capsys):
    """Without --allow-crimes an architecture mismatch stops the merge; with it, the tensors merge (as mergekit)."""
    write_model(folder / "other", {"w": torch.ones(4, 4)}, config={"architectures": ["OtherNet"], "model_type": "other"})
    (folder / "x.yaml").write_text("models:\n  - model: a\n  - model: other\nmerge_method: linear\ndtype: bfloat16\n")
    assert _run(["merge", "x.yaml", "out", "--check"]) == 2
    assert "architecture mismatch" in capsys.readouterr().out
    assert _run(["merge", "x.yaml", "out", "--allow-crimes"]) == 0
    assert "architecture mismatch" in (folder / "out" / "README.md").read_text()
    cfg = json.loads((folder / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["TinyNet"]
    assert read_model(folder / "out")["w"].dtype == torch.bfloat16


def test_check_refuses_statistics_of_the_wrong_shape(folder, capsys):
    """A Fisher statistic whose shape is not its tensor's would fail mid-merge: --check names it."""
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4, 4)}, str(folder / "fa.safetensors"))
    save_file({"w": torch.ones(2, 8)}, str(folder / "fb.safetensors"))
    (folder / "f.yaml").write_text("method: fisher\nmodels:\n  - model: a\n    parameters: {statistics: fa.safetensors}\n"
                                   "  - model: b\n    parameters: {statistics: fb.safetensors}\n")
    assert _run(["merge", "f.yaml", "out", "--check"]) == 2
    assert "'b''s statistics give w the shape [2, 8]; fisher needs [4, 4]" in capsys.readouterr().out
