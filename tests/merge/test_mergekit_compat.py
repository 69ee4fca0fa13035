"""transfuse merge on mergekit configs against mergekit 0.1.5's own outputs (tests/merge/mergekit_refs/).

The references come from scripts/mergekit_references.py (which rebuilds the same tiny Llama and
Mistral inputs from seeds); here transfuse runs ``transfuse merge CONFIG OUT`` on the unchanged
config and must match (with ``slices:``, also config.json's layer count; with a rebuilt vocabulary,
the output tokenizer's tokens, and the rows compared token by token): max abs err <= 1e-5 (one unit in the last place for 16-bit outputs) for
deterministic methods, the same delta statistics for the random DARE family."""
import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mergekit_references.py"
_spec = importlib.util.spec_from_file_location("mergekit_references", _SCRIPT)
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)

CASES = sorted(c for c in mk.CASES if (mk.REFS / f"{c}.safetensors").exists())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mergekit_inputs")
    mk.build_inputs(root)
    return root


def test_every_case_has_a_reference():
    assert CASES == sorted(mk.CASES)


@pytest.mark.parametrize("case", CASES)
def test_matches_mergekit(case, inputs):
    out = mk.run_transfuse(case, inputs)
    r = mk.compare(case, out)
    assert "missing" not in r, f"tensor names (or the output vocabulary) differ from mergekit's: {r}"
    assert r.get("layers_match", 1.0) == 1.0, f"config.json num_hidden_layers differs from mergekit's: {r}"
    if case in mk.DEVIATIONS:  # measured, explained differences (mergekit computes in 16 bits)
        max_err, fraction, why = mk.DEVIATIONS[case]
        assert r["max_abs_err"] <= max_err and r["differ_fraction"] <= fraction, (why, r)
        return
    assert r["dtype_match"] == 1.0, "output dtype differs from mergekit's"
    if mk.CASES[case][1] == "exact":
        if "dtype: float16" in mk.CASES[case][0] or "dtype: bfloat16" in mk.CASES[case][0]:  # a 16-bit output: within one unit in the last place
            assert r["ulp_violations"] == 0, r
        else:
            assert r["max_abs_err"] <= 1e-5, r
    else:
        assert r["kept_diff"] < 0.05 and r["mean_diff"] < 0.2 and r["std_rel_diff"] < 0.1, r
