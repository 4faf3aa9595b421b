"""Caller keys: their hashes, the `key_sha256` and `key_env` entries of a [[caller]] (one key or several, each with
an optional `expires`, so that an old key and its successor overlap), and `chatsse keys new|rotate` (pure)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
OVERLAP_DAYS = 7  # `chatsse keys rotate`: how long the old key keeps working by default


@dataclass(frozen=True)
class CallerKey:
    sha256: str
    expires: float | None = None  # Unix time; None: never

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_from(table: Mapping[str, Any], where: str, env: Mapping[str, str], problems: list[str]) -> list[CallerKey]:
    """A [[caller]]'s keys: `key_sha256` and `key_env`, each a string, an inline table with `expires`, or a list of
    them. Every problem is appended naming the file, table and key."""
    if "key_sha256" not in table and "key_env" not in table:
        problems.append(f"{where}: needs key_sha256 or key_env (a list of them for several keys)")
        return []
    keys: list[CallerKey] = []
    for field, inner in (("key_sha256", "sha256"), ("key_env", "env")):
        given = table.get(field, [])
        for entry in given if isinstance(given, list) else [given]:
            value, expires = entry, None
            if isinstance(entry, dict):
                value, expires = entry.get(inner), _moment(entry.get("expires"), f"{where}: {field}", problems)
                for unknown in sorted(set(entry) - {inner, "expires"}):
                    problems.append(f"{where}: {field} has unknown key {unknown!r} (known: {inner}, expires)")
            digest = _digest(field, value, where, env, problems)
            if digest is not None:
                keys.append(CallerKey(digest, expires))
    return keys


def new_key(name: str) -> str:
    """`chatsse keys new NAME`: a new random key, and the [[caller]] table that admits it (only its hash)."""
    key = _random_key()
    return (
        f"{key}\n\n# The key above is shown once: give it to {name!r} now. Add this to the CHATSSE_CONFIG file:\n"
        f'[[caller]]\nname = "{name}"\nkey_sha256 = "{key_sha256(key)}"\n'
    )


def rotated_key(name: str, current: list[CallerKey], days: float = OVERLAP_DAYS, now: float | None = None) -> str:
    """`chatsse keys rotate NAME`: a new key, and the key line that admits it beside the caller's current keys,
    which go on working for `days` more (or until their own earlier `expires`)."""
    key, until = _random_key(), (time.time() if now is None else now) + days * 86400
    entries = [
        f'{{sha256 = "{old.sha256}", expires = {_rfc3339(min(until, old.expires or until))}}}'
        for old in current
        if not old.expired(until - days * 86400)
    ]
    entries.append(f'"{key_sha256(key)}"')
    return (
        f"{key}\n\n# The key above is shown once: give it to {name!r} now. In the CHATSSE_CONFIG file, replace the "
        f"key_sha256 and key_env lines of [[caller]] {name!r} with this one; the old key works until its expires, "
        f"then gets 401 key_expired. Reload (chatsse reload, or SIGHUP) to apply it.\n"
        f"key_sha256 = [{', '.join(entries)}]\n"
    )


def _random_key() -> str:
    return "cs-" + secrets.token_urlsafe(32)


def _digest(field: str, value: Any, where: str, env: Mapping[str, str], problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        expected = "the hex SHA-256 of the key" if field == "key_sha256" else "the NAME of a variable holding a key"
        problems.append(f"{where}: {field} = {value!r} is not valid: expected {expected}")
        return None
    if field == "key_env":
        key = env.get(value.strip(), "").strip()
        if not key:
            problems.append(f"{where}: key_env = {value!r} names an environment variable that is not set")
            return None
        return key_sha256(key)
    digest = value.strip().lower()
    if not _HEX_SHA256.match(digest):
        problems.append(f"{where}: key_sha256 is not valid: expected the hex SHA-256 of the key")
        return None
    return digest


def _moment(value: Any, where: str, problems: list[str]) -> float | None:
    """`expires`: a TOML date-time or an RFC 3339 string, with its offset."""
    if value is None:
        return None
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        problems.append(f"{where}: expires = {value!r} is not valid: expected an RFC 3339 time with its offset")
        return None
    return moment.timestamp()


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(round(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
