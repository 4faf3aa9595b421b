"""The error table: every error is mapped once, upstream answers map as documented, Retry-After is parsed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import chatsse.errors as errors_module
from chatsse.errors import (
    ChatSSEError,
    ContentFiltered,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from chatsse.events import Failed
from chatsse.upstreams.failures import from_transport_error, from_upstream_status, retry_after_seconds

FIXTURES = Path(__file__).parent / "fixtures"


def all_error_classes() -> list[type[ChatSSEError]]:
    values = vars(errors_module).values()
    return [v for v in values if isinstance(v, type) and issubclass(v, ChatSSEError) and v is not ChatSSEError]


def test_every_error_has_a_unique_code_and_is_in_the_documented_table() -> None:
    classes = all_error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    table = errors_module.__doc__ or ""
    for cls in classes:
        assert f"{cls.__name__} " in table and f"{cls.status_code}     {cls.code}" in table, cls


def test_every_httpx_error_maps_to_ours_without_its_text() -> None:
    def subclasses(cls: type[httpx.HTTPError]) -> list[type[httpx.HTTPError]]:
        found = [cls]
        for sub in cls.__subclasses__():
            found += subclasses(sub)
        return found

    for cls in subclasses(httpx.HTTPError):
        if cls in (httpx.HTTPStatusError,):
            continue
        exc = cls("boom https://secret-host.example")
        mapped = from_transport_error(exc)
        assert isinstance(mapped, ChatSSEError)
        assert "secret-host" not in mapped.message
    assert from_transport_error(httpx.ConnectTimeout("x")).code == "upstream_timeout"
    assert from_transport_error(httpx.ReadTimeout("x")).code == "upstream_timeout"
    assert from_transport_error(httpx.ConnectError("x")).code == "upstream_unreachable"
    assert from_transport_error(httpx.RemoteProtocolError("x")).code == "upstream_disconnected"
    assert from_transport_error(httpx.ReadError("x")).code == "upstream_disconnected"


@pytest.mark.parametrize(
    ("status", "fixture", "error_class"),
    [
        (400, "error_400_content_filter.json", ContentFiltered),
        (400, "error_400_unsupported_parameter.json", UpstreamRejected),
        (401, "error_401.json", UpstreamAuthFailed),
        (403, "error_401.json", UpstreamAuthFailed),
        (404, "error_404_deployment.json", UpstreamNotFound),
        (429, "error_429.json", RateLimited),
        (500, "error_500.json", UpstreamUnavailable),
        (503, None, UpstreamUnavailable),
    ],
)
def test_upstream_status_mapping(status: int, fixture: str | None, error_class: type[ChatSSEError]) -> None:
    body = (FIXTURES / fixture).read_bytes() if fixture else b"<html>Service Unavailable</html>"
    error = from_upstream_status(status, body, {})
    assert type(error) is error_class
    upstream_message = json.loads(body)["error"]["message"] if fixture else "Service Unavailable"
    assert upstream_message not in error.message  # our words, not theirs


def test_rejected_request_names_the_parameter() -> None:
    body = (FIXTURES / "error_400_unsupported_parameter.json").read_bytes()
    assert "param max_tokens" in from_upstream_status(400, body, {}).message


def test_retry_after_sources_in_order() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "33"}) == 33
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}, "Please retry after 7 seconds.") == 7
    assert retry_after_seconds({}, "Try again in 2 seconds") == 2
    assert retry_after_seconds({}, "no hint") is None
    error = from_upstream_status(429, (FIXTURES / "error_429.json").read_bytes(), {})
    assert error.retry_after == 33  # from the message when headers are missing
    assert error.headers() == {"Retry-After": "33"}


def test_error_renders_as_response_and_as_event_identically() -> None:
    error = RateLimited(retry_after=2.2)
    response = error.to_response()
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert json.loads(bytes(response.body)) == Failed.of(error).payload()  # a stream's last event
