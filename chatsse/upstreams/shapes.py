"""The three upstream API shapes (azure, azure-v1, openai): where a chat goes, how the key travels, the body."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from chatsse.schema import ChatRequest
from chatsse.upstreams.config import UpstreamConfig


class ApiShape:
    """Azure OpenAI's classic data-plane API: the deployment in the path, `api-version` in the query."""

    key_header = "api-key"

    def url(self, upstream: UpstreamConfig) -> str:
        return f"{upstream.endpoint.rstrip('/')}/openai/deployments/{upstream.deployment}/chat/completions"

    def params(self, upstream: UpstreamConfig) -> dict[str, str]:
        return {"api-version": upstream.api_version}

    def key_headers(self, key: str | None) -> dict[str, str]:
        return {self.key_header: key} if key else {}

    def asks_for_usage(self, upstream: UpstreamConfig) -> bool:
        # stream_options arrived in 2024-09-01-preview; older api-versions reject it with a 400.
        return upstream.api_version[:10] >= "2024-09-01"

    def max_tokens_field(self, upstream: UpstreamConfig) -> str:
        # max_completion_tokens arrived with the same api-version, and reasoning models accept only it.
        return "max_completion_tokens" if self.asks_for_usage(upstream) else "max_tokens"

    def body(self, upstream: UpstreamConfig, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": request.messages, "stream": True}
        if self.asks_for_usage(upstream):
            body["stream_options"] = {"include_usage": True}
        for name in ("temperature", "top_p", "reasoning_effort"):
            if name in request.params:
                body[name] = request.params[name]
        caps = [n for n in (request.params.get("max_tokens"), upstream.max_tokens) if n is not None]
        if caps:
            body[self.max_tokens_field(upstream)] = min(caps)
        return body


class AzureV1Shape(ApiShape):
    """Azure OpenAI's v1 API: `/openai/v1/chat/completions`, the deployment as `model`, no api-version."""

    def url(self, upstream: UpstreamConfig) -> str:
        return f"{upstream.endpoint.rstrip('/')}/openai/v1/chat/completions"

    def params(self, upstream: UpstreamConfig) -> dict[str, str]:
        return {}

    def asks_for_usage(self, upstream: UpstreamConfig) -> bool:
        return True

    def max_tokens_field(self, upstream: UpstreamConfig) -> str:
        return "max_completion_tokens"

    def body(self, upstream: UpstreamConfig, request: ChatRequest) -> dict[str, Any]:
        return {"model": upstream.deployment, **super().body(upstream, request)}


class OpenAIShape(AzureV1Shape):
    """Any OpenAI-compatible server: `{endpoint}/chat/completions` (the endpoint includes /v1), a Bearer key."""

    def url(self, upstream: UpstreamConfig) -> str:
        return f"{upstream.endpoint.rstrip('/')}/chat/completions"

    def key_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def max_tokens_field(self, upstream: UpstreamConfig) -> str:
        # OpenAI's reasoning models accept only max_completion_tokens; Ollama, vLLM and LM Studio know max_tokens.
        host = urlsplit(upstream.endpoint).hostname or ""
        return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


SHAPES: dict[str, ApiShape] = {"azure": ApiShape(), "azure-v1": AzureV1Shape(), "openai": OpenAIShape()}
