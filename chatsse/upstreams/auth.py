"""Keyless auth with Microsoft Entra ID: one cached token, refreshed in the background ahead of its expiry."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatsse.errors import UpstreamAuthFailed

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger("chatsse.upstream")

SCOPE = "https://cognitiveservices.azure.com/.default"
REFRESH_MARGIN_SECONDS = 300.0  # refresh this long before expiry (half the lifetime for shorter tokens)
RETRY_SECONDS = 5.0  # after a failed background refresh
TOKEN_FAILED = UpstreamAuthFailed(
    "The gateway could not get a Microsoft Entra ID token for Azure OpenAI. "
    "The operator should check the gateway's managed identity (or other Azure credential) and its logs."
)

CredentialFactory = Callable[[], "AsyncTokenCredential"]


def default_credential() -> AsyncTokenCredential:
    # Imported when first needed: azure-identity costs start-up time and memory that key-only gateways never use.
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


class EntraTokens:
    """Tokens for `SCOPE` from azure-identity's DefaultAzureCredential, shared by every Entra upstream.

    Requests read the cached token without waiting; a background task fetches the next one ahead of expiry, and a
    lock makes sure only one fetch runs at a time. Each fetch uses a new credential object, because the library's
    own cache would hand back the token being replaced."""

    def __init__(self, credential: CredentialFactory = default_credential) -> None:
        self._new_credential = credential
        self._token = ""
        self._expires_on = 0.0
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._keep_fresh(), name="chatsse-entra-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def token(self) -> str:
        """The current token; waits for a fetch only when there is no unexpired one (a failed refresh)."""
        if self._token and time.time() < self._expires_on:
            return self._token
        try:
            await self.refresh(stale=self._token)
        except Exception as exc:  # whatever the credential raised, the client hears it in our words
            log.warning("entra token fetch failed (%s)", type(exc).__name__)
            raise TOKEN_FAILED from None
        return self._token

    async def refresh(self, stale: str | None = None) -> None:
        """Fetch a new token; with `stale`, only if nobody replaced that token while we waited for the lock."""
        async with self._lock:
            if stale is not None and self._token != stale and time.time() < self._expires_on:
                return
            credential = self._new_credential()
            try:
                access = await credential.get_token(SCOPE)
            finally:
                await credential.close()
            now = time.time()
            self._token, self._expires_on = access.token, float(access.expires_on)
            self._refresh_at = self._expires_on - min(REFRESH_MARGIN_SECONDS, (self._expires_on - now) / 2)
            log.info("entra token refreshed; it expires in %.0fs", self._expires_on - now)

    async def refresh_after_rejection(self, token: str) -> None:
        """Azure answered 401 to `token`: fetch another now (once, however many requests saw the 401)."""
        try:
            await self.refresh(stale=token)
        except Exception as exc:
            log.warning("entra token fetch failed (%s)", type(exc).__name__)
            raise TOKEN_FAILED from None

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._refresh_at - time.time()))
            try:
                await self.refresh(stale=self._token)
            except Exception as exc:  # keep trying: the current token may still have some life in it
                log.warning("entra token refresh failed (%s); retrying in %.0fs", type(exc).__name__, RETRY_SECONDS)
                self._refresh_at = time.time() + RETRY_SECONDS


def credential_problem() -> str | None:
    """Try to get a token once, before serving: None if it works, else what was tried and what to set."""

    from azure.core.exceptions import ClientAuthenticationError

    async def probe() -> None:
        credential = default_credential()
        try:
            await credential.get_token(SCOPE)
        finally:
            await credential.close()

    # A thread of its own, so this works from inside a running event loop too (uvicorn's factory call).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, probe()).result()
        except ClientAuthenticationError as exc:
            tried = [line.strip() for line in str(exc.message).splitlines() if line.startswith("\t")]
            return (
                'AZURE_OPENAI_AUTH=entra (or auth = "entra"), but no Microsoft Entra ID credential gave a token. '
                "Tried:\n      " + "\n      ".join(tried or [type(exc).__name__]) + "\n    Set one up: a managed "
                "identity (App Service, Container Apps, AKS: IDENTITY_ENDPOINT/IDENTITY_HEADER are set for you), "
                "workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID), a service "
                "principal (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET), or `az login` for development."
            )
    return None
