"""What the simulator says: reply text from the prompt, tool calls when a request carries tools and asks for them,
JSON that fits a requested schema, what it saw of images, and one text per choice for `n`.

    echo:<text>          reply with <text> exactly (with tool calls: the calls' arguments, separated by `|`)
    a tool's result      (the last message is a `tool` one) "The tool said: <its content>"
    images               the reply names each image it got: its media type or host, its size and detail
    response_format      json_schema: JSON that fits the schema (every property filled); json_object: {"echo": ...}
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chatsse.simulator.scenario import DIRECTIVE, Scenario

TOKEN = re.compile(r"\s*\S{1,12}|\s+")  # roughly word-sized pieces, as a model streams them
FILLER = ("Lorem", " ipsum", " dolor", " sit", " amet", ",", " consectetur", " adipiscing", " elit", ".")
DEMO_CODE = '```python\ndef greet(name: str) -> str:\n    """Say hello."""\n    return f"Hello, {name}!"\n```'
ARGUMENT_PIECE = 6  # characters per argument piece, unless the prompt's `arg_pieces` says otherwise


@dataclass
class PlannedCall:
    id: str
    name: str
    arguments: str


@dataclass
class Reply:
    """What one request gets: a text per choice (a refusal's text, with `refusal`), or tool calls."""

    texts: list[str]
    calls: list[PlannedCall]
    finish: str
    legacy: bool = False  # the request named `functions` (deprecated): one call, as `delta.function_call`


def text_of(content: Any) -> str:
    """A message's text: its string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_text(messages: list[Any]) -> str:
    """The text of the last user message: where the directives are."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return text_of(users[-1].get("content")) if users else ""


def plan(body: dict[str, Any], messages: list[Any], scenario: Scenario) -> Reply:
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tools = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    legacy = not tools and isinstance(body.get("functions"), list)
    functions: list[dict[str, Any]] = [f for f in (body["functions"] if legacy else tools) if isinstance(f, dict)]
    wanted = scenario.tools or (1 if scenario.tool else 0)
    if wanted and last.get("role") not in ("tool", "function"):
        calls = _calls(1 if legacy else wanted, functions, scenario, prompt_text(messages))
        texts = [reply_text(messages, scenario)] if scenario.preamble else []
        finish = ("function_call" if legacy else "tool_calls") if scenario.finish == "stop" else scenario.finish
        return Reply(texts, calls, finish, legacy)
    if last.get("role") in ("tool", "function"):
        text = f"The tool said: {text_of(last.get('content'))}"
    else:
        text = reply_text(messages, scenario)
        text = _formatted(body.get("response_format"), text)
    n = body.get("n")
    choices = n if isinstance(n, int) and 1 <= n <= 128 else 1
    return Reply([text if i == 0 else f"{text} #{i}" for i in range(choices)], [], scenario.finish)


def reply_text(messages: list[dict[str, Any]], scenario: Scenario) -> str:
    """Deterministic reply: `echo:<text>` answers <text> exactly; otherwise a friendly, prompt-derived sentence."""
    if scenario.tokens > 0:
        return "".join(FILLER[i % len(FILLER)] for i in range(scenario.tokens))
    user_turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    raw = text_of(user_turns[-1].get("content")) if user_turns else ""
    if "echo:" in raw:
        return DIRECTIVE.sub("", raw.partition("echo:")[2])
    prompt = DIRECTIVE.sub("", raw).strip()
    seen = _images(user_turns[-1].get("content")) if user_turns else ""
    reply = (
        f"Hello! This is chatsse's built-in simulator, not a real model (turn {len(user_turns)}).\n\n"
        f"- You said: \u201c{prompt}\u201d{seen}\n"
        "- It streams token by token, as **Azure OpenAI** does, and the page renders *Markdown* as it arrives."
    )
    if "code" in prompt.lower():  # something for the page's highlighting to show
        reply += f"\n\nHere is some code:\n\n{DEMO_CODE}"
    return reply


def split_tokens(text: str, scenario: Scenario) -> list[str]:
    if scenario.tokens > 0:
        return [FILLER[i % len(FILLER)] for i in range(scenario.tokens)]
    return TOKEN.findall(text)


def split_arguments(text: str, spec: str) -> list[str]:
    """A call's arguments in pieces of the lengths `spec` lists (`3,0,5`: 0 is an empty piece), the rest in one."""
    lengths = [int(n) for n in spec.split(",") if n.strip().isdigit()] if spec else []
    if not lengths:
        return [text[i : i + ARGUMENT_PIECE] for i in range(0, len(text), ARGUMENT_PIECE)]
    pieces, at = [], 0
    for length in lengths:
        pieces.append(text[at : at + length])
        at += length
    if at < len(text):
        pieces.append(text[at:])
    return pieces


def example(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value that fits a JSON schema (every property filled), for tool arguments and structured output."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return example(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1]), defs, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example(schema[key][0], defs, depth + 1)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        return {name: example(sub, defs, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items"), defs, depth + 1)]
    return {"string": "sim", "integer": 1, "number": 1.5, "boolean": True}.get(str(kind))


def _calls(wanted: int, tools: list[dict[str, Any]], scenario: Scenario, prompt: str) -> list[PlannedCall]:
    echoed = DIRECTIVE.sub("", prompt.partition("echo:")[2]).split("|") if "echo:" in prompt else []
    calls = []
    for index in range(wanted):
        tool = tools[index % len(tools)] if tools else {}
        name = scenario.tool or str(tool.get("name") or "tool")
        if index < len(echoed):
            arguments = echoed[index]
        else:
            arguments = json.dumps(example(tool.get("parameters")) or {}, separators=(",", ":"))
        calls.append(PlannedCall(f"call_sim{index}", name, arguments))
    return calls


def _formatted(response_format: Any, text: str) -> str:
    if not isinstance(response_format, dict):
        return text
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return json.dumps(example(schema), separators=(",", ":"))
    if response_format.get("type") == "json_object":
        return json.dumps({"echo": text})
    return text


def _images(content: Any) -> str:
    """What the simulator saw of a message's images, to say in its reply."""
    if not isinstance(content, list):
        return ""
    seen = []
    for part in content:
        image = part.get("image_url") if isinstance(part, dict) else None
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            continue
        url, detail = image["url"], image.get("detail", "auto")
        if url.startswith("data:"):
            media, _, data = url[5:].partition(",")
            try:
                size = len(base64.b64decode(data)) if media.endswith(";base64") else len(data)
            except ValueError:  # not base64 after all: its length as sent
                size = len(data)
            seen.append(f"{media.removesuffix(';base64')} of {size} bytes (detail {detail})")
        else:
            seen.append(f"{urlsplit(url).hostname} image (detail {detail})")
    return f" I see {len(seen)} image(s): {'; '.join(seen)}." if seen else ""
