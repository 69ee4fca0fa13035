"""Every bad input: one line on stderr, exit code 2, nothing written at the output path."""

import pytest
import torch
import yaml

from transfuse.cli import main

from merge_helpers import write_model


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def cfg_file(tmp_path, family, **changes):
    cfg = {"method": "ties", "base_model": str(family["paths"]["base"]), "output": str(tmp_path / "out"),
           "models": [{"model": str(family["paths"]["e0"])}, {"model": str(family["paths"]["e1"])}]}
    cfg.update(changes)
    p = tmp_path / "merge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_ok_merge_and_check(tmp_path, family, capsys):
    p = cfg_file(tmp_path, family)
    code, out, _ = run(["merge", p, "--check"], capsys)
    assert code == 0 and "ok" in out and not (tmp_path / "out").exists()
    code, out, _ = run(["merge", p, "parameters.density=0.5"], capsys)
    assert code == 0 and (tmp_path / "out" / "model.safetensors").exists()


BAD = {
    "missing_config": (None, ["does not exist"]),
    "unknown_method": ({"method": "tie"}, ["unknown merge-method 'tie'", "ties"]),
    "unknown_param": ({"parameters": {"densty": 0.2}}, ["no parameter 'densty'", "density"]),
    "bad_param_value": ({"parameters": {"density": 2.0}}, ["density must be in (0, 1]"]),
    "unknown_key": ({"modles": []}, ["unknown key 'modles'", "models"]),
    "missing_model": ({"models": [{"model": "/nonexistent/model"}]}, ["does not exist"]),
    "needs_base": ({"base_model": None}, ["needs base_model"]),
    "slerp_two": ({"method": "slerp", "models": "THREE"}, ["exactly 2 models"]),
    "bad_shard_size": ({"shard_size": "2 parsecs"}, ["shard_size"]),
    "bad_dtype": ({"out_dtype": "float17"}, ["out_dtype 'float17' is not a dtype"]),
    "no_statistics": ({"method": "fisher"}, ["data-driven", "statistics"]),
    "per_model_param": ({"models": "BADPARAM"}, ["not per-model"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config(tmp_path, family, capsys, case):
    changes, needles = BAD[case]
    if changes is None:
        p = tmp_path / "nope.yaml"
    else:
        changes = dict(changes)
        if changes.get("models") == "THREE":
            changes["models"] = [{"model": str(family["paths"][f"e{i}"])} for i in range(3)]
        if changes.get("models") == "BADPARAM":
            changes["models"] = [{"model": str(family["paths"]["e0"]), "parameters": {"gamma": 0.1}}]
        p = cfg_file(tmp_path, family, **changes)
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_pickle_refused_then_allowed(tmp_path, family, capsys):
    d = tmp_path / "pk"
    d.mkdir()
    torch.save(dict(family["experts"][2]), d / "pytorch_model.bin")
    (d / "config.json").write_text((family["paths"]["e0"] / "config.json").read_text())
    p = cfg_file(tmp_path, family, models=[{"model": str(d)}])
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, "pickle", "--allow-pickle")
    code, _, _ = run(["merge", p, "--allow-pickle"], capsys)
    assert code == 0 and (tmp_path / "out" / "model.safetensors").exists()


def test_lora_without_base(tmp_path, family, capsys):
    ad = tmp_path / "ad"
    ad.mkdir()
    from safetensors.torch import save_file

    save_file({"base_model.model.x.lora_A.weight": torch.zeros(1, 8), "base_model.model.x.lora_B.weight": torch.zeros(8, 1)}, str(ad / "adapter_model.safetensors"))
    (ad / "adapter_config.json").write_text('{"r": 1, "lora_alpha": 1}')
    p = cfg_file(tmp_path, family, method="linear", base_model=None, models=[{"model": str(ad)}])
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, "LoRA adapters need base_model")


def test_corrupt_safetensors(tmp_path, family, capsys):
    bad = write_model(tmp_path / "bad", {"w": torch.zeros(100)})
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    p = cfg_file(tmp_path, family, models=[{"model": str(bad)}])
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, "truncated")


def test_output_exists(tmp_path, family, capsys):
    (tmp_path / "out").mkdir()
    p = cfg_file(tmp_path, family)
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, "already exists")


def _variant(tmp_path, family, name, change, config=None):
    t = dict(family["experts"][0])
    change(t)
    return write_model(tmp_path / name, t, config=config)


PROBLEMS = {
    "shape": (lambda t: t.__setitem__("model.norm.weight", torch.zeros(9)), None, "shape mismatch: model.norm.weight"),
    "missing": (lambda t: t.pop("model.layers.0.mlp.bias"), None, "missing tensor"),
    "extra": (lambda t: t.__setitem__("extra.weight", torch.zeros(2)), None, "extra tensor"),
    "vocab": (lambda t: t.__setitem__("lm_head.weight", torch.zeros(11, 8)), None, "vocabulary size mismatch"),
    "arch": (lambda t: None, {"architectures": ["Other"], "model_type": "other"}, "architecture mismatch"),
    "dtype": (lambda t: t.__setitem__("model.norm.weight", torch.zeros(8, dtype=torch.int32)), None, "dtype mismatch"),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_check_reports_each_problem_in_one_line(tmp_path, family, capsys, case):
    change, config, needle = PROBLEMS[case]
    bad = _variant(tmp_path, family, "bad", change, config)
    p = cfg_file(tmp_path, family, models=[{"model": str(bad)}, {"model": str(family["paths"]["e1"])}])
    code, out, err = run(["merge", p, "--check"], capsys)
    assert code == 2
    lines = [l for l in out.splitlines() if l.startswith("problem: ")]
    assert any(needle in l for l in lines), out
    assert "Traceback" not in err
    # the merge itself refuses with the first problem, in one line
    code, _, err = run(["merge", p], capsys)
    assert_one_line_error(code, err, needle.split(":")[0])
    assert not (tmp_path / "out").exists()


def test_pickle_with_an_unsupported_dtype_is_one_line(tmp_path, family, capsys):
    d = tmp_path / "pk"
    d.mkdir()
    sd = dict(family["experts"][2])
    name = next(iter(sd))
    sd[name] = sd[name].to(torch.complex64)
    torch.save(sd, d / "pytorch_model.bin")
    (d / "config.json").write_text((family["paths"]["e0"] / "config.json").read_text())
    p = cfg_file(tmp_path, family, models=[{"model": str(d)}])
    code, _, err = run(["merge", p, "--allow-pickle"], capsys)
    assert_one_line_error(code, err, name, "complex64", "convert it")
    assert not (tmp_path / "out").exists()
