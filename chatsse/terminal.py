"""The terminal client: `chatsse chat` prints a reply token by token as the gateway streams it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any, TextIO

import httpx

from chatsse.schema import Message
from chatsse.sse import SSEDecoder

STREAM_PATH = "/api/v1/chat/stream"
# Long enough for slow models between tokens (the gateway pings every 15 s by default), short enough to end.
READ_TIMEOUT_SECONDS = 300.0
RESUME_ATTEMPTS = 30  # about a minute of trying to resume a dropped reply
STOP_TIMEOUT_SECONDS = 3.0


class ChatFailed(Exception):
    """The gateway refused the request or the reply broke off; the message says why."""


def stream_reply(url: str, messages: list[Message], out: TextIO) -> str:
    """POST the conversation, write each content event to `out` as it arrives, return the whole reply.

    When the gateway keeps replies (X-Chatsse-Stream), a dropped connection is resumed after the last event."""
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=10.0)
    reading = _Reading(out)
    with httpx.Client(timeout=timeout) as client:
        try:
            return _stream_reply(client, url, messages, reading)
        except KeyboardInterrupt:
            if reading.stream_id:  # Ctrl-C: stop the reply at the gateway too, or it goes on being read and paid for
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(f"{url.rstrip('/')}{STREAM_PATH}/{reading.stream_id}", timeout=STOP_TIMEOUT_SECONDS)
            raise


def _stream_reply(client: httpx.Client, url: str, messages: list[Message], reading: _Reading) -> str:
    """One reply: the POST, then resumes after dropped connections when the gateway keeps replies."""
    with client.stream("POST", url.rstrip("/") + STREAM_PATH, json={"messages": messages}) as response:
        if response.status_code != 200:
            response.read()
            raise ChatFailed(_error_message(response))
        stream_id = reading.stream_id = response.headers.get("x-chatsse-stream")
        try:
            if reading.read(response):
                return reading.reply
        except httpx.TransportError:
            if stream_id is None:
                raise
    if stream_id is None:
        raise ChatFailed("The connection closed before the reply was finished.")
    for attempt in range(RESUME_ATTEMPTS):
        time.sleep(min(0.5 * 2**attempt, 2.0))
        headers = {"last-event-id": reading.last_id} if reading.last_id else {}
        try:
            with client.stream("GET", f"{url.rstrip('/')}{STREAM_PATH}/{stream_id}", headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise ChatFailed(_error_message(response))
                if reading.read(response):
                    return reading.reply
        except httpx.TransportError:
            continue
    raise ChatFailed("The connection broke and the reply could not be resumed.")


class _Reading:
    """The reply so far and the last event id, across the connections one reply takes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.reply = ""
        self.last_id = ""
        self.stream_id: str | None = None

    def read(self, response: httpx.Response) -> bool:
        """Write content as it arrives; True at done, ChatFailed at an error event, False if the connection ended."""
        decoder = SSEDecoder()
        for raw in response.iter_bytes():
            for event in decoder.decode(raw):
                if event.id:
                    self.last_id = event.id
                payload: dict[str, Any] = json.loads(event.data)
                if "content" in payload:
                    self.reply += payload["content"]
                    self.out.write(payload["content"])
                    self.out.flush()
                elif "error" in payload:
                    raise ChatFailed(f"{payload['error']['message']} ({payload['error']['code']})")
                elif payload.get("done"):
                    return True
        return False


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} ({error['code']}, HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"The server answered HTTP {response.status_code}; is --url a chatsse gateway?"


def run(url: str, message: str | None) -> int:
    """The `chatsse chat` command; returns the exit status."""
    if message == "-" or (message is None and not sys.stdin.isatty()):
        message = sys.stdin.read()
    if message is None:
        return _interactive(url)
    if not message.strip():
        print("chatsse: the message is empty.", file=sys.stderr)
        return 2
    return _one_reply(url, [{"role": "user", "content": message}])


def _one_reply(url: str, messages: list[Message]) -> int:
    """Stream one reply; 0 on done. On failure, a message on stderr and a non-zero status."""
    try:
        reply = stream_reply(url, messages, sys.stdout)
    except ChatFailed as exc:
        print(f"\nchatsse: {exc}", file=sys.stderr)
        return 1
    except httpx.ConnectError:
        print(f"chatsse: cannot reach {url}. Is the gateway running (chatsse serve)? Set --url.", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"\nchatsse: the connection failed ({type(exc).__name__}).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nchatsse: stopped.", file=sys.stderr)
        return 130
    print()
    messages.append({"role": "assistant", "content": reply})
    return 0


def _interactive(url: str) -> int:
    print(f"chatsse chat with {url}: type a message; Ctrl-C stops a reply, Ctrl-D or 'exit' quits.", file=sys.stderr)
    history: list[Message] = []
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if text.strip() in ("exit", "quit"):
            return 0
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        if _one_reply(url, history) != 0:
            history.pop()  # keep the conversation valid: the next turn must follow an answered one
