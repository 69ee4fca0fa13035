"""Named chat templates (``chat_template: chatml | llama3 | alpaca | mistral | auto``) against mergekit 0.1.5's.

tests/merge/mergekit_refs/chat_templates.json holds mergekit's shipped templates rendered on sample
conversations (scripts/mergekit_references.py, in mergekit's venv); transfuse's own templates, written
into the merged model by ``transfuse merge``, must render the same text."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from merge_helpers import write_model
from transfuse.cli import main as cli
from transfuse.merge.chat_templates import NAMED

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mergekit_references.py"
_spec = importlib.util.spec_from_file_location("mergekit_references", _SCRIPT)
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)
REFS = json.loads(mk.CHAT_REFS.read_text())


def _merge(tmp_path, monkeypatch, template: str, tokenizer_configs=None) -> dict:
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(("a", "b", "c")):
        write_model(tmp_path / name, {"w": torch.full((2, 2), float(i))})
        if tokenizer_configs and tokenizer_configs[i] is not None:
            (tmp_path / name / "tokenizer_config.json").write_text(json.dumps(tokenizer_configs[i]))
    (tmp_path / "c.yaml").write_text(f"models:\n  - model: a\n  - model: b\n  - model: c\nmerge_method: linear\nchat_template: {template}\n")
    try:
        cli(["merge", "c.yaml", "out"])
    except SystemExit as e:
        assert e.code in (0, None)
    path = tmp_path / "out" / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _render(template: str, messages, gen: bool) -> str:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        return _compile_jinja_template(template).render(messages=messages, add_generation_prompt=gen, bos_token="<s>", eos_token="</s>")
    except Exception:  # noqa: BLE001 - the template refuses this conversation, as mergekit's does
        return "ERROR"


@pytest.mark.parametrize("name", mk.CHAT_TEMPLATES)
def test_named_template_renders_as_mergekit(name, tmp_path, monkeypatch):
    written = _merge(tmp_path, monkeypatch, name)["chat_template"]
    assert written == NAMED[name]
    for conv, messages in mk.CONVERSATIONS.items():
        for gen in (False, True):
            assert _render(written, messages, gen) == REFS[f"{name}/{conv}/{gen}"], (name, conv, gen)


def test_auto_takes_the_most_common_template(tmp_path, monkeypatch):
    t1, t2 = "{{ 'one' }}{% for m in messages %}{% endfor %}", "{{ 'two' }}{% for m in messages %}{% endfor %}"
    got = _merge(tmp_path, monkeypatch, "auto", [{"chat_template": t1}, {"chat_template": t2}, {"chat_template": t2 + "\n"}])
    assert got["chat_template"] == t2


def test_auto_without_templates_writes_none(tmp_path, monkeypatch):
    assert "chat_template" not in _merge(tmp_path, monkeypatch, "auto")
