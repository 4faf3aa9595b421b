"""What a chat request may contain: JSON body or query to the list of messages sent upstream, or a clear error."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from chatsse.errors import InvalidJSON, InvalidRequest

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200
_BOM = b"\xef\xbb\xbf"

Message = dict[str, str]


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


def parse_chat_body(body: bytes) -> list[Message]:
    """Validate `{"message": ...}` or `{"messages": [...]}`; return the upstream `messages` list."""
    parsed = load_json(body)
    if not isinstance(parsed, dict):
        raise InvalidRequest('The request body must be a JSON object such as {"message": "Hello"}.')
    if ("message" in parsed) == ("messages" in parsed):
        raise InvalidRequest('Send exactly one of "message" (a string) or "messages" (a list of turns).')
    if "message" in parsed:
        return _one_turn(parsed["message"])
    return _turns(parsed["messages"])


def parse_chat_query(message: str | None) -> list[Message]:
    """The messages for `GET ...?message=` (EventSource cannot POST): one user turn."""
    if message is None:
        raise InvalidRequest("Add the message to the URL: /api/v1/chat/stream?message=<text>.")
    return _one_turn(message)


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
