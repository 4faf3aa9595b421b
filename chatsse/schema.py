"""What a chat request may contain: JSON body or query to the list of messages sent upstream, or a clear error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from chatsse.errors import InvalidJSON, InvalidRequest

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200
_BOM = b"\xef\xbb\xbf"

REASONING_EFFORTS = ("minimal", "low", "medium", "high")
BODY_FIELDS = ("message", "messages", "model", "temperature", "top_p", "max_tokens", "reasoning_effort")

Message = dict[str, Any]  # a turn in OpenAI's shape, as the upstream gets it


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat: the conversation, the model group it asks for, and every other field sent upstream."""

    messages: list[Message]
    model: str
    # temperature, top_p, max_tokens (the one cap, whatever the caller named it), ... as the caller sent them
    params: dict[str, Any] = field(default_factory=dict)
    # The face relays everything a reply can hold (refusals, tool calls, choices, logprobs); else text only.
    rich: bool = False
    # The /v1/responses body as the client sent it: what an upstream speaking Responses gets (None: other faces).
    responses_body: dict[str, Any] | None = None
    # The first field that only an upstream speaking Responses can serve (previous_response_id, a built-in tool...).
    responses_only: str | None = None
    # The upstream that must serve it (the one holding a stored response it refers to), else any of its group.
    pinned: str | None = None


def load_json(body: bytes) -> Any:
    """Parse a JSON body strictly: UTF-8 only, no lone surrogates, no NaN/Infinity, bounded depth."""
    try:
        return orjson.loads(body.removeprefix(_BOM))
    except orjson.JSONDecodeError as exc:
        # orjson's own text names positions only, but we word every error ourselves.
        if "surrogate" in str(exc) or "UTF-8" in str(exc):
            raise InvalidJSON(
                "The request body is not valid Unicode text: it holds bytes that are not UTF-8, or a \\u escape of "
                "half a surrogate pair (an emoji cut in two, for example). Send the text as valid UTF-8."
            ) from None
        raise InvalidJSON('The request body is not valid JSON. Send e.g. {"message": "Hello"}.') from None


def parse_query(raw: bytes) -> dict[str, str]:
    """A query string's parameters (the last of each name wins), refusing percent-escapes that are not UTF-8."""
    try:
        return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise InvalidRequest(
            "The query string is not valid UTF-8 text after percent-decoding. Encode it with encodeURIComponent."
        ) from None


def parse_chat_body(body: bytes, models: Sequence[str]) -> ChatRequest:
    """Validate `{"message": ...}` or `{"messages": [...]}` with optional model and parameters."""
    parsed = load_json(body)
    if not isinstance(parsed, dict):
        raise InvalidRequest('The request body must be a JSON object such as {"message": "Hello"}.')
    unknown = [key for key in parsed if key not in BODY_FIELDS]
    if unknown:
        raise InvalidRequest(f"Unknown field {_quoted(unknown[0])}; the fields are {', '.join(BODY_FIELDS)}.")
    if ("message" in parsed) == ("messages" in parsed):
        raise InvalidRequest('Send exactly one of "message" (a string) or "messages" (a list of turns).')
    messages = _one_turn(parsed["message"]) if "message" in parsed else _turns(parsed["messages"])
    return ChatRequest(messages, parse_model(parsed.get("model"), models), parse_params(parsed))


def parse_chat_query(query: dict[str, str], models: Sequence[str]) -> ChatRequest:
    """The chat for `GET ...?message=&model=` (EventSource cannot POST): one user turn."""
    message = query.get("message")
    if message is None:
        raise InvalidRequest("Add the message to the URL: /api/v1/chat/stream?message=<text>.")
    return ChatRequest(_one_turn(message), parse_model(query.get("model"), models))


def parse_model(value: Any, models: Sequence[str]) -> str:
    """The model group asked for (the first configured one when none is named)."""
    if value is None:
        return models[0]
    if not isinstance(value, str) or value not in models:
        raise InvalidRequest(f'"model" must be one of: {", ".join(models)} (GET /api/v1/models lists them).')
    return value


def parse_params(body: dict[str, Any]) -> dict[str, Any]:
    """The generation parameters a client may set, each checked for type and range."""
    params: dict[str, Any] = {}
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if not is_number(value) or not low <= value <= high:
            raise InvalidRequest(f'"{name}" must be a number from {low:g} to {high:g}.')
        params[name] = value
    tokens = body.get("max_tokens")
    if tokens is not None:
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= 1_000_000:
            raise InvalidRequest('"max_tokens" must be a whole number from 1 to 1000000.')
        params["max_tokens"] = tokens
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise InvalidRequest(f'"reasoning_effort" must be one of: {", ".join(REASONING_EFFORTS)}.')
        params["reasoning_effort"] = effort
    return params


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _quoted(key: str) -> str:
    return f'"{key}"' if key.isprintable() and len(key) <= 40 else "(unprintable or long)"


def _one_turn(message: Any) -> list[Message]:
    return [{"role": "user", "content": _text(message, '"message"')}]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string.")
    if not value.strip():
        raise InvalidRequest(f"{where} must not be empty.")
    return value


def _content(value: Any, where: str) -> str:
    """A turn's content: a string, or OpenAI's list of parts whose text parts are joined in order."""
    if not isinstance(value, list):
        return _text(value, where)
    texts: list[str] = []
    for index, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            named = (
                f'"{kind}"' if isinstance(kind, str) and kind.isprintable() and len(kind) <= 40 else "without a type"
            )
            raise InvalidRequest(
                f'{where}[{index}] is a part {named}; chatsse relays only text parts ({{"type": "text", "text": ...}}).'
            )
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}[{index}].text must be a string.")
        texts.append(part["text"])
    return _text("".join(texts), where)


def _turns(value: Any) -> list[Message]:
    """A conversation: turns of system, user and assistant text, the last one the user's."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest('"messages" must be a non-empty list of {"role": ..., "content": ...} objects.')
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(f'"messages" may hold at most {MAX_MESSAGES} turns.')
    turns: list[Message] = []
    for index, turn in enumerate(value):
        where = f'"messages"[{index}]'
        if not isinstance(turn, dict):
            raise InvalidRequest(f'{where} must be an object like {{"role": "user", "content": "Hello"}}.')
        role = turn.get("role")
        if role not in ROLES:
            raise InvalidRequest(f'{where}.role must be one of "system", "user", "assistant".')
        turns.append({"role": role, "content": _content(turn.get("content"), f"{where}.content")})
    if turns[-1]["role"] != "user":
        raise InvalidRequest('The last of "messages" must have the role "user".')
    return turns
