"""The guards of the CHATSSE_CONFIG file: `[[guard]]` tables and who gets them (`guards = [...]` at the top for
everyone, and on a caller, `[anonymous]` or a team), checked up front with every problem named by file, table and
key. Each guard's detector is compiled here, once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatsse.guards.detectors import KINDS, REACH, Detector, blocklist_detector, pii_detector

GUARD_KINDS = ("pii", "blocklist")
LATER_KINDS = ("prompt_shield", "content_safety")  # Azure AI Content Safety: not in this version
SIDES = ("input", "output", "both")
ACTIONS = ("block", "redact", "flag")
_KEYS = {
    "name": "a non-empty string",
    "kind": "one of " + ", ".join(GUARD_KINDS),
    "on": "one of " + ", ".join(SIDES),
    "action": "one of " + ", ".join(ACTIONS),
    "detect": "a list of: " + ", ".join(KINDS),
    "patterns": "a table of name = regex (the pii guard's own detectors)",
    "words": "a list of words and phrases (the blocklist guard's)",
    "hold_back": "a whole number of characters > 0: how much streamed text waits to be checked",
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


def guards_from(document: Mapping[str, Any], path: str, problems: list[str]) -> GuardTables:
    tables = document.get("guard", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: guard must be [[guard]] tables")
        return GuardTables()
    guards: dict[str, GuardConfig] = {}
    for index, table in enumerate(tables, start=1):
        named = f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        where = f"{path}: [[guard]] #{index}{named}"
        guard = _guard(table, where, problems)
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


def _guard(table: dict[str, Any], where: str, problems: list[str]) -> GuardConfig | None:
    before = len(problems)
    for key in sorted(set(table) - set(_KEYS) - {"on_error"}):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
    name, kind = table.get("name"), table.get("kind")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name = {name!r} is not valid: expected {_KEYS['name']}")
    if kind in LATER_KINDS:
        problems.append(f"{where}: kind = {kind!r} (Azure AI Content Safety) is not in this version of chatsse")
    elif kind not in GUARD_KINDS:
        problems.append(f"{where}: kind = {kind!r} is not valid: expected {_KEYS['kind']}")
    on, action = table.get("on", "both"), table.get("action", "block" if kind == "blocklist" else "redact")
    for key, value, allowed in (("on", on, SIDES), ("action", action, ACTIONS)):
        if value not in allowed:
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_KEYS[key]}")
    detector, source = _detector(table, kind, where, problems)
    hold_back = table.get("hold_back", REACH)
    if not isinstance(hold_back, int) or isinstance(hold_back, bool) or hold_back <= 0:
        problems.append(f"{where}: hold_back = {hold_back!r} is not valid: expected {_KEYS['hold_back']}")
    if len(problems) > before or detector is None:
        return None
    return GuardConfig(str(name).strip(), str(kind), on, action, detector, source, hold_back)


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
