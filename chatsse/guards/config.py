"""The guards of the CHATSSE_CONFIG file: `[[guard]]` tables and who gets them (`guards = [...]` at the top for
everyone, and on a caller, `[anonymous]` or a team), checked up front with every problem named by file, table and
key. Each guard's detector is compiled here, once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatsse.guards.detectors import KINDS, REACH, Detector, blocklist_detector, pii_detector

SERVICE_KINDS = ("prompt_shield", "content_safety")  # Azure AI Content Safety: a call per check
GUARD_KINDS = ("pii", "blocklist", *SERVICE_KINDS)
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
SIDES = ("input", "output", "both")
SENTENCE_CAP = 1000  # a content_safety guard's window on output: to a sentence's end, at most this many characters
ACTIONS = ("block", "redact", "flag")
_KEYS = {
    "name": "a non-empty string",
    "kind": "one of " + ", ".join(GUARD_KINDS),
    "on": "one of " + ", ".join(SIDES),
    "action": "one of " + ", ".join(ACTIONS),
    "detect": "a list of: " + ", ".join(KINDS),
    "patterns": "a table of name = regex (the pii guard's own detectors)",
    "words": "a list of words and phrases (the blocklist guard's)",
    "hold_back": "a whole number of characters > 0: how much streamed text waits to be checked (content_safety: "
    "the most a window holds before it is checked without a sentence's end)",
    "endpoint": "the Azure AI Content Safety resource's https:// endpoint",
    "key_env": 'the NAME of an environment variable holding its key (or auth = "entra")',
    "auth": '"entra": a Microsoft Entra ID token instead of a key',
    "on_error": '"open" (let the request through) or "closed" (refuse it, 503 guard_unavailable)',
    "timeout": "seconds > 0 a check may take",
    "thresholds": "a table of category = severity (0 to 7) at which a text is blocked: " + ", ".join(CATEGORIES),
}


@dataclass(frozen=True)
class GuardConfig:
    name: str
    kind: str
    on: str = "both"
    action: str = "redact"
    detector: Detector = field(default_factory=lambda: Detector({}), compare=False)
    source: tuple[Any, ...] = ()  # what the detector was built from: equal guards compare equal
    hold_back: int = REACH
    # The Content Safety kinds: where, how to authenticate, what a failure does, and (content_safety) the bars.
    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)
    entra: bool = False
    on_error: str = "closed"
    timeout: float = 2.0
    thresholds: tuple[tuple[str, int], ...] = ()

    def checks(self, side: str) -> bool:
        return self.on in (side, "both")


@dataclass(frozen=True)
class GuardTables:
    guards: Mapping[str, GuardConfig] = field(default_factory=dict)
    everyone: tuple[str, ...] = ()  # `guards = [...]` at the top of the file

    def for_names(self, *names: tuple[str, ...] | None) -> list[GuardConfig]:
        """The guards of everyone, then those named (a caller's, its team's), each once, in that order."""
        chosen = dict.fromkeys([*self.everyone, *(name for group in names if group for name in group)])
        return [self.guards[name] for name in chosen if name in self.guards]


def guards_from(
    document: Mapping[str, Any], path: str, problems: list[str], env: Mapping[str, str] | None = None
) -> GuardTables:
    tables = document.get("guard", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: guard must be [[guard]] tables")
        return GuardTables()
    guards: dict[str, GuardConfig] = {}
    for index, table in enumerate(tables, start=1):
        named = f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        where = f"{path}: [[guard]] #{index}{named}"
        guard = _guard(table, where, problems, env or {})
        if guard is not None:
            if guard.name in guards:
                problems.append(f"{where}: name {guard.name!r} is used already; names must be unique")
            guards[guard.name] = guard
    everyone = guard_names(document.get("guards"), f"{path}: guards", guards, problems)
    return GuardTables(guards, everyone)


def guard_names(value: Any, where: str, guards: Mapping[str, GuardConfig], problems: list[str]) -> tuple[str, ...]:
    """A `guards = [...]` list, each name a [[guard]]'s."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        problems.append(f"{where} = {value!r} is not valid: expected a list of [[guard]] names")
        return ()
    for name in value:
        if name not in guards:
            problems.append(f"{where} names {name!r}, which is no [[guard]]'s name ({', '.join(guards) or 'none'})")
    return tuple(value)


def _guard(table: dict[str, Any], where: str, problems: list[str], env: Mapping[str, str]) -> GuardConfig | None:
    before = len(problems)
    for key in sorted(set(table) - set(_KEYS)):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
    name, kind = table.get("name"), table.get("kind")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name = {name!r} is not valid: expected {_KEYS['name']}")
    if kind not in GUARD_KINDS:
        problems.append(f"{where}: kind = {kind!r} is not valid: expected {_KEYS['kind']}")
    service = kind in SERVICE_KINDS
    on = table.get("on", "input" if service else "both")
    action = table.get("action", "redact" if kind == "pii" else "block")
    for key, value, allowed in (("on", on, SIDES), ("action", action, ACTIONS)):
        if value not in allowed:
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_KEYS[key]}")
    hold_back = table.get("hold_back", SENTENCE_CAP if kind == "content_safety" else REACH)
    if not isinstance(hold_back, int) or isinstance(hold_back, bool) or hold_back <= 0:
        problems.append(f"{where}: hold_back = {hold_back!r} is not valid: expected {_KEYS['hold_back']}")
    if service:
        if kind == "prompt_shield" and on != "input":
            problems.append(f"{where}: on = {on!r}: Prompt Shields reads prompts: expected on = 'input'")
        if action == "redact":
            problems.append(f"{where}: action = 'redact' is not valid for {kind}: expected block or flag")
        remote = _service(table, str(kind), where, env, problems)
        if len(problems) > before:
            return None
        source = tuple(sorted(table.items()))
        return GuardConfig(str(name).strip(), str(kind), on, action, source=source, hold_back=hold_back, **remote)
    detector, source = _detector(table, kind, where, problems)
    if len(problems) > before or detector is None:
        return None
    return GuardConfig(str(name).strip(), str(kind), on, action, detector, source, hold_back)


def _service(
    table: dict[str, Any], kind: str, where: str, env: Mapping[str, str], problems: list[str]
) -> dict[str, Any]:
    """The Content Safety kinds' own keys, checked."""
    endpoint, key_env, auth = table.get("endpoint"), table.get("key_env"), table.get("auth")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        problems.append(f"{where}: endpoint = {endpoint!r} is not valid: expected {_KEYS['endpoint']}")
    key = None
    if auth not in (None, "entra"):
        problems.append(f"{where}: auth = {auth!r} is not valid: expected {_KEYS['auth']}")
    if (key_env is None) == (auth is None):
        problems.append(f'{where}: needs exactly one of key_env or auth = "entra"')
    elif key_env is not None:
        key = env.get(str(key_env), "").strip()
        if not key:
            problems.append(f"{where}: key_env = {key_env!r} names an environment variable that is not set")
    on_error, timeout = table.get("on_error", "closed"), table.get("timeout", 2.0)
    if on_error not in ("open", "closed"):
        problems.append(f"{where}: on_error = {on_error!r} is not valid: expected {_KEYS['on_error']}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problems.append(f"{where}: timeout = {timeout!r} is not valid: expected {_KEYS['timeout']}")
    given = table.get("thresholds", {})
    bars = {category: 4 for category in CATEGORIES} if kind == "content_safety" else {}
    if not isinstance(given, dict) or any(
        c not in CATEGORIES or not isinstance(v, int) or not 0 <= v <= 7 for c, v in given.items()
    ):
        problems.append(f"{where}: thresholds = {given!r} is not valid: expected {_KEYS['thresholds']}")
    elif kind == "content_safety":
        bars |= given
    return {
        "endpoint": str(endpoint).rstrip("/"),
        "api_key": key or None,
        "entra": auth == "entra",
        "on_error": on_error,
        "timeout": float(timeout) if isinstance(timeout, int | float) else 2.0,
        "thresholds": tuple(sorted(bars.items())),
    }


def _detector(
    table: dict[str, Any], kind: Any, where: str, problems: list[str]
) -> tuple[Detector | None, tuple[Any, ...]]:
    if kind == "blocklist":
        words = table.get("words")
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            problems.append(f"{where}: words = {words!r} is not valid: expected {_KEYS['words']}")
            return None, ()
        return blocklist_detector(words), (tuple(words),)
    if kind != "pii":
        return None, ()
    detect, own = table.get("detect", list(KINDS)), table.get("patterns", {})
    if not isinstance(detect, list) or any(d not in KINDS for d in detect):
        problems.append(f"{where}: detect = {detect!r} is not valid: expected {_KEYS['detect']}")
        return None, ()
    if not isinstance(own, dict) or not all(isinstance(v, str) for v in own.values()):
        problems.append(f"{where}: patterns = {own!r} is not valid: expected {_KEYS['patterns']}")
        return None, ()
    for pattern_name, pattern in own.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"{where}: patterns.{pattern_name} is not a valid regex ({exc})")
            return None, ()
    return pii_detector(detect, own), (tuple(detect), tuple(sorted(own.items())))
