"""A Responses API request (`POST /v1/responses`), checked, and as a chat for upstreams that speak chat completions
(pure, no I/O).

The body is kept as the client sent it, for upstreams that speak Responses (full fidelity). For a chat upstream it
is translated: `instructions` and `input` (a string, or messages and `function_call`/`function_call_output` items)
become messages, function tools and `tool_choice` their chat shapes, `text.format` a `response_format`,
`max_output_tokens` the one token cap, `reasoning.effort` `reasoning_effort`. What a chat upstream cannot do
(`previous_response_id`, built-in tools, `background`, ...) is named in `responses_only`, so that such a request
goes to an upstream speaking Responses or gets a 400 naming the field, before any upstream call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatsse.completion_request import check_field, invalid
from chatsse.errors import InvalidRequest, ModelNotFound
from chatsse.responses.items import InputItems
from chatsse.schema import ChatRequest

# Every top-level field of the Responses API's create request. A responses upstream gets them all as sent.
KNOWN = tuple(
    """access_programs background background_options client_metadata context_management conversation image include
    input instructions max_output_tokens max_tool_calls metadata model moderation parallel_tool_calls
    previous_response_id prompt prompt_cache_key prompt_cache_options prompt_cache_retention reasoning
    safety_identifier service_tier store stream stream_options temperature text tool_choice tools top_logprobs top_p
    truncation user""".split()
)  # client_metadata: what Codex CLI says of itself (a chat upstream has no use for it)
# Fields that only a Responses upstream can serve (they need its stored state or its own tools).
RESPONSES_ONLY = (
    "previous_response_id",
    "conversation",
    "prompt",
    "context_management",
    "background_options",
    "access_programs",
    "image",
    "moderation",
    "max_tool_calls",
)
# Passed to a chat upstream under the same name (`shapes.py` drops or refuses what its api-version lacks).
SAME_NAME = (
    *("temperature", "top_p", "parallel_tool_calls", "metadata", "user", "service_tier", "safety_identifier"),
    *("prompt_cache_key", "prompt_cache_retention"),
)


@dataclass(frozen=True)
class ResponsesRequest:
    """A checked `/v1/responses` request: the chat it becomes, and whether to stream it."""

    chat: ChatRequest
    stream: bool
    body: dict[str, Any]


def parse_responses(body: Any, models: Sequence[str]) -> ResponsesRequest:
    """Check a Responses API body; a bad field is a 400 naming it in `param`, an unknown model a 404."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object (a Responses API request).")
    unknown = [key for key in body if key not in KNOWN]
    if unknown:
        name = unknown[0][:60]
        raise InvalidRequest(f"Unknown parameter: {name!r}. The Responses API does not know it.", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest('"model" is required: one of GET /v1/models.', param="model")
    if model not in models:
        raise ModelNotFound(f"The model {model[:60]!r} does not exist on this gateway. GET /v1/models lists them.")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "true or false")
    if body.get("input") is None and body.get("previous_response_id") is None and body.get("prompt") is None:
        raise invalid("input", "a string or a list of input items")
    translation = _Translation(body)
    chat = ChatRequest(
        translation.messages,
        model,
        translation.params,
        rich=True,
        responses_body=body,
        responses_only=translation.responses_only,
    )
    return ResponsesRequest(chat, bool(stream), body)


class _Translation:
    """The body as a chat: its messages and parameters, and the first field a chat upstream cannot serve."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.responses_only: str | None = None
        self.params: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        for name in RESPONSES_ONLY:
            if body.get(name) is not None:
                self._only(name)
        if body.get("background") is not None:
            if not isinstance(body["background"], bool):
                raise invalid("background", "true or false")
            if body["background"]:
                self._only("background")
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise invalid("instructions", "a string")
            self.messages.append({"role": "developer", "content": instructions})
        InputItems(self.messages, self._only).add(body.get("input"))
        self._options(body)

    def _only(self, name: str) -> None:
        if self.responses_only is None:
            self.responses_only = name

    def _options(self, body: dict[str, Any]) -> None:
        for name in SAME_NAME:
            if body.get(name) is not None:
                check_field(name, body[name])
                self.params[name] = body[name]
        tokens = body.get("max_output_tokens")
        if tokens is not None:
            if not isinstance(tokens, int) or isinstance(tokens, bool) or not 16 <= tokens <= 1_000_000:
                raise invalid("max_output_tokens", "a whole number from 16 to 1000000")
            self.params["max_tokens"] = tokens
        top = body.get("top_logprobs")
        if top is not None:
            check_field("top_logprobs", top)
            self.params |= {"logprobs": True, "top_logprobs": top}
        for name in ("store", "stream"):
            if body.get(name) is not None and not isinstance(body[name], bool):
                raise invalid(name, "true or false")
        for name in ("include",):
            if body.get(name) is not None and not (
                isinstance(body[name], list) and all(isinstance(v, str) for v in body[name])
            ):
                raise invalid(name, "a list of strings")
        if body.get("truncation") is not None and body["truncation"] not in ("auto", "disabled"):
            raise invalid("truncation", "auto or disabled")
        if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
            raise invalid("stream_options", "an object")
        self._reasoning(body.get("reasoning"))
        self._text(body.get("text"))
        self._tools(body.get("tools"))
        self._tool_choice(body.get("tool_choice"))

    def _reasoning(self, reasoning: Any) -> None:
        if reasoning is None:
            return
        if not isinstance(reasoning, dict):
            raise invalid("reasoning", "an object")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise invalid("reasoning.effort", "a string such as low, medium or high")
            self.params["reasoning_effort"] = effort

    def _text(self, text: Any) -> None:
        if text is None:
            return
        if not isinstance(text, dict):
            raise invalid("text", "an object")
        verbosity = text.get("verbosity")
        if verbosity is not None:
            check_field("verbosity", verbosity)
            self.params["verbosity"] = verbosity
        form = text.get("format")
        if form is None:
            return
        kind = form.get("type") if isinstance(form, dict) else None
        if kind == "json_schema":
            if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
                raise invalid("text.format", 'a json_schema format with a string "name" and an object "schema"')
            schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
            self.params["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif kind == "json_object":
            self.params["response_format"] = {"type": "json_object"}
        elif kind != "text":
            raise invalid("text.format.type", "one of text, json_schema, json_object")

    def _tools(self, tools: Any) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            raise invalid("tools", "a list of tools")
        chat_tools = []
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            kind = tool.get("type") if isinstance(tool, dict) else None
            if not isinstance(kind, str):
                raise invalid(f"{where}.type", "a string such as function")
            if kind != "function":
                self._only(f"{where}.type")  # a built-in tool (web_search, file_search, mcp, ...): Responses' own
                continue
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid(f"{where}.name", "a string")
            function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
            if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
                raise invalid(f"{where}.parameters", "an object (a JSON schema)")
            chat_tools.append({"type": "function", "function": {k: v for k, v in function.items() if v is not None}})
        if chat_tools:
            self.params["tools"] = chat_tools

    def _tool_choice(self, choice: Any) -> None:
        if choice is None:
            return
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise invalid("tool_choice", "none, auto, required, or an object naming a tool")
            self.params["tool_choice"] = choice
            return
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "function":
            if not isinstance(choice.get("name"), str):
                raise invalid("tool_choice.name", "a string")
            self.params["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif isinstance(kind, str):
            self._only("tool_choice.type")
        else:
            raise invalid("tool_choice", "none, auto, required, or an object naming a tool")
