"""Output guards on a Responses upstream's own events, which the /v1/responses face otherwise relays unchanged: each
text delta's text passes through the Screen's windows and goes out rewritten, what a window held goes out as one
more delta before its part's `.done`, every event that repeats the text (`.done`, the item, the Response) carries
it as released, and `sequence_number` stays contiguous. A block ends the open item and the response
(`response.incomplete`, reason `content_filter`) with the text released up to it (pure).
"""

from __future__ import annotations

from typing import Any

import orjson

from chatsse.events import Done, Event, Failed, Passthrough
from chatsse.guards.stream import Screen

DELTAS = {"response.output_text.delta": "output_text", "response.refusal.delta": "refusal"}
DONES = {"response.output_text.done": "text", "response.refusal.done": "refusal"}
TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed", "error"))
PART_TEXT = {"output_text": "text", "refusal": "refusal"}


class PassthroughScreen:
    """A Screen for Passthrough events; `blocked` names the guard that ended the reply, as the Screen's does."""

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        self.sequence = 0
        self.parts: dict[tuple[str, int], int] = {}  # (item id, content index): the screen's key for its text
        self.released: dict[tuple[str, int], list[str]] = {}
        self.at: dict[tuple[str, int], dict[str, Any]] = {}  # a part's item_id, output_index and content_index
        self.kinds: dict[tuple[str, int], str] = {}  # a part's type: output_text or refusal
        self.open_parts: set[tuple[str, int]] = set()  # parts whose `.done` has not gone out
        self.items: dict[str, dict[str, Any]] = {}  # output items by id, as added, then as done
        self.open_items: set[str] = set()
        self.response: dict[str, Any] | None = None  # as created: what an end written here starts from
        self.ended = False  # the upstream's terminal event went out

    @property
    def blocked(self) -> str | None:
        return self.screen.blocked

    def __call__(self, events: list[Event], final: bool) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if self.blocked is not None:
                break
            if isinstance(event, Passthrough):
                self._pass(event, out)
            elif isinstance(event, Done) and event.finish_reason == "content_filter" and event.filtered:
                if not self.ended:  # the Content Safety watch ended the reply: what it passed is checked here first
                    self._flush_all(out)
                    if self.blocked is not None:
                        break
                    self._end_blocked(out)
                out.append(event)
            else:
                if isinstance(event, Done | Failed) and not self.ended:
                    self._flush_all(out)
                out.append(event)
        if final and self.blocked is None and not self.ended:
            self._flush_all(out)
        if self.blocked is not None and not self.ended:
            self._end_blocked(out)
            out.append(Done("content_filter", None, [self.blocked]))
        return out

    def _pass(self, event: Passthrough, out: list[Event]) -> None:
        kind = event.kind
        payload = orjson.loads(event.data)
        if kind in DELTAS:
            key = (str(payload.get("item_id")), int(payload.get("content_index") or 0))
            if key not in self.parts:
                self.parts[key] = len(self.parts)
                self.released[key], self.kinds[key] = [], DELTAS[kind]
                self.at[key] = {k: payload.get(k) for k in ("item_id", "output_index", "content_index")}
                self.open_parts.add(key)
            text = self._through(key, str(payload.get("delta") or ""), False)
            if self.blocked is not None and not text:
                return
            payload["delta"] = text
        elif kind in DONES:
            key = (str(payload.get("item_id")), int(payload.get("content_index") or 0))
            if key in self.parts:
                self._flush(key, out)
                payload[DONES[kind]] = "".join(self.released[key])
                self.open_parts.discard(key)
        elif kind == "response.content_part.done":
            self._rewrite_part(str(payload.get("item_id")), int(payload.get("content_index") or 0), payload.get("part"))
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = payload.get("item")
            if isinstance(item, dict):
                self._rewrite_item(item)
                self.items[str(item.get("id"))] = item
                opened = kind == "response.output_item.added"
                (self.open_items.add if opened else self.open_items.discard)(str(item.get("id")))
        elif kind == "response.created":
            self.response = payload.get("response") if isinstance(payload.get("response"), dict) else None
        if kind in TERMINAL:
            response = payload.get("response")
            for item in response.get("output") or [] if isinstance(response, dict) else []:
                if isinstance(item, dict):
                    self._rewrite_item(item)
            self.ended = True
        out.append(self._numbered(kind, payload))

    def _numbered(self, kind: str, payload: dict[str, Any]) -> Passthrough:
        if "sequence_number" in payload:
            payload["sequence_number"] = self.sequence
        self.sequence += 1
        return Passthrough(kind, orjson.dumps(payload).decode())

    def _through(self, key: tuple[str, int], text: str, final: bool) -> str:
        released = self.screen.through(self.parts[key], text, final)
        if released:
            self.released[key].append(released)
        return released

    def _flush(self, key: tuple[str, int], out: list[Event]) -> None:
        """The text a part's window still holds, as one more delta (before its `.done`)."""
        if self.parts.get(key) not in self.screen.windows:
            return
        text = self._through(key, "", True)
        self.screen.windows.pop(self.parts[key], None)
        if text:
            kind = "response.refusal.delta" if self.kinds[key] == "refusal" else "response.output_text.delta"
            extra: dict[str, Any] = {} if kind == "response.refusal.delta" else {"logprobs": []}
            fields = {"type": kind, "sequence_number": 0, **self.at[key], "delta": text, **extra}
            out.append(self._numbered(kind, fields))

    def _flush_all(self, out: list[Event]) -> None:
        for key in list(self.parts):
            if self.blocked is None:
                self._flush(key, out)

    def _rewrite_part(self, item_id: str, index: int, part: Any) -> None:
        key = (item_id, index)
        field = PART_TEXT.get(str(part.get("type"))) if isinstance(part, dict) else None
        if field is not None and key in self.released:
            part[field] = "".join(self.released[key])

    def _rewrite_item(self, item: dict[str, Any]) -> None:
        for index, part in enumerate(item.get("content") or []):
            self._rewrite_part(str(item.get("id")), index, part)

    def _end_blocked(self, out: list[Event]) -> None:
        """The open parts and items ended as released, then `response.incomplete`, as the upstream would end it."""
        ended: dict[str, list[dict[str, Any]]] = {}
        for key in sorted(self.open_parts, key=self.parts.__getitem__):
            at, text, field = self.at[key], "".join(self.released[key]), PART_TEXT[self.kinds[key]]
            kind = "response.refusal.done" if field == "refusal" else "response.output_text.done"
            out.append(self._numbered(kind, {"type": kind, "sequence_number": 0, **at, field: text}))
            part = {"type": self.kinds[key], field: text}
            done = "response.content_part.done"
            out.append(self._numbered(done, {"type": done, "sequence_number": 0, **at, "part": part}))
            ended.setdefault(key[0], []).append(part)
        self.open_parts.clear()
        for item_id in [i for i in self.items if i in self.open_items]:
            item = self.items[item_id] = self.items[item_id] | {"status": "incomplete"}
            if item_id in ended:
                item["content"] = [*(item.get("content") or []), *ended[item_id]]
            done = "response.output_item.done"
            index = next((a["output_index"] for k, a in self.at.items() if k[0] == item_id), None)
            out.append(self._numbered(done, {"type": done, "sequence_number": 0, "output_index": index, "item": item}))
        self.open_items.clear()
        response = dict(self.response or {})
        details = {"reason": "content_filter"}
        response |= {"status": "incomplete", "incomplete_details": details, "output": list(self.items.values())}
        kind = "response.incomplete"
        out.append(self._numbered(kind, {"type": kind, "sequence_number": 0, "response": response}))
        self.ended = True
