"""mergekit's named chat templates (``chat_template: chatml | llama3 | alpaca | mistral | auto``).

Written here from the formats' documentation (ChatML; Meta's Llama 3 header/eot format; Alpaca's
``### Instruction:`` / ``### Response:`` blocks; Mistral's ``[INST]`` turns) so that, rendered the way
transformers renders chat templates (jinja2 with ``trim_blocks`` and ``lstrip_blocks``), each gives
the same text as the template mergekit 0.1.5 ships under that name, its quirks included: llama3
trims each message and ends every turn with a newline, alpaca puts the generation prompt right
after the last message, mistral has no generation prompt. ``tests/merge/test_chat_templates.py``
compares the renders with mergekit's on sample conversations. ``auto`` (mergekit
``_set_chat_template``): the template most of the input models carry, none when none does.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

from ..errors import TransfuseError

_ALPACA_HEAD = {"user": "### Instruction:", "assistant": "### Response:", "user_context": "### Input:"}

NAMED = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim) + '<|eot_id|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% set systems = messages | selectattr('role', 'equalto', 'system') | list %}"
        "{{ ((systems | last).content | trim) if systems else '' }}{{ '\\n\\n' }}"
        "{% set heads = " + json.dumps(_ALPACA_HEAD) + " %}"
        "{% for m in messages %}{% if m['role'] in heads %}{{ heads[m['role']] + '\\n' + (m['content'] | trim) }}"
        "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "mistral": (
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
        "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}{{ bos_token }}"
        "{% for m in turns %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if m['role'] == 'user' %}{{ ' [INST] ' + ((system_message + '\\n\\n') if (loop.first and system_message is defined) else '') + m['content'] + ' [/INST]' }}"
        "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}{% endif %}"
        "{% endfor %}"
    ),
}


def model_template(folder: Path) -> Optional[str]:
    """The chat template a model folder carries (tokenizer_config.json or chat_template.jinja), stripped."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text().strip() or None
    try:
        t = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(t, list):  # named templates: [{name, template}]
        t = next((e.get("template") for e in t if isinstance(e, dict) and e.get("name") == "default"), None)
    return t.strip() if isinstance(t, str) and t.strip() else None


def check(value: str) -> None:
    """mergekit's rule: a name it ships, ``auto``, or template text (with ``{``, at least 20 characters)."""
    if value == "auto" or value in NAMED:
        return
    if len(value) < 20 or "{" not in value:
        raise TransfuseError(f"chat_template {value!r} is neither a named template ({', '.join(sorted(NAMED))}, auto) "
                             "nor Jinja template text")


def resolve(value: Optional[str], models: Iterable[str]) -> Optional[str]:
    """The template text to write: a named one, the inputs' most common (``auto``), or the text given."""
    if value is None:
        return None
    if value == "auto":
        found = [t for t in (model_template(Path(m)) for m in dict.fromkeys(models)) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    return NAMED.get(value, value)
