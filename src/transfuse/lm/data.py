"""Text for causal-LM distillation: plain text, JSONL instruction/chat data, HF datasets, the embedded corpora.

Every sample is a row of (N, T) tensors: ``inputs`` token ids, ``labels`` the next token where it
counts (-100 elsewhere), ``mask`` the logit positions that count, ``attention_mask``, and
``index`` the sample id (key of the teacher cache). Chat data counts only response tokens.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import TransfuseError

EMBEDDED = ("pydoc", "lee")


class TokenDataset(Dataset):
    """Token rows; a batch is {"inputs", "labels", "mask", "index", "attention_mask"} (B, T) each, index (B,)."""

    def __init__(self, inputs: Tensor, labels: Tensor, mask: Tensor, attention_mask: Tensor, index: Tensor | None = None,
                 position_ids: Tensor | None = None) -> None:
        self.inputs, self.labels, self.mask, self.attention_mask = inputs, labels, mask, attention_mask
        self.index = torch.arange(len(inputs)) if index is None else index
        self.position_ids = position_ids  # (N, T), packed rows only: positions restart at each document

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        rows = {
            "inputs": self.inputs[idx], "labels": self.labels[idx], "mask": self.mask[idx],
            "index": self.index[idx], "attention_mask": self.attention_mask[idx],
        }
        if self.position_ids is not None:
            rows["position_ids"] = self.position_ids[idx]
        return rows

    def subset(self, positions: Tensor) -> "TokenDataset":
        return TokenDataset(self.inputs[positions], self.labels[positions], self.mask[positions],
                            self.attention_mask[positions], self.index[positions],
                            None if self.position_ids is None else self.position_ids[positions])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in (self.inputs, self.mask, self.index) + (() if self.position_ids is None else (self.position_ids,)):
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class TrimmedBatches(Dataset):
    """``data`` whose batches are cut to their longest row (dynamic padding): rows are right-padded and
    attention is causal, so the cut columns change no counted token's loss, only the work."""

    def __init__(self, data: TokenDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, Tensor]:
        rows = self.data.__getitems__(indices)
        attended = rows["attention_mask"].any(0).nonzero()
        width = int(attended[-1]) + 1 if len(attended) else 1
        return {k: (v[:, :width] if v.dim() == 2 else v) for k, v in rows.items()}


def embedded_texts(name: str) -> List[str]:
    """Documents of a corpus that ships with Python or a package: ``pydoc`` (Python's topic help,
    465k characters) or ``lee`` (gensim's Lee news corpus, 300 documents; ``pip install gensim``)."""
    if name == "pydoc":
        from pydoc_data.topics import topics

        return [topics[k].strip() for k in sorted(topics) if topics[k].strip()]
    if name == "lee":
        spec = importlib.util.find_spec("gensim")
        if spec is None:
            raise TransfuseError("the lee corpus needs `pip install gensim`; or use data.source=pydoc")
        path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"
        return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    raise TransfuseError(f"unknown embedded corpus {name!r}; choose one of {', '.join(EMBEDDED)} or give a file path")


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                   "model": "assistant", "chatgpt": "assistant", "system": "system"}


def _turns(turns: List[Any], where: str) -> List[Dict[str, str]]:
    """Chat turns as {"role", "content"}; ShareGPT's {"from": "human" | "gpt" | "system", "value"} are mapped."""
    out = []
    for t in turns:
        if isinstance(t, dict) and "role" in t and "content" in t:
            out.append({"role": str(t["role"]), "content": str(t["content"])})
        elif isinstance(t, dict) and "from" in t and "value" in t:
            role = _SHAREGPT_ROLES.get(str(t["from"]).lower())
            if role is None:
                raise TransfuseError(
                    f"{where}: ShareGPT turn 'from': {t['from']!r} is not one of {', '.join(sorted(_SHAREGPT_ROLES))}"
                )
            out.append({"role": role, "content": str(t["value"])})
        else:
            raise TransfuseError(
                f"{where}: each chat turn needs 'role' and 'content' (or ShareGPT's 'from' and 'value'); got {str(t)[:80]!r}"
            )
    return out


def _record(obj: Any, where: str) -> Dict[str, Any]:
    if isinstance(obj, dict):
        for key in ("messages", "conversations", "conversation"):
            if key in obj and isinstance(obj[key], list):
                return {"messages": _turns(obj[key], where)}
        for p, r in (("prompt", "response"), ("instruction", "output"), ("prompt", "completion"), ("question", "answer")):
            if p in obj and r in obj:
                return {"messages": [{"role": "user", "content": str(obj[p])}, {"role": "assistant", "content": str(obj[r])}]}
        if "text" in obj:
            return {"text": str(obj["text"])}
    raise TransfuseError(
        f"{where}: each record needs 'text', 'messages' / 'conversations' (chat turns), or 'prompt' and 'response'; got {str(obj)[:80]!r}"
    )


def load_records(source: str, *, split: str = "train") -> List[Dict[str, Any]]:
    """Records {"text": ...} or {"messages": [...]} from a corpus name, a .txt/.jsonl file or folder,
    or ``hf:<dataset name>`` (needs the ``datasets`` package and the data set available)."""
    if source in EMBEDDED:
        return [{"text": t} for t in embedded_texts(source)]
    if source.startswith("hf:"):
        if importlib.util.find_spec("datasets") is None:
            raise TransfuseError("hf: data needs `pip install datasets`; or give a local .txt/.jsonl file")
        import datasets

        try:
            rows = datasets.load_dataset(source[3:], split=split)
        except Exception as exc:  # the hub is unreachable or the name is wrong
            raise TransfuseError(f"could not load Hugging Face data set {source[3:]!r} ({type(exc).__name__}); check the name or use a local file") from None
        return [_record(dict(r), source) for r in rows]
    path = Path(source)
    if not path.exists():
        raise TransfuseError(f"text data {source!r} is neither a file, a folder nor an embedded corpus ({', '.join(EMBEDDED)})")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".md")) if path.is_dir() else [path]
    records: List[Dict[str, Any]] = []
    for f in files:
        if f.suffix == ".jsonl":
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(_record(json.loads(line), f"{f}:{n}"))
                    except json.JSONDecodeError:
                        raise TransfuseError(f"{f}:{n} is not valid JSON; one JSON object per line") from None
        else:
            records += [{"text": block.strip()} for block in f.read_text(errors="replace").split("\n\n") if block.strip()]
    if not records:
        raise TransfuseError(f"no text found in {source!r}")
    return records


def _pack_texts(texts: List[str], tokenizer, seq_len: int) -> List[List[int]]:
    eos = tokenizer.eos_token_id
    stream: List[int] = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    return [stream[i : i + seq_len] for i in range(0, len(stream) - 1, seq_len) if len(stream[i : i + seq_len]) > 1]


SYSTEM_PROMPTS = ("none", "default")  # data.system_prompt: one of these, or the system text itself
_PLACEHOLDER = "\u2063transfuse-system\u2063"


def with_system_prompt(messages: List[Dict[str, str]], system_prompt: str) -> List[Dict[str, str]]:
    """The conversation as the template will see it: ``default`` keeps the record's turns (the template
    adds its own default system prompt where it has one), ``none`` drops system turns (and
    :func:`render_chat` the template's default), any other text replaces them by one system turn."""
    if system_prompt == "default":
        return messages
    rest = [m for m in messages if m.get("role") != "system"]
    return rest if system_prompt == "none" else [{"role": "system", "content": system_prompt}] + rest


def render_chat(tokenizer, messages: List[Dict[str, str]], *, system_prompt: str = "default",
                add_generation_prompt: bool = False) -> str:
    """The chat template's text of ``messages`` under the ``system_prompt`` rule.

    ``none`` with a template that inserts a default system prompt (SmolLM2's, Qwen's): the
    conversation is rendered behind a placeholder system turn whose rendered block (found by
    rendering it alone) is then cut off, keeping a BOS token that opens the text."""
    messages = with_system_prompt(messages, system_prompt)
    if system_prompt != "none":
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    block = tokenizer.apply_chat_template([{"role": "system", "content": _PLACEHOLDER}], tokenize=False)
    full = tokenizer.apply_chat_template([{"role": "system", "content": _PLACEHOLDER}] + messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    if _PLACEHOLDER not in block or not full.startswith(block):
        raise TransfuseError(
            "data.system_prompt=none: the chat template does not render a system turn as its own leading block, so "
            "it cannot be left out; give a template without a default system prompt (data.chat_template: file.jinja)"
        )
    rest = full[len(block):]
    if _PLACEHOLDER in rest:
        raise TransfuseError("data.system_prompt=none: the chat template repeats the system turn; give a template "
                             "without a default system prompt (data.chat_template: file.jinja)")
    bos = getattr(tokenizer, "bos_token", None) or ""
    # a BOS that opens the whole text (Llama 3's) stays; one that opens every turn is already in ``rest``
    return (bos if bos and block.startswith(bos) and not rest.lstrip().startswith(bos) else "") + rest


def _chat_rows(messages: List[Dict[str, str]], tokenizer, *, system_prompt: str = "default",
               loss_on: str = "assistant") -> Tuple[List[int], List[int]]:
    """Token ids of a conversation and, per token, 1 where it counts: in an assistant response
    (``loss_on="assistant"``) or anywhere (``"all"``)."""
    def ids(text: str) -> List[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if getattr(tokenizer, "chat_template", None):
        full = ids(render_chat(tokenizer, messages, system_prompt=system_prompt))
        if loss_on == "all":
            return full, [1] * len(full)
        turns = with_system_prompt(messages, system_prompt)
        counted = [0] * len(full)
        for i, m in enumerate(turns):
            if m.get("role") != "assistant":
                continue
            start = len(ids(render_chat(tokenizer, turns[:i], system_prompt=system_prompt, add_generation_prompt=True)))
            end = len(ids(render_chat(tokenizer, turns[: i + 1], system_prompt=system_prompt)))
            for j in range(start, min(end, len(full))):
                counted[j] = 1
        return full, counted
    full, counted = [], []
    for m in with_system_prompt(messages, system_prompt):
        piece = ids(m["content"] + "\n")
        full += piece
        counted += [int(m.get("role") == "assistant" or loss_on == "all")] * len(piece)
    return full, counted


def load_chat_template(tokenizer, path: str | None) -> None:
    """``data.chat_template``: the tokenizer's template replaced by a Jinja file's text (None: the model's own)."""
    if path is None:
        return
    f = Path(path).expanduser()
    if not f.is_file():
        raise TransfuseError(f"data.chat_template {path!r} is not a file; give a Jinja chat template file or leave it out")
    text = f.read_text()
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, chat_template=text)
    except Exception as exc:  # jinja2 syntax or render errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise TransfuseError(f"data.chat_template {path!r} does not render a conversation ({first}); fix the Jinja template") from None
    tokenizer.chat_template = text


def _pack_rows(rows: List[Tuple[List[int], List[int]]], seq_len: int):
    """Documents (in order) into rows of at most ``seq_len`` tokens, a new row when the next one does not
    fit; per token its position inside its document (the model's position ids)."""
    packed: List[Tuple[List[int], List[int], List[int]]] = []
    for ids, counted in rows:
        if not packed or len(packed[-1][0]) + len(ids) > seq_len:
            packed.append(([], [], []))
        packed[-1][0].extend(ids)
        packed[-1][1].extend([0] + counted[1:])  # a document's first token is never predicted from the one before
        packed[-1][2].extend(range(len(ids)))
    return packed


def tokenize_records(records: List[Dict[str, Any]], tokenizer, *, seq_len: int = 128, packing: bool = False,
                     system_prompt: str = "default", loss_on: str = "assistant") -> TokenDataset:
    """Plain text is packed into windows of ``seq_len`` tokens (all counted); each chat record is one
    row, truncated to ``seq_len``, counting only its response tokens.

    ``packing``: documents (each text, cut into ``seq_len`` windows, and each chat record) are placed
    one after another in rows of ``seq_len`` with ``position_ids`` restarting per document; given
    position ids and no attention mask, transformers' causal mask keeps attention inside each
    document (its packed-sequence mask), so a packed row computes what the documents alone would.

    ``system_prompt`` / ``loss_on``: see :func:`render_chat` and :func:`_chat_rows` (chat records only)."""
    if seq_len < 2:
        raise TransfuseError("seq_len must be at least 2")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    records = [_record(r, "records") for r in records]
    rows: List[Tuple[List[int], List[int]]] = []
    texts = [r["text"] for r in records if "text" in r]
    if packing:
        for t in texts:
            rows += [(w, [1] * len(w)) for w in _pack_texts([t], tokenizer, seq_len)]
    else:
        rows += [(w, [1] * len(w)) for w in _pack_texts(texts, tokenizer, seq_len)] if texts else []
    for r in records:
        if "messages" in r:
            ids, counted = _chat_rows(r["messages"], tokenizer, system_prompt=system_prompt, loss_on=loss_on)
            if any(counted[1:seq_len]):
                rows.append((ids[:seq_len], counted[:seq_len]))
    if not rows:
        raise TransfuseError("the data gave no sample with a counted token; check the records or raise seq_len")
    packed = _pack_rows(rows, seq_len) if packing else None
    if packed is not None:
        rows = [(ids, counted) for ids, counted, _ in packed]
    n = len(rows)
    inputs = torch.full((n, seq_len), pad, dtype=torch.long)
    labels = torch.full((n, seq_len), -100, dtype=torch.long)
    mask = torch.zeros(n, seq_len, dtype=torch.bool)
    attn = torch.zeros(n, seq_len, dtype=torch.long)
    for i, (ids, counted) in enumerate(rows):
        L = len(ids)
        inputs[i, :L] = torch.tensor(ids)
        attn[i, :L] = 1
        nxt = torch.tensor(counted[1:L], dtype=torch.bool)  # the logit at t predicts token t + 1
        mask[i, : L - 1] = nxt
        labels[i, : L - 1] = torch.where(nxt, torch.tensor(ids[1:L]), torch.tensor(-100))
    if packed is None:
        return TokenDataset(inputs, labels, mask, attn)
    positions = torch.zeros(n, seq_len, dtype=torch.long)
    for i, (_, _, pos) in enumerate(packed):
        positions[i, : len(pos)] = torch.tensor(pos)
        positions[i, len(pos):] = torch.arange(seq_len - len(pos))  # the padding tail: its own "document"
    return TokenDataset(inputs, labels, mask, attn, position_ids=positions)


def split_records(records: List[Dict[str, Any]], *, held_out: float = 0.1) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Deterministic split by record: every k-th record is held out."""
    if not 0.0 < held_out < 1.0:
        raise TransfuseError("held_out must lie strictly between 0 and 1")
    every = max(2, round(1 / held_out))
    return [r for i, r in enumerate(records) if i % every], [r for i, r in enumerate(records) if i % every == 0]
