"""Chat templates: a checkpoint's Jinja template rendered as transformers renders it, without transformers.

transformers compiles `chat_template` in an immutable sandbox with trim_blocks and lstrip_blocks, the
loopcontrols extension, `raise_exception` and `strftime_now` as globals and a `tojson` filter that keeps
non-ASCII text; the same environment here renders the same string (tests compare against
`apply_chat_template`).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from datawall.errors import DatawallError


class ChatTemplateError(DatawallError):
    """The template refused the messages or could not be compiled."""


def _raise(message: str) -> None:
    raise ChatTemplateError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template does not compile ({e})") from None


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """The messages as a list of {"role": str, "content": str} dicts; ChatTemplateError naming the bad one."""
    if not isinstance(messages, list) or not messages:
        raise ChatTemplateError("chat: messages must be a non-empty list of {role, content}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"chat: messages[{i}] must be {{'role': str, 'content': str}}, got {m!r:.80}")
    return messages


def render_chat(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                **special_tokens: str | None) -> str:
    """The template applied to messages (special tokens such as bos_token available to it by name)."""
    import jinja2

    check_messages(messages)
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **special_tokens)
    except ChatTemplateError:
        raise
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"chat template failed on these messages ({e})") from None
