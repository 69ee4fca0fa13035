"""The up-scaling benchmark's evaluation functions compute what they claim (tiny random Llamas)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fusion_upscaling", ROOT / "benchmarks" / "fusion_upscaling.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_gap_closed_math():
    assert bench.gap_closed(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert bench.gap_closed(2.0, 3.0, 1.0) == pytest.approx(0.5)  # NLL: lower is better, same formula
    assert bench.gap_closed(0.2, 0.2, 0.8) == 0.0 and bench.gap_closed(0.8, 0.2, 0.8) == 1.0
    assert math.isnan(bench.gap_closed(0.3, 0.5, 0.5))


def test_normalise_answer():
    assert bench.normalise_answer(" 37.\nQuestion") == 37
    assert bench.normalise_answer("it is 105 apples, not 3") == 105
    assert bench.normalise_answer("none") is None


def test_exact_match_rows_by_hand():
    V = 12
    is_digit = torch.zeros(V, dtype=torch.bool)
    is_digit[:10] = True

    def lp(argmaxes):
        x = torch.full((len(argmaxes), V), -5.0)
        x[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 0.0
        return torch.log_softmax(x, -1)

    labels = torch.tensor([3, 7, 11, 4, 11, 5, 11])  # rows: "37\n", "4\n", "5\n"
    row = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    # row 0 right; row 1 writes "4" then another digit ("4x..." is a different number); row 2 closes with token 10, not newline
    got = bench.exact_match_rows(lp([3, 7, 11, 4, 2, 5, 10]), labels, row, is_digit, 3)
    assert got.tolist() == [True, False, True]
    got = bench.exact_match_rows(lp([3, 8, 11, 4, 11, 6, 11]), labels, row, is_digit, 3)
    assert got.tolist() == [False, True, False]


def _tiny(seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def test_evaluate_identities_on_tiny_models():
    from transfuse.lm.data import TokenDataset

    models = {n: _tiny(i) for i, n in enumerate(["large", "small", "small_ft", "large_ft"])}
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 24, (5, 8), generator=g)
    mask = torch.zeros(5, 8, dtype=torch.bool)
    mask[:, 4:7] = True
    labels = torch.where(mask, torch.roll(inputs, -1, 1), torch.tensor(-100))
    data = TokenDataset(inputs, labels, mask, torch.ones_like(inputs))
    is_digit = torch.zeros(24, dtype=torch.bool)
    is_digit[:10] = True
    out = bench.evaluate(models, data, bench.methods([0.0, 1.0]), is_digit=is_digit, batch_size=2)
    assert out["proxy alpha=0"]["nll"] == pytest.approx(out["large base"]["nll"], rel=1e-5)
    assert out["proxy alpha=0"]["em"] == out["large base"]["em"]
    assert out["eft beta=1"]["nll"] == pytest.approx(out["proxy alpha=1"]["nll"], rel=1e-5)
    # the large base's NLL is the plain mean cross-entropy over the counted tokens
    with torch.no_grad():
        logits = models["large"](input_ids=inputs).logits
    ref = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert out["large base"]["nll"] == pytest.approx(float(ref), rel=1e-5)
    assert out["proxy alpha=1"]["nll"] != pytest.approx(out["large base"]["nll"], rel=1e-3)
