"""The simulator's Responses API (`/openai/v1/responses`, `/openai/responses?api-version=`, `.../v1/responses`):
the same replies and `[sim: ...]` directives as its chat completions, as Responses events; stored responses for
`previous_response_id`, `GET`, `DELETE`, `cancel` and `input_items`; background responses.

Written apart from the gateway's own Responses code, so that the tests compare two readings of the API, not one.
Its extra directive: `builtin=1` streams a built-in tool's item (web search) and an event type no client knows
(`response.sim_future.delta`) before the reply, for relays that must pass through what they do not know.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatsse.simulator.http import Connection, RecordedRequest
from chatsse.simulator.replies import PlannedCall, plan, prompt_text, split_arguments, split_tokens, text_of
from chatsse.simulator.scenario import BAD_REQUEST, Scenario, parse_scenario


class Host(Protocol):
    """What the Responses routes need of the simulator they serve in (no import of it, so no circle)."""

    deployment: str | None
    always: str
    delay: float

    def failure_answer(self, conn: Connection, scenario: Scenario, prompt_key: str) -> bool | None: ...

    async def hold(self, name: str) -> None: ...

    def keep(self, task: asyncio.Future[Any]) -> None: ...


MODEL = "gpt-5-codex-2025-09-15"


def not_found(response_id: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": f"Response with id '{response_id}' not found.",
            "type": "invalid_request_error",
            "param": param,
            "code": "previous_response_not_found" if param else None,
        }
    }


@dataclass
class Stored:
    """A response kept for later calls, as Azure keeps one (for 30 days)."""

    response: dict[str, Any]
    messages: list[dict[str, Any]]  # the whole conversation that led to it, its reply last
    items: list[dict[str, Any]]  # its input items, for input_items
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[bytes] = field(default_factory=list)  # a background response's events, for ?stream=true


def as_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as chat-like turns, for the shared reply planner."""
    messages: list[dict[str, Any]] = []
    given = body.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            messages.append({"role": item.get("role"), "content": content})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
    return messages


class ResponsesEvents:
    """One response's events as bytes, numbered."""

    def __init__(self, response: dict[str, Any], store: Stored | None) -> None:
        self.response = response
        self.sequence = 0
        self.store = store

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        data = b"event: " + kind.encode() + b"\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
        if self.store is not None:
            self.store.events.append(data)
        return data


class ResponsesSimulation:
    """The simulator's Responses routes; `Simulator.respond` hands them every request under .../responses."""

    def __init__(self, simulator: Host) -> None:
        self.simulator = simulator
        self.stored: dict[str, Stored] = {}

    async def respond(self, conn: Connection, request: RecordedRequest, rest: str) -> bool:
        """`rest`: the path after `responses` ("" to create, "/{id}", "/{id}/cancel", "/{id}/input_items")."""
        if rest:
            return await self._stored_call(conn, request, rest)
        if request.method != "POST":
            return conn.write_json(404, BAD_REQUEST)
        try:
            body = request.json
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise ValueError("no model")
        except (ValueError, TypeError):
            return conn.write_json(400, BAD_REQUEST)
        if self.simulator.deployment is not None and body["model"] != self.simulator.deployment:
            return conn.write_json(404, {"error": {"code": "DeploymentNotFound", "message": "No such deployment."}})
        earlier: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = self.stored.get(previous)
            if stored is None:
                return conn.write_json(400, not_found(previous, "previous_response_id"))
            earlier = stored.messages
        messages = earlier + as_messages(body)
        last = prompt_text(messages)
        always = self.simulator.always
        scenario, _ = parse_scenario(f"[sim: {always}] {last}" if always else last, self.simulator.delay)
        failure = self.simulator.failure_answer(conn, scenario, last)
        if failure is not None:
            return failure
        chat_like = {**body, "tools": [{"type": "function", "function": t} for t in body.get("tools") or []]}
        if isinstance((body.get("text") or {}).get("format"), dict) and body["text"]["format"].get("schema"):
            chat_like["response_format"] = {"type": "json_schema", "json_schema": body["text"]["format"]}
        reply = plan(chat_like, messages, scenario)
        response_id = "resp_" + secrets.token_hex(24)
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": bool(body.get("background")),
            "error": None,
            "incomplete_details": None,
            "model": MODEL,
            "output": [],
            "previous_response_id": previous,
            "store": body.get("store", True) is not False,
            "usage": None,
        }
        stored = None
        if response["store"]:
            given = body.get("input")
            given = (
                [{"role": "user", "content": [{"type": "input_text", "text": given}]}]
                if isinstance(given, str)
                else given or []
            )
            items = [{"type": "message", "id": "msg_" + secrets.token_hex(16), **item} for item in given]
            stored = self.stored[response_id] = Stored(response, messages, items)
        events = ResponsesEvents(response, stored)
        if body.get("stream") is not True:
            if body.get("background"):
                task = asyncio.ensure_future(self._produce(None, events, reply, scenario, messages))
                self.simulator.keep(task)
                return conn.write_json(200, {**response, "status": "queued"})
            await self._produce(None, events, reply, scenario, messages)
            return conn.write_json(200, events.response)
        conn.start_stream()
        return await self._produce(conn, events, reply, scenario, messages)

    async def _produce(
        self, conn: Connection | None, events: ResponsesEvents, reply: Any, scenario: Scenario, messages: list[Any]
    ) -> bool:
        """Stream the response to `conn` (None: only produce it, for a stored or background response)."""
        response = events.response

        async def send(data: bytes) -> None:
            if conn is not None:
                await conn.send(data, scenario.split)

        await send(events.event("response.created", response=dict(response)))
        await send(events.event("response.in_progress", response=dict(response)))
        if scenario.first_delay:
            await asyncio.sleep(scenario.first_delay)
        output: list[dict[str, Any]] = []
        if scenario.builtin:
            await send(self._builtin(events, output))
        if scenario.reasoning:
            await send(self._reasoning(events, output, scenario.reasoning))
        produced = 0
        texts = reply.texts[:1]
        for text in texts:
            item_id = "msg_" + secrets.token_hex(16)
            refusal = scenario.refusal
            opened: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            if refusal:
                opened = {"type": "refusal", "refusal": ""}
            item: dict[str, Any] = {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            at: dict[str, Any] = {"item_id": item_id, "output_index": len(output)}
            await send(events.event("response.output_item.added", output_index=len(output), item=item))
            await send(events.event("response.content_part.added", **at, content_index=0, part=opened))
            start = time.monotonic()
            for index, token in enumerate(split_tokens(text, scenario)):
                stop = await self._directive(conn, events, scenario, index)
                if stop is not None:
                    return stop
                kind = "response.refusal.delta" if refusal else "response.output_text.delta"
                extra: dict[str, Any] = {} if refusal else {"logprobs": []}
                await send(events.event(kind, **at, content_index=0, delta=token, **extra))
                produced += 1
                if scenario.delay:
                    await asyncio.sleep(max(0.0, start + (index + 1) * scenario.delay - time.monotonic()))
                if events.store is not None and events.store.cancelled.is_set():
                    break
            if refusal:
                part: dict[str, Any] = {"type": "refusal", "refusal": text}
                await send(events.event("response.refusal.done", **at, content_index=0, refusal=text))
            else:
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                await send(events.event("response.output_text.done", **at, content_index=0, text=text, logprobs=[]))
            await send(events.event("response.content_part.done", **at, content_index=0, part=part))
            item = {**item, "status": "completed", "content": [part]}
            await send(events.event("response.output_item.done", output_index=len(output), item=item))
            output.append(item)
            messages = [*messages, {"role": "assistant", "content": text}]
        for call in reply.calls:
            produced += await self._call(send, events, output, call, scenario)
        usage_in = sum(len(text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
        usage = {
            "input_tokens": usage_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": scenario.reasoning},
            "total_tokens": usage_in + produced,
        }
        final = {**response, "output": output, "usage": usage, "status": "completed"}
        kind = "response.completed"
        if events.store is not None and events.store.cancelled.is_set():
            final["status"], kind = "cancelled", "response.failed"
        elif scenario.finish in ("length", "content_filter"):
            reason = "max_output_tokens" if scenario.finish == "length" else "content_filter"
            final |= {"status": "incomplete", "incomplete_details": {"reason": reason}}
            kind = "response.incomplete"
        events.response = final
        if events.store is not None:
            events.store.response = final
            events.store.messages = messages
        await send(events.event(kind, response=final))
        if conn is not None:
            conn.end_stream()
        return True

    async def _directive(
        self, conn: Connection | None, events: ResponsesEvents, sc: Scenario, index: int
    ) -> bool | None:
        """What a failure directive does at content piece `index`: the connection's fate, or None to go on."""
        if conn is None:
            return None
        if index == sc.cut_after:
            await asyncio.sleep(0.05)
            conn.cut()
            return False
        if index == sc.error_after:
            error = {"code": "server_error", "message": "The model produced invalid content."}
            failed = {**events.response, "status": "failed", "error": error}
            await conn.send(events.event("response.failed", response=failed), sc.split)
            conn.end_stream()
            return True
        if index == sc.hold_after:
            await self.simulator.hold(sc.hold)
        if index == sc.silence_after:
            await asyncio.sleep(min(sc.silence, 300))
        return None

    async def _call(
        self, send: Any, events: ResponsesEvents, output: list[Any], call: PlannedCall, sc: Scenario
    ) -> int:
        item_id = "fc_" + secrets.token_hex(16)
        item = {"id": item_id, "type": "function_call", "status": "in_progress", "call_id": call.id}
        item |= {"name": call.name, "arguments": ""}
        at: dict[str, Any] = {"item_id": item_id, "output_index": len(output)}
        await send(events.event("response.output_item.added", output_index=len(output), item=item))
        pieces = split_arguments(call.arguments, sc.arg_pieces)
        for piece in pieces:
            await send(events.event("response.function_call_arguments.delta", **at, delta=piece))
        await send(events.event("response.function_call_arguments.done", **at, arguments=call.arguments))
        item = {**item, "status": "completed", "arguments": call.arguments}
        await send(events.event("response.output_item.done", output_index=len(output), item=item))
        output.append(item)
        return len(pieces)

    def _reasoning(self, events: ResponsesEvents, output: list[Any], count: int) -> bytes:
        item_id = "rs_" + secrets.token_hex(16)
        at: dict[str, Any] = {"item_id": item_id, "output_index": len(output), "summary_index": 0}
        pieces = [f"{' ' if index else ''}thought{index}" for index in range(count)]
        text = "".join(pieces)
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        out = [events.event("response.output_item.added", output_index=len(output), item=item)]
        out.append(
            events.event("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
        )
        out += [events.event("response.reasoning_summary_text.delta", **at, delta=piece) for piece in pieces]
        out.append(events.event("response.reasoning_summary_text.done", **at, text=text))
        out.append(
            events.event("response.reasoning_summary_part.done", **at, part={"type": "summary_text", "text": text})
        )
        item = {**item, "summary": [{"type": "summary_text", "text": text}]}
        out.append(events.event("response.output_item.done", output_index=len(output), item=item))
        output.append(item)
        return b"".join(out)

    def _builtin(self, events: ResponsesEvents, output: list[Any]) -> bytes:
        item_id = "ws_" + secrets.token_hex(16)
        at: dict[str, Any] = {"item_id": item_id, "output_index": len(output)}
        item = {"id": item_id, "type": "web_search_call", "status": "in_progress"}
        done = {**item, "status": "completed", "action": {"type": "search", "query": "chatsse"}}
        out = [
            events.event("response.output_item.added", output_index=len(output), item=item),
            events.event("response.web_search_call.in_progress", **at),
            events.event("response.web_search_call.searching", **at),
            events.event("response.sim_future.delta", **at, delta={"anything": [1, 2, 3]}),
            events.event("response.web_search_call.completed", **at),
            events.event("response.output_item.done", output_index=len(output), item=done),
        ]
        output.append(done)
        return b"".join(out)

    async def _stored_call(self, conn: Connection, request: RecordedRequest, rest: str) -> bool:
        response_id, _, action = rest.lstrip("/").partition("/")
        stored = self.stored.get(response_id)
        if stored is None:
            return conn.write_json(404, not_found(response_id))
        if request.method == "DELETE" and not action:
            del self.stored[response_id]
            return conn.write_json(200, {"id": response_id, "object": "response", "deleted": True})
        if request.method == "POST" and action == "cancel":
            stored.cancelled.set()
            return conn.write_json(200, {**stored.response, "status": "cancelled"})
        if request.method == "GET" and action == "input_items":
            return conn.write_json(200, {"object": "list", "data": stored.items, "has_more": False})
        if request.method == "GET" and not action:
            if request.query.get("stream") == "true":
                after = int(request.query.get("starting_after", "-1") or -1)
                conn.start_stream()
                for event in stored.events[after + 1 :]:
                    await conn.send(event, 0)
                conn.end_stream()
                return True
            return conn.write_json(200, stored.response)
        return conn.write_json(404, BAD_REQUEST)
