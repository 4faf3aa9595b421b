"""OpenAI's chat completion request as `/v1/chat/completions` takes it: every field that Azure's api-version 2024-10-21,
its v1 API and OpenAI accept, each checked for its type and range only, and messages in every shape the SDKs send.
What the fields mean stays the upstream's to judge; which ones an upstream gets is `upstreams/shapes.py`'s (pure).

A bad field is a 400 in OpenAI's shape with the field's path in `param` (`tools[0].function.name`); a field that no
API version knows is a 400 naming it; `null` means "not sent", as in OpenAI's API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from chatsse.errors import InvalidRequest, ModelNotFound
from chatsse.schema import ChatRequest, is_number

MAX_MESSAGES = 4096  # an agent's long tool loop stays well inside this; the upstream's context is the real bound
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PARTS = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
IMAGE_DETAILS = ("auto", "low", "high")
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
STREAM_OPTIONS = ("include_usage", "include_obfuscation")
Check = Callable[[Any, str], None]


def invalid(where: str, rule: str) -> InvalidRequest:
    """The 400 for a field at `where` (a path such as `messages[2].content`) that is not `rule`."""
    return InvalidRequest(f'"{where}" must be {rule}.', param=where)


def _number(low: float, high: float) -> Check:
    def check(value: Any, where: str) -> None:
        if not is_number(value) or not low <= value <= high:
            raise invalid(where, f"a number from {low:g} to {high:g}")

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise invalid(where, f"a whole number from {low} to {high}")

    return check


def _is(kind: type, rule: str) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, kind):
            raise invalid(where, rule)

    return check


_boolean, _string, _object = _is(bool, "true or false"), _is(str, "a string"), _is(dict, "an object")


def _typed(value: Any, where: str, kinds: Sequence[str] | None = None) -> str:
    """An object with a string `type` (one of `kinds`, when given); returns the type."""
    _object(value, where)
    kind = value.get("type")
    if not isinstance(kind, str) or (kinds is not None and kind not in kinds):
        raise invalid(f"{where}.type", "one of " + ", ".join(kinds) if kinds else "a string")
    return kind


def _list_of(item: Check, at_most: int | None = None) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list) or (at_most is not None and len(value) > at_most):
            raise invalid(where, "a list" + (f" of at most {at_most}" if at_most is not None else ""))
        for index, element in enumerate(value):
            item(element, f"{where}[{index}]")

    return check


def _stop(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _list_of(_string, at_most=4)(value, where)


def _logit_bias(value: Any, where: str) -> None:
    _object(value, where)
    for token, bias in value.items():
        if not token.isdigit() or not is_number(bias) or not -100 <= bias <= 100:
            raise invalid(where, "an object of token ids to numbers from -100 to 100")


def _metadata(value: Any, where: str) -> None:
    _object(value, where)
    if not all(isinstance(v, str) for v in value.values()):
        raise invalid(where, "an object of strings")


def _function(value: Any, where: str) -> None:
    _object(value, where)
    _string(value.get("name"), f"{where}.name")
    for key, check in (("description", _string), ("parameters", _object), ("strict", _boolean)):
        if value.get(key) is not None:
            check(value[key], f"{where}.{key}")


def _tool(value: Any, where: str) -> None:
    if _typed(value, where) == "function":
        _function(value.get("function"), f"{where}.function")


def _tool_choice(value: Any, where: str) -> None:
    if isinstance(value, str):
        if value not in TOOL_CHOICES:
            raise invalid(where, "one of " + ", ".join(TOOL_CHOICES) + ", or an object naming a tool")
    elif _typed(value, where) == "function":
        _object(value.get("function"), f"{where}.function")
        _string(value["function"].get("name"), f"{where}.function.name")


def _function_call(value: Any, where: str) -> None:
    if isinstance(value, str):
        if value not in ("none", "auto"):
            raise invalid(where, 'none, auto, or {"name": ...}')
    else:
        _object(value, where)
        _string(value.get("name"), f"{where}.name")


def _response_format(value: Any, where: str) -> None:
    if _typed(value, where, RESPONSE_FORMATS) == "json_schema":
        schema = value.get("json_schema")
        _object(schema, f"{where}.json_schema")
        _string(schema.get("name"), f"{where}.json_schema.name")
        for key, check in (("schema", _object), ("strict", _boolean), ("description", _string)):
            if schema.get(key) is not None:
                check(schema[key], f"{where}.json_schema.{key}")


# Every request field chatsse knows, with its cheap check. `model`, `messages`, `stream`, `stream_options`,
# `max_tokens` and `max_completion_tokens` are read by `parse_completion` itself.
FIELDS: dict[str, Check] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _integer(1, 128),
    "stop": _stop,
    "seed": _integer(-(2**63), 2**63 - 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "logit_bias": _logit_bias,
    "logprobs": _boolean,
    "top_logprobs": _integer(0, 20),
    "user": _string,
    "tools": _list_of(_tool),
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "response_format": _response_format,
    "reasoning_effort": _string,
    "prediction": _object,
    "metadata": _metadata,
    "store": _boolean,
    "modalities": _list_of(_string),
    "audio": _object,
    "service_tier": _string,
    "verbosity": _string,
    "web_search_options": _object,
    "prompt_cache_key": _string,
    "prompt_cache_retention": _string,
    "safety_identifier": _string,
    "functions": _list_of(_function),
    "function_call": _function_call,
    "data_sources": _list_of(_object),  # Azure's "On Your Data"
}
READ_HERE = ("model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens")
KNOWN = (*READ_HERE, *FIELDS)
TOKEN_CAP = _integer(1, 1_000_000)


def check_field(name: str, value: Any) -> None:
    """Check one optional field (also for faces that take a few of them, such as useChat's `tools`)."""
    FIELDS[name](value, name)


def parse_completion(body: Any, models: Sequence[str]) -> tuple[ChatRequest, bool, bool]:
    """The chat, whether to stream it, and whether the caller asked for the usage chunk."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object (a chat completion request).")
    unknown = [key for key in body if key not in KNOWN]
    if unknown:
        name = unknown[0][:60]
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {name!r}. No Azure OpenAI or OpenAI API version knows it.",
            param=name,
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest('"model" is required: one of GET /v1/models.', param="model")
    if model not in models:
        raise ModelNotFound(f"The model {model[:60]!r} does not exist on this gateway. GET /v1/models lists them.")
    params: dict[str, Any] = {}
    for name, check in FIELDS.items():
        value = body.get(name)
        if value is not None:
            check(value, name)
            params[name] = value
    caps = []
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None:
            TOKEN_CAP(body[name], name)
            caps.append(body[name])
    if caps:
        params["max_tokens"] = min(caps)  # one cap; each upstream gets it under the name its API knows
    stream = body.get("stream")
    if stream is not None:
        _boolean(stream, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        _object(options, "stream_options")
        for key, value in options.items():
            if key not in STREAM_OPTIONS:
                raise invalid(f"stream_options.{key[:40]}", "left out: the options are " + ", ".join(STREAM_OPTIONS))
            _boolean(value, f"stream_options.{key}")
        include_usage = bool(options.get("include_usage"))
        extra = {key: value for key, value in options.items() if key != "include_usage"}
        if extra:
            params["stream_options"] = extra  # chatsse always asks for usage itself, to charge the caller
    return ChatRequest(parse_messages(body.get("messages")), model, params, rich=True), bool(stream), include_usage


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """OpenAI's messages, checked and returned as they came: parts are never joined or reordered."""
    if not isinstance(value, list) or not value:
        raise invalid("messages", 'a non-empty list of {"role": ..., "content": ...} objects')
    if len(value) > MAX_MESSAGES:
        raise invalid("messages", f"a list of at most {MAX_MESSAGES} messages")
    for index, message in enumerate(value):
        _message(message, f"messages[{index}]")
    return value


def _message(message: Any, where: str) -> None:
    _object(message, where)
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role", "one of " + ", ".join(ROLES))
    if message.get("name") is not None:
        _string(message["name"], f"{where}.name")
    content = message.get("content")
    if content is None:
        if role not in ("assistant", "function"):  # an assistant turn may hold only tool calls or a refusal
            raise invalid(f"{where}.content", "a string or a list of content parts")
    elif not isinstance(content, str):
        kinds = PARTS.get(role, ("text",))
        if not isinstance(content, list) or not content:
            raise invalid(f"{where}.content", "a string or a non-empty list of content parts")
        for number, part in enumerate(content):
            _part(part, f"{where}.content[{number}]", kinds)
    if role == "assistant":
        if message.get("tool_calls") is not None:
            _list_of(_tool_call)(message["tool_calls"], f"{where}.tool_calls")
        if message.get("refusal") is not None:
            _string(message["refusal"], f"{where}.refusal")
    elif role == "tool":
        _string(message.get("tool_call_id"), f"{where}.tool_call_id")
    elif role == "function":
        _string(message.get("name"), f"{where}.name")


def _tool_call(value: Any, where: str) -> None:
    _typed(value, where)
    _string(value.get("id"), f"{where}.id")
    function = value.get("function")
    _object(function, f"{where}.function")
    _string(function.get("name"), f"{where}.function.name")
    _string(function.get("arguments"), f"{where}.function.arguments")


def _part(part: Any, where: str, kinds: Sequence[str]) -> None:
    kind = _typed(part, where, kinds)
    if kind in ("text", "refusal"):
        _string(part.get(kind), f"{where}.{kind}")
    elif kind == "image_url":
        image = part.get("image_url")
        _object(image, f"{where}.image_url")
        url = image.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
            raise invalid(f"{where}.image_url.url", "an https URL or a data: URL")
        if image.get("detail") is not None and image["detail"] not in IMAGE_DETAILS:
            raise invalid(f"{where}.image_url.detail", "one of " + ", ".join(IMAGE_DETAILS))
    elif kind == "input_audio":
        audio = part.get("input_audio")
        _object(audio, f"{where}.input_audio")
        _string(audio.get("data"), f"{where}.input_audio.data")
        _string(audio.get("format"), f"{where}.input_audio.format")
    else:
        _object(part.get("file"), f"{where}.file")
