"""The three upstream API shapes (azure, azure-v1, openai): where a chat goes, how the key travels, the body;
each for either protocol, chat completions or the Responses API (whose body is `responses/convert.py`'s).

The body carries every field the caller sent. Azure's v1 API and OpenAI-compatible servers get them all; a dated
Azure api-version gets the ones it knows (`ARRIVED`, from Azure's published API specs), and for a field it lacks,
either the field is dropped, when leaving it out changes nothing in the reply the caller gets (`DROPPED`), or the
request is refused with 400 `unsupported_parameter` naming it, before any upstream call.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from chatsse.errors import UnsupportedParameter
from chatsse.responses.convert import responses_body
from chatsse.schema import ChatRequest
from chatsse.upstreams.config import UpstreamConfig

# The first preview and the first GA api-version that know a field (None: no dated GA version does). Previews and
# GA versions are two lines: 2024-10-21 (GA) lacks what 2024-10-01-preview has. Fields not named here are in every
# api-version since 2024-02-01. Those of `response_format` and of content parts are named by their type.
ARRIVED: dict[str, tuple[str | None, str | None]] = {
    "parallel_tool_calls": ("2024-08-01-preview", "2024-10-21"),
    "json_schema": ("2024-08-01-preview", "2024-10-21"),
    "stream_options": ("2024-09-01-preview", "2024-10-21"),
    "max_completion_tokens": ("2024-09-01-preview", "2024-10-21"),
    "store": ("2024-10-01-preview", None),
    "metadata": ("2024-10-01-preview", None),
    "developer": ("2024-12-01-preview", None),  # the role; older versions get it as "system", which Azure equates
    "reasoning_effort": ("2024-12-01-preview", None),
    "prediction": ("2025-01-01-preview", None),
    "modalities": ("2025-01-01-preview", None),
    "audio": ("2025-01-01-preview", None),
    "input_audio": ("2025-01-01-preview", None),
    # OpenAI's newer fields, which only the v1 API takes
    "service_tier": (None, None),
    "verbosity": (None, None),
    "web_search_options": (None, None),
    "prompt_cache_key": (None, None),
    "prompt_cache_retention": (None, None),
    "safety_identifier": (None, None),
    "file": (None, None),
    "include_obfuscation": (None, None),  # of stream_options
}
# Left out where the api-version lacks them: they ask for nothing the reply would show.
DROPPED = (
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "include_obfuscation",
)
# Set by chatsse itself: the messages, the one token cap and the stream options it always asks for.
OWN_FIELDS = ("max_tokens", "stream_options")


PATHS = {"chat": "chat/completions", "responses": "responses"}  # after the v1 API's base, by protocol


def knows(api_version: str, name: str) -> bool:
    """Whether a dated Azure api-version takes the field (or response format, content part or role) `name`."""
    arrived = ARRIVED.get(name)
    if arrived is None:
        return True
    preview, ga = arrived
    since = preview if api_version.endswith("-preview") else ga
    return since is not None and api_version[:10] >= since[:10]


class ApiShape:
    """Azure OpenAI's classic data-plane API: the deployment in the path, `api-version` in the query."""

    key_header = "api-key"

    def url(self, upstream: UpstreamConfig) -> str:
        if upstream.protocol == "responses":  # a late preview api-version; the deployment goes as `model`
            return f"{upstream.endpoint.rstrip('/')}/openai/responses"
        return f"{upstream.endpoint.rstrip('/')}/openai/deployments/{upstream.deployment}/chat/completions"

    def params(self, upstream: UpstreamConfig) -> dict[str, str]:
        return {"api-version": upstream.api_version}

    def key_headers(self, key: str | None) -> dict[str, str]:
        return {self.key_header: key} if key else {}

    def knows(self, upstream: UpstreamConfig, name: str) -> bool:
        return knows(upstream.api_version, name)

    def max_tokens_field(self, upstream: UpstreamConfig) -> str:
        # Reasoning models accept only max_completion_tokens; api-versions before it know only max_tokens.
        return "max_completion_tokens" if self.knows(upstream, "max_completion_tokens") else "max_tokens"

    def body(self, upstream: UpstreamConfig, request: ChatRequest) -> dict[str, Any]:
        if upstream.protocol == "responses":
            return responses_body(request, upstream.deployment, upstream.max_tokens, upstream.reasoning)
        messages = request.messages
        if request.rich:
            messages = self._messages(upstream, messages)
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if self.knows(upstream, "stream_options"):
            # Always: usage is what the caller is charged by. The caller's own options go where they are known.
            options = {k: v for k, v in request.params.get("stream_options", {}).items() if self.knows(upstream, k)}
            body["stream_options"] = {"include_usage": True, **options}
        for name, value in request.params.items():
            if name in OWN_FIELDS:
                continue
            if not self.knows(upstream, name) or not self._knows_format(upstream, name, value):
                self._lacks(upstream, name)
                continue
            body[name] = value
        caps = [n for n in (request.params.get("max_tokens"), upstream.max_tokens) if n is not None]
        if caps:
            body[self.max_tokens_field(upstream)] = min(caps)
        return body

    def _knows_format(self, upstream: UpstreamConfig, name: str, value: Any) -> bool:
        """Whether the api-version knows the kind of `response_format` asked for (json_schema arrived later)."""
        return name != "response_format" or self.knows(upstream, value.get("type", ""))

    def _messages(self, upstream: UpstreamConfig, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The caller's messages, as they came, unless the api-version lacks a role or a content part in them."""
        if not self.knows(upstream, "developer") and any(m.get("role") == "developer" for m in messages):
            messages = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]
        for index, message in enumerate(messages):
            content = message.get("content")
            if isinstance(content, list):
                for number, part in enumerate(content):
                    if not self.knows(upstream, part.get("type", "")):
                        self._lacks(upstream, f"messages[{index}].content[{number}].{part['type']}")
        return messages

    def _lacks(self, upstream: UpstreamConfig, name: str) -> None:
        """A field this api-version lacks: dropped if leaving it out changes nothing the caller sees, else refused."""
        if name in DROPPED:
            return
        raise UnsupportedParameter(
            f'"{name}" is not supported by the api-version of the upstream that serves this model '
            f'({upstream.api_version}). The operator can set a newer api-version, or api = "azure-v1".',
            param=name,
        )


class AzureV1Shape(ApiShape):
    """Azure OpenAI's v1 API: `/openai/v1/chat/completions`, the deployment as `model`, no api-version."""

    def url(self, upstream: UpstreamConfig) -> str:
        return f"{upstream.endpoint.rstrip('/')}/openai/v1/{PATHS[upstream.protocol]}"

    def params(self, upstream: UpstreamConfig) -> dict[str, str]:
        return {}

    def knows(self, upstream: UpstreamConfig, name: str) -> bool:
        return True

    def body(self, upstream: UpstreamConfig, request: ChatRequest) -> dict[str, Any]:
        if upstream.protocol == "responses":
            return super().body(upstream, request)  # it names the model itself
        return {"model": upstream.deployment, **super().body(upstream, request)}


class OpenAIShape(AzureV1Shape):
    """Any OpenAI-compatible server: `{endpoint}/chat/completions` (the endpoint includes /v1), a Bearer key."""

    def url(self, upstream: UpstreamConfig) -> str:
        return f"{upstream.endpoint.rstrip('/')}/{PATHS[upstream.protocol]}"

    def key_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def max_tokens_field(self, upstream: UpstreamConfig) -> str:
        # OpenAI's reasoning models accept only max_completion_tokens; Ollama, vLLM and LM Studio know max_tokens.
        host = urlsplit(upstream.endpoint).hostname or ""
        return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


SHAPES: dict[str, ApiShape] = {"azure": ApiShape(), "azure-v1": AzureV1Shape(), "openai": OpenAIShape()}
