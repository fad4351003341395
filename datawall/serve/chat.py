"""Chat prompts: a checkpoint's own chat template when it has one (an imported instruct model), else datawall's.

datawall's template: the messages' contents concatenated, nothing added.

datawall checkpoints are base models trained on raw text (task prompts followed by worked solutions), so
they have no roles and no special turn tokens. The prompt of a chat request is therefore the plain
concatenation of every message's content in order (system, user and assistant alike). One user message is
exactly the raw prompt a task model was trained on (`"123+489="`), and a trailing assistant message acts
as a prefix the model continues (`[user "12+3=", assistant "1"]` -> the model writes what follows "12+3=1").
"""

from __future__ import annotations

from datawall.serve.schemas import ChatMessage


class ChatTemplateError(ValueError):
    """A message this template cannot render (e.g. an image content part); the message names the field."""


def as_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The messages as {"role", "content"} dicts with text content, for a checkpoint's Jinja chat template."""
    return [{"role": m.role, "content": _text(i, m)} for i, m in enumerate(messages)]


def render(messages: list[ChatMessage]) -> str:
    """The prompt text of a list of chat messages under datawall's template (above)."""
    return "".join(_text(i, m) for i, m in enumerate(messages))


def _text(i: int, m: ChatMessage) -> str:
    parts = []
    if isinstance(m.content, list):
        for j, part in enumerate(m.content):
            if part.type != "text" or part.text is None:
                raise ChatTemplateError(f"messages[{i}].content[{j}]: only text parts are supported, "
                                        f"got type {part.type!r}")
            parts.append(part.text)
    elif m.content is not None:
        parts.append(m.content)
    return "".join(parts)
