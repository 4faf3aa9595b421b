"""What a chat request may contain: JSON body to the list of messages sent upstream, or a clear InvalidRequest."""

from __future__ import annotations

import json
from typing import Any

from chatsse.errors import InvalidJSON, InvalidRequest

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 200

Message = dict[str, str]


def parse_chat_body(body: bytes) -> list[Message]:
    """Validate `{"message": ...}` or `{"messages": [...]}`; return the upstream `messages` list."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON('The request body is not valid JSON. Send e.g. {"message": "Hello"}.') from None
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
        turns.append({"role": role, "content": _text(turn.get("content"), f"{where}.content")})
    if turns[-1]["role"] != "user":
        raise InvalidRequest('The last of "messages" must have the role "user".')
    return turns
