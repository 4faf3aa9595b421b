"""A chat as a Responses API request body, for an upstream that speaks Responses (pure, no I/O).

A `/v1/responses` request goes as the client sent it (its model the upstream's deployment, the token cap the
lowest of the caller's and the upstream's). A chat from another face becomes one: messages become input items
(tool calls `function_call`, tool results `function_call_output`), function tools and `tool_choice` their Responses
shapes, `response_format` `text.format`, `reasoning_effort` `reasoning.effort`; nothing is stored upstream. A chat
field the Responses API has no counterpart for is refused with 400 naming it, before any upstream call.
"""

from __future__ import annotations

from typing import Any

from chatsse.errors import UnsupportedParameter
from chatsse.schema import ChatRequest

SAME_NAME = (
    *("temperature", "top_p", "parallel_tool_calls", "metadata", "user", "store", "service_tier"),
    *("safety_identifier", "prompt_cache_key", "prompt_cache_retention"),
)
READ_HERE = (
    *("max_tokens", "tools", "tool_choice", "reasoning_effort", "response_format", "verbosity", "n"),
    *("logprobs", "top_logprobs", "stream_options"),
)


def responses_body(request: ChatRequest, model: str, cap: int | None, summaries: bool) -> dict[str, Any]:
    """The body for an upstream speaking Responses whose deployment is `model`, with the operator's token `cap`;
    `summaries` asks for the model's reasoning summaries (an upstream that relays reasoning)."""
    caps = [n for n in (request.params.get("max_tokens"), cap) if n is not None]
    if request.responses_body is not None:
        body = {**request.responses_body, "model": model, "stream": True}
        if caps:
            body["max_output_tokens"] = min(caps)
        return body
    body = {"model": model, "input": input_items(request.messages), "stream": True, "store": False}
    params = request.params
    for name, value in params.items():
        if name in SAME_NAME:
            body[name] = value
        elif name not in READ_HERE:
            _lacks(name)
    if caps:
        body["max_output_tokens"] = min(caps)
    if params.get("n", 1) != 1:
        _lacks("n", "one reply per request")
    if params.get("tools"):
        body["tools"] = [_tool(tool, index) for index, tool in enumerate(params["tools"])]
    choice = params.get("tool_choice")
    if choice is not None:
        body["tool_choice"] = choice if isinstance(choice, str) else {"type": "function", **choice["function"]}
    reasoning: dict[str, Any] = {}
    if params.get("reasoning_effort") is not None:
        reasoning["effort"] = params["reasoning_effort"]
    if summaries:
        reasoning["summary"] = "auto"
    if reasoning:
        body["reasoning"] = reasoning
    text: dict[str, Any] = {}
    form = params.get("response_format")
    if isinstance(form, dict) and form.get("type") == "json_schema":
        text["format"] = {"type": "json_schema", **form["json_schema"]}
    elif isinstance(form, dict) and form.get("type") == "json_object":
        text["format"] = {"type": "json_object"}
    if params.get("verbosity") is not None:
        text["verbosity"] = params["verbosity"]
    if text:
        body["text"] = text
    if params.get("logprobs"):
        body["top_logprobs"] = params.get("top_logprobs") or 0
        body["include"] = ["message.output_text.logprobs"]
    return body


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            output = content if isinstance(content, str) else _joined(content)
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": output})
            continue
        if role == "function":
            _lacks("messages[].role", 'a "function" turn (deprecated): send tool calls and tool results instead')
        if content is not None and content != []:
            items.append({"role": role, "content": _content(role, content)})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments", ""),
                }
            )
    return items


def _content(role: Any, content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    text_kind = "output_text" if role == "assistant" else "input_text"
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": text_kind, "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": part.get("refusal", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")})
        elif kind == "file":
            parts.append({"type": "input_file", **(part.get("file") or {})})
        else:
            _lacks(f"content part {kind!r}")
    return parts


def _joined(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        _lacks(f"tools[{index}].type")
    return {"type": "function", **tool["function"]}


def _lacks(name: str, instead: str = "") -> None:
    raise UnsupportedParameter(
        f'"{name}" has no counterpart in the Responses API, which the upstream serving this model speaks'
        + (f" ({instead})." if instead else "."),
        param=name,
    )
