"""Azure AI Content Safety for the `prompt_shield` and `content_safety` guards: Prompt Shields
(`text:shieldPrompt`) and text analysis (`text:analyze`), with a key or a Microsoft Entra ID token, bounded in time.
A call that fails in any way raises `ServiceFailed`, which the guard's `on_error` decides about."""

from __future__ import annotations

from typing import Any

import httpx

from chatsse.guards.config import GuardConfig
from chatsse.upstreams.auth import EntraTokens
from chatsse.upstreams.client import new_http_client

API_VERSION = "2024-09-01"


class ServiceFailed(Exception):
    """The service did not answer in time, or not as documented (the reason, never a key or the text)."""


class ContentSafety:
    def __init__(self) -> None:
        self.http: httpx.AsyncClient | None = None  # made at the first call, closed with the app
        self.tokens: EntraTokens | None = None

    async def attacked(self, guard: GuardConfig, prompt: str, documents: list[str]) -> bool:
        """Prompt Shields: whether the user prompt, or a document (tool output), is an attack."""
        answer = await self._call(guard, "text:shieldPrompt", {"userPrompt": prompt, "documents": documents})
        analyses = [answer.get("userPromptAnalysis"), *(answer.get("documentsAnalysis") or [])]
        if not isinstance(analyses[0], dict):
            raise ServiceFailed("no userPromptAnalysis in its answer")
        return any(isinstance(a, dict) and a.get("attackDetected") is True for a in analyses)

    async def harmful(self, guard: GuardConfig, text: str) -> list[str]:
        """Text analysis: the categories whose severity reaches the guard's threshold."""
        bars = dict(guard.thresholds)
        answer = await self._call(guard, "text:analyze", {"text": text, "categories": list(bars)})
        analysis = answer.get("categoriesAnalysis")
        if not isinstance(analysis, list):
            raise ServiceFailed("no categoriesAnalysis in its answer")
        return sorted(
            str(a["category"])
            for a in analysis
            if isinstance(a, dict) and a.get("category") in bars and (a.get("severity") or 0) >= bars[a["category"]]
        )

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()

    async def _call(self, guard: GuardConfig, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            # The upstreams' pooled client: no cap on connections (a reply's windows are checked at once, and a cap
            # of 100 queued checks past their timeout at 200 open streams), aiohttp's parser.
            self.http = new_http_client(10.0)
        headers = {"Content-Type": "application/json"}
        try:
            if guard.entra:
                self.tokens = self.tokens or EntraTokens()
                headers["Authorization"] = "Bearer " + await self.tokens.token()
            else:
                headers["Ocp-Apim-Subscription-Key"] = guard.api_key or ""
            answer = await self.http.post(
                f"{guard.endpoint}/contentsafety/{operation}",
                params={"api-version": API_VERSION},
                json=body,
                headers=headers,
                timeout=guard.timeout,
            )
        except Exception as exc:  # a lost connection, a timeout, no Entra token: the guard's on_error decides
            raise ServiceFailed(type(exc).__name__) from None
        if not answer.is_success:
            raise ServiceFailed(f"HTTP {answer.status_code}")
        try:
            parsed = answer.json()
        except ValueError:
            raise ServiceFailed("an answer that is not JSON") from None
        if not isinstance(parsed, dict):
            raise ServiceFailed("an answer that is not a JSON object")
        return parsed
