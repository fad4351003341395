"""The parts of OpenAI's completion and chat-completion answers that the endpoint backend reads, as pydantic models.

Strict: a count sent as a string, a text sent as a number or an index sent as a string is an error naming
the field, never coerced (a server that garbles one field cannot be trusted with the others). Fields OpenAI
marks optional or that compatible servers omit (usage, finish_reason, a null chat content) may be absent;
unknown fields are ignored.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Answer(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class UsageBody(_Answer):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int | None = Field(None, ge=0)


class CompletionChoiceBody(_Answer):
    index: int = Field(ge=0)
    text: str
    finish_reason: str | None = None


class CompletionBody(_Answer):
    """POST /v1/completions answer."""

    choices: list[CompletionChoiceBody]
    usage: UsageBody | None = None


class ChatMessageBody(_Answer):
    content: str | None = None  # null for a refusal or a tool call: no text


class ChatChoiceBody(_Answer):
    index: int = Field(ge=0)
    message: ChatMessageBody
    finish_reason: str | None = None


class ChatCompletionBody(_Answer):
    """POST /v1/chat/completions answer."""

    choices: list[ChatChoiceBody]
    usage: UsageBody | None = None


def _where(loc: tuple) -> str:
    """'choices[0].text' from pydantic's ('choices', 0, 'text')."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the body"


def describe_error(e: ValidationError, content: bytes) -> str:
    """One line naming the first wrong field of an answer, what was expected and what came (shortened)."""
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return f"the answer is not JSON (it starts {content[:60].decode(errors='replace')!r})"
    text = f"{_where(err['loc'])}: {err['msg']}"
    if err["type"] != "missing":
        shown = json.dumps(err.get("input"), default=str)
        text += f" (got {shown[:60]}{' ...' if len(shown) > 60 else ''})"
    try:  # a server that answers 200 with an error object: say what it said
        body = json.loads(content)
        if isinstance(body, dict) and "error" in body and "choices" not in body:
            text += f"; the answer holds an error: {json.dumps(body['error'], default=str)[:200]}"
    except ValueError:
        pass
    extra = len(e.errors()) - 1
    return text + (f" (and {extra} more)" if extra else "")
