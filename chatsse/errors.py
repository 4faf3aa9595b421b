"""Every failure chatsse reports, and the one table that maps it to an HTTP status and a stable code.

    ChatSSEError                      status  code
    ├── InvalidJSON                   400     invalid_json
    ├── InvalidRequest                422     invalid_request
    ├── PayloadTooLarge               413     payload_too_large
    ├── UnsupportedMediaType          415     unsupported_media_type
    ├── MethodNotAllowed              405     method_not_allowed
    ├── NotFound                      404     not_found
    ├── ContentFiltered               400     content_filter
    ├── PromptBlocked                 400     prompt_blocked        (a guard on input refused the request)
    ├── RateLimited                   429     rate_limited          (retried first)
    ├── UpstreamAuthFailed            502     upstream_auth_failed
    ├── UpstreamNotFound              502     upstream_not_found
    ├── UpstreamRejected              502     upstream_rejected
    ├── UpstreamUnavailable           502     upstream_unavailable  (retried first)
    ├── UpstreamUnreachable           502     upstream_unreachable  (retried first)
    ├── UpstreamTimeout               504     upstream_timeout
    ├── UpstreamDisconnected          502     upstream_disconnected
    ├── UpstreamMalformed             502     upstream_malformed
    ├── UpstreamStreamError           502     upstream_error
    ├── ToolCallsUnsupported          502     tool_calls_unsupported (a tool call on a face that carries text only)
    ├── UnsupportedParameter          400     unsupported_parameter (a field the upstream's api-version lacks)
    ├── Unauthorized                  401     unauthorized
    ├── KeyExpired                    401     key_expired           (a caller key past its `expires`: use its successor)
    ├── CallerRateLimited             429     too_many_requests
    ├── TooManyStreams                503     too_many_streams      (429 when a caller's max_streams is reached)
    ├── Draining                      503     draining
    ├── GuardUnavailable              503     guard_unavailable     (a guard's service failed, on_error = "closed")
    ├── Overloaded                    503     overloaded            (lag, a saturated core, or a ceiling: shed)
    ├── ServerShutdown                503     server_shutdown
    ├── RequestTimeout                408     request_timeout       (a slow body; slow headers: server/protocol.py)
    ├── ClientLeft                    499     client_closed_request (before its reply's first token; nobody reads it)
    ├── HeadersTooLarge               431     headers_too_large
    ├── StreamNotFound                404     stream_not_found
    ├── ResumeGap                     410     resume_gap
    ├── ResumeUnavailable             503     resume_unavailable
    ├── StreamLost                    503     stream_lost           (the instance reading a kept reply died)
    ├── ModelNotFound                 404     model_not_found       (the OpenAI-compatible face)
    ├── StoredResponseNotFound        404     response_not_found    (a Responses API id this caller does not have)
    ├── ModelNotAllowed               403     model_not_allowed     (a caller's `models`)
    ├── QuotaExceeded                 403     quota_exceeded        (a caller's token_quota; Retry-After: the reset)
    ├── BudgetExceeded                403     budget_exceeded       (a caller's or team's budget; Retry-After: reset)
    ├── AdminOnly                     403     admin_only            (the spend report, for admin keys only)
    ├── TooManyConnections            503     too_many_connections  (written by server/protocol.py, before any request)
    └── InternalError                 500     internal_error

Before a stream's first byte an error is an HTTP response (`to_response`); after it, the stream's last event
(`events.Failed.of`). Under /v1/ (the OpenAI and Responses faces) both take OpenAI's shape, `{"error": {"message",
"type", "param", "code"}}`, and a 422 is a 400, as the OpenAI SDKs expect. Messages are ours: upstream text is never
echoed, so nothing the upstream or httpx says (URLs, headers, keys) can reach a client.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from starlette.responses import JSONResponse

from chatsse.record import current_record

OPENAI_PREFIX = ("/v1/", "/openai/")  # the OpenAI face, and its Azure-shaped route
OPENAI_STATUS = {422: 400}  # OpenAI answers every invalid request with 400
OPENAI_TYPES = {401: "authentication_error", 429: "rate_limit_error"}  # other 4xx: invalid_request_error


class ChatSSEError(Exception):
    status_code: int = 500  # a class's status; an instance may answer another (a caller's limit, say)
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Something went wrong inside chatsse."
    retryable: ClassVar[bool] = False
    param: str | None = None  # the request field at fault, for OpenAI's error shape

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, param: str | None = None
    ) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        if param is not None:
            self.param = param
        self.extra_headers: dict[str, str] = {}  # e.g. the x-ratelimit-* headers of a caller's limits
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        """The JSON body or event; rendering an error also records it on the request's log line."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        record = current_record.get()
        if record is not None:
            record.error_code = self.code
            error["request_id"] = record.request_id
        return {"error": error}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return self.extra_headers
        return {"Retry-After": str(max(1, math.ceil(self.retry_after))), **self.extra_headers}

    def to_response(self) -> JSONResponse:
        return JSONResponse(self.payload(), status_code=self.status_code, headers=self.headers())

    def openai_payload(self) -> dict[str, Any]:
        error = self.payload()["error"]
        status = OPENAI_STATUS.get(self.status_code, self.status_code)
        kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, **error}}

    def response_for(self, path: str) -> JSONResponse:
        """This error as the face at `path` speaks it: OpenAI's shape under /v1/, ours elsewhere."""
        if not path.startswith(OPENAI_PREFIX):
            return self.to_response()
        status = OPENAI_STATUS.get(self.status_code, self.status_code)
        return JSONResponse(self.openai_payload(), status_code=status, headers=self.headers())


class InvalidJSON(ChatSSEError):
    status_code, code = 400, "invalid_json"
    default_message = "The request body is not valid JSON."


class InvalidRequest(ChatSSEError):
    status_code, code = 422, "invalid_request"
    default_message = 'Send {"message": "<text>"} or {"messages": [{"role": "user", "content": "<text>"}]}.'


class PayloadTooLarge(ChatSSEError):
    status_code, code = 413, "payload_too_large"
    default_message = "The request body is too large."


class UnsupportedMediaType(ChatSSEError):
    status_code, code = 415, "unsupported_media_type"
    default_message = "Send the request body as JSON with the header 'Content-Type: application/json'."


class MethodNotAllowed(ChatSSEError):
    status_code, code = 405, "method_not_allowed"
    default_message = "This method is not allowed here."


class NotFound(ChatSSEError):
    status_code, code = 404, "not_found"
    default_message = "No such route. The chat stream is POST /api/v1/chat/stream."


class ContentFiltered(ChatSSEError):
    status_code, code = 400, "content_filter"
    default_message = "Azure OpenAI's content filter blocked this prompt. Rephrase the message and try again."


class PromptBlocked(ChatSSEError):
    status_code, code = 400, "prompt_blocked"
    default_message = "The request was refused by one of the gateway's guards."


class RateLimited(ChatSSEError):
    status_code, code, retryable = 429, "rate_limited", True
    default_message = "Azure OpenAI is rate-limiting this deployment. Wait for Retry-After seconds and try again."


class UpstreamAuthFailed(ChatSSEError):
    status_code, code = 502, "upstream_auth_failed"
    default_message = "Azure OpenAI rejected the gateway's credentials: check AZURE_OPENAI_API_KEY and the endpoint."


class UpstreamNotFound(ChatSSEError):
    status_code, code = 502, "upstream_not_found"
    default_message = "Azure OpenAI has no such deployment: check AZURE_OPENAI_DEPLOYMENT_NAME and the api-version."


class UpstreamRejected(ChatSSEError):
    status_code, code = 502, "upstream_rejected"
    default_message = "Azure OpenAI rejected the request the gateway sent. The operator should check the logs."


class UpstreamUnavailable(ChatSSEError):
    status_code, code, retryable = 502, "upstream_unavailable", True
    default_message = "Azure OpenAI failed to answer (server error), even after retrying. Try again shortly."


class UpstreamUnreachable(ChatSSEError):
    status_code, code, retryable = 502, "upstream_unreachable", True
    default_message = "The gateway could not connect to Azure OpenAI. The operator should check AZURE_OPENAI_ENDPOINT."


class UpstreamTimeout(ChatSSEError):
    status_code, code = 504, "upstream_timeout"
    default_message = "Azure OpenAI went silent for longer than CHATSSE_UPSTREAM_TIMEOUT allows."


class UpstreamDisconnected(ChatSSEError):
    status_code, code = 502, "upstream_disconnected"
    default_message = "The connection to Azure OpenAI broke before the reply was finished; the reply is incomplete."


class UpstreamMalformed(ChatSSEError):
    status_code, code = 502, "upstream_malformed"
    default_message = "Azure OpenAI sent data the gateway could not read; the reply is incomplete."


class UpstreamStreamError(ChatSSEError):
    status_code, code = 502, "upstream_error"
    default_message = "Azure OpenAI reported an error in the middle of the reply; the reply is incomplete."


class ToolCallsUnsupported(ChatSSEError):
    status_code, code = 502, "tool_calls_unsupported"
    default_message = (
        "The model asked to call a tool, which this route cannot relay (it carries text only); the reply ends here. "
        "Send tools to /v1/chat/completions or /api/v1/chat/ui instead."
    )


class UnsupportedParameter(ChatSSEError):
    status_code, code = 400, "unsupported_parameter"
    default_message = "The upstream's API does not support a field of this request."


class Unauthorized(ChatSSEError):
    status_code, code = 401, "unauthorized"
    default_message = "Send a caller key: 'Authorization: Bearer <key>' (EventSource: ?access_token=<key>)."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="chatsse"'}


class KeyExpired(Unauthorized):
    status_code, code = 401, "key_expired"
    default_message = "This caller key has expired. Use the key that replaced it."


class CallerRateLimited(ChatSSEError):
    status_code, code = 429, "too_many_requests"
    default_message = "This caller sent too many requests (CHATSSE_RATE_LIMIT). Wait for Retry-After seconds."


class TooManyStreams(ChatSSEError):
    status_code, code = 503, "too_many_streams"
    default_message = "The gateway is at its limit of open streams (CHATSSE_MAX_STREAMS). Try again shortly."


class GuardUnavailable(ChatSSEError):
    status_code, code = 503, "guard_unavailable"
    default_message = "A guard the gateway must check this request with is unavailable. Try again shortly."


class Overloaded(ChatSSEError):
    status_code, code = 503, "overloaded"
    default_message = "This instance is overloaded. Retry-After says when to try again (another may answer)."


class Draining(ChatSSEError):
    status_code, code = 503, "draining"
    default_message = "The gateway is shutting down; try again in a moment (another instance will answer)."


class ServerShutdown(ChatSSEError):
    status_code, code = 503, "server_shutdown"
    default_message = "The gateway shut down before the reply was finished; the reply is incomplete."


class RequestTimeout(ChatSSEError):
    status_code, code = 408, "request_timeout"
    default_message = "The request body arrived too slowly (CHATSSE_BODY_TIMEOUT)."


class ClientLeft(ChatSSEError):
    status_code, code = 499, "client_closed_request"
    default_message = "The client closed the connection before the reply started; its upstream request was closed."


class HeadersTooLarge(ChatSSEError):
    status_code, code = 431, "headers_too_large"
    default_message = "The request headers are too large (CHATSSE_MAX_HEADER_BYTES)."


class StreamNotFound(ChatSSEError):
    status_code, code = 404, "stream_not_found"
    default_message = "No such stream: never made, expired (CHATSSE_RESUME_SECONDS), or another caller's."


class ResumeGap(ChatSSEError):
    status_code, code = 410, "resume_gap"
    default_message = "Part of this reply after your last event is gone (CHATSSE_RESUME_MAX_BYTES, or Redis lost it)."


class ResumeUnavailable(ChatSSEError):
    status_code, code = 503, "resume_unavailable"
    default_message = "The gateway cannot reach its shared stream store (Redis) right now. Try again shortly."


class StreamLost(ChatSSEError):
    status_code, code = 503, "stream_lost"
    default_message = (
        "The gateway instance that was producing this reply stopped (it was killed or lost) before the reply was "
        "finished; the text so far is kept, the rest will not come. Ask again for a new reply."
    )


class TooManyConnections(ChatSSEError):
    status_code, code = 503, "too_many_connections"
    default_message = "The gateway has as many connections open as it allows (CHATSSE_MAX_CONNECTIONS). Try again."


class ModelNotFound(ChatSSEError):
    status_code, code, param = 404, "model_not_found", "model"
    default_message = "No such model on this gateway. GET /v1/models lists them."


class StoredResponseNotFound(ChatSSEError):
    status_code, code = 404, "response_not_found"
    default_message = "No such response: never made here, expired, not stored, or another caller's."


class ModelNotAllowed(ChatSSEError):
    status_code, code, param = 403, "model_not_allowed", "model"
    default_message = "This caller may not use that model. GET /api/v1/models (or /v1/models) lists the ones it may."


class QuotaExceeded(ChatSSEError):
    status_code, code = 403, "quota_exceeded"
    default_message = "This caller has used its token quota for the period. Retry-After says when it resets."


class BudgetExceeded(ChatSSEError):
    status_code, code = 403, "budget_exceeded"
    default_message = "This caller has spent its budget for the period. Retry-After says when it resets."


class AdminOnly(ChatSSEError):
    status_code, code = 403, "admin_only"
    default_message = "Only an admin key (CHATSSE_ADMIN_KEYS, or a caller with admin = true) may read this."


class InternalError(ChatSSEError): ...
