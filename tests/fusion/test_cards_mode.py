"""`mode: cards` (CooK knowledge cards): each selector on hand-made inputs, then the mode on tiny random models."""
import json

import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.fusion.modes.cards import factuality_select, prune_text, relevance_select, split_sentences


def test_relevance_keeps_the_texts_closest_to_the_query():
    query = torch.tensor([1.0, 0.0])
    texts = torch.tensor([[0.0, 1.0], [10.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])  # cosines 0, ~0.995, -1, ~0.707
    assert relevance_select(query, texts, 2) == [1, 3]
    assert relevance_select(query, texts, 10) == [1, 3, 0, 2]


def test_pruning_keeps_the_best_sentences_in_order_within_the_budget():
    sentences = split_sentences("Cats purr. Dogs bark loudly!  Fish swim.\nBirds fly high in the sky.")
    assert sentences == ["Cats purr.", "Dogs bark loudly!", "Fish swim.", "Birds fly high in the sky."]
    sims = torch.tensor([0.1, 0.9, 0.2, 0.8])
    assert prune_text(sentences, sims, max_sentences=2, max_words=100) == "Dogs bark loudly! Birds fly high in the sky."
    assert prune_text(sentences, sims, max_sentences=2, max_words=4) == "Dogs bark loudly! Birds"


def test_factuality_keeps_the_highest_scores():
    assert factuality_select(torch.tensor([-3.0, -0.5, -2.0]), 2) == [1, 2]


def test_factuality_scores_are_the_large_models_mean_token_log_prob():
    from lm_helpers import make_llama, make_tokenizer

    from transfuse.fusion.modes.cards import factuality_scores

    model, tok = make_llama(layers=1, seed=0), make_tokenizer()
    got = factuality_scores(model, tok, ["w1 w2"], ["w3 w4"])
    ids = tok("w1 w2 w3 w4", return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None]).squeeze(1)
    assert got.item() == pytest.approx(float(logp[-2:].mean()), abs=1e-5)


@pytest.fixture
def folders(tmp_path):
    from lm_helpers import make_llama, make_tokenizer
    from transformers import BertConfig, BertModel

    paths = {}
    for name, seed in (("large", 1), ("card_a", 2), ("card_b", 3)):
        make_llama(layers=1, seed=seed).save_pretrained(tmp_path / name)
        make_tokenizer().save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=300)).save_pretrained(tmp_path / "enc")
    make_tokenizer().save_pretrained(tmp_path / "enc")
    paths["enc"] = str(tmp_path / "enc")
    return paths


def test_cards_mode_on_tiny_models(folders, tmp_path):
    from transfuse.fusion.modes.cards import run

    cfg = {"mode": "cards", "model": folders["large"], "cards": [folders["card_a"], folders["card_b"]],
           "queries": ["w1 w2 w3", "w5 w6"], "encoder": folders["enc"], "card_new_tokens": 6, "max_new_tokens": 4,
           "relevance": {"top_k": 2}, "factuality": {"top_k": 1}, "output": str(tmp_path / "cards.jsonl"),
           "template": "{knowledge} : {query}"}
    report = run(cfg)
    rows = [json.loads(l) for l in (tmp_path / "cards.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows == report["records"]
    for r in rows:
        assert len(r["cards"]) == 2 and len(r["relevant"]) == 2 and len(r["selected"]) == 1
        best = max(range(2), key=lambda j: r["factuality"][j])  # factuality is over the relevant list
        assert r["selected"] == [r["relevant"][best]]
        assert isinstance(r["answer"], str)
    with pytest.raises(TransfuseError, match="already exists"):
        run(cfg)
    with pytest.raises(TransfuseError, match="exactly one of prompts"):
        run({**cfg, "queries": None, "overwrite": True})
    with pytest.raises(TransfuseError, match="not a model folder"):
        run({**cfg, "encoder": str(tmp_path), "overwrite": True})


def test_queries_come_from_a_prompts_file_or_the_recipe(tmp_path):
    from transfuse.fusion.modes.cards import CardsConfig, _queries

    (tmp_path / "q.jsonl").write_text('{"prompt": "w1 w2"}\n{"prompt": "w3"}\n')
    assert _queries(CardsConfig(model="m", cards=["c"], prompts=str(tmp_path / "q.jsonl"))) == ["w1 w2", "w3"]
    assert _queries(CardsConfig(model="m", cards=["c"], queries=["a"])) == ["a"]
    with pytest.raises(TransfuseError, match="does not exist"):
        _queries(CardsConfig(model="m", cards=["c"], prompts=str(tmp_path / "none.txt")))


def test_a_card_that_writes_nothing_is_never_selected(folders, tmp_path, monkeypatch):
    from transfuse.fusion.modes import cards as mode

    real, calls = mode.generate_text, []

    def first_card_silent(model, tokenizer, prompt, *, max_new_tokens):
        calls.append(prompt)  # per query: card_a, card_b, then the large model's answer
        return "" if len(calls) == 1 else real(model, tokenizer, prompt, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(mode, "generate_text", first_card_silent)
    cfg = {"mode": "cards", "model": folders["large"], "cards": [folders["card_a"], folders["card_b"]],
           "queries": ["w1 w2 w3"], "encoder": folders["enc"], "card_new_tokens": 6, "max_new_tokens": 2,
           "relevance": {"top_k": 2}, "factuality": {"top_k": 2}, "output": str(tmp_path / "cards.jsonl"),
           "template": "{knowledge} : {query}"}
    row = mode.run(cfg)["records"][0]
    assert len(calls) == 3 and row["cards"][0]["text"] == "" and row["cards"][1]["text"] != ""
    assert row["relevant"] == [1] and row["selected"] == [1] and len(row["factuality"]) == 1
