"""Who the callers are and what each may spend: the `[[caller]]` tables, `[anonymous]` and `quotas_in_memory` of
the CHATSSE_CONFIG file, checked up front with every problem named by file, table and key."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PERIODS = ("hour", "day", "week", "month")
ANONYMOUS = "anonymous"
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LIMITS: dict[str, str] = {
    "requests_per_minute": "a whole number > 0",
    "tokens_per_minute": "a whole number > 0 (prompt + completion tokens)",
    "token_quota": "a whole number > 0, with quota_period",
    "max_streams": "a whole number > 0",
    "max_tokens": "a whole number > 0",
}
_KEYS: dict[str, str] = {
    "name": "a non-empty string",
    "key_sha256": "the hex SHA-256 of the key (chatsse keys new NAME prints it)",
    "key_env": "the NAME of an environment variable holding the key",
    "models": "a list of model group names",
    "quota_period": "one of " + ", ".join(PERIODS),
    **_LIMITS,
}


@dataclass(frozen=True, kw_only=True)
class CallerConfig:
    """A caller and its limits; None: no limit of that kind."""

    name: str
    key_sha256: str | None = field(default=None, repr=False)
    models: tuple[str, ...] | None = None  # the model groups it may use (None: all)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_quota: int | None = None
    quota_period: str | None = None
    max_streams: int | None = None
    max_tokens: int | None = None

    @property
    def limited(self) -> bool:
        return any(getattr(self, name) is not None for name in _LIMITS) or self.models is not None


@dataclass(frozen=True)
class CallerTables:
    """What the file says about callers."""

    callers: tuple[CallerConfig, ...] = ()
    anonymous: CallerConfig | None = None  # limits for requests without a key, per client address
    quotas_in_memory: bool = False


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str) -> str:
    """`chatsse keys new NAME`: a new random key, and the [[caller]] table that admits it (only its hash)."""
    key = "cs-" + secrets.token_urlsafe(32)
    return (
        f"{key}\n\n# The key above is shown once: give it to {name!r} now. Add this to the CHATSSE_CONFIG file:\n"
        f'[[caller]]\nname = "{name}"\nkey_sha256 = "{key_sha256(key)}"\n'
    )


def callers_from(
    document: Mapping[str, Any], path: str, env: Mapping[str, str], models: list[str], problems: list[str]
) -> CallerTables:
    """The callers of a parsed CHATSSE_CONFIG file; every problem is appended naming the file, table and key."""
    tables = document.get("caller", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: caller must be [[caller]] tables")
        tables = []
    callers: list[CallerConfig] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, table in enumerate(tables, start=1):
        named = f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        where = f"{path}: [[caller]] #{index}{named}"
        caller = _caller(table, where, env, models, problems, keyed=True)
        if caller is None:
            continue
        if caller.name in names or caller.name == ANONYMOUS:
            problems.append(f"{where}: name {caller.name!r} is used already; names must be unique")
        if caller.key_sha256 in hashes:
            problems.append(f"{where}: its key is another caller's key; keys must be unique")
        names.add(caller.name)
        hashes.add(caller.key_sha256 or "")
        callers.append(caller)
    anonymous = None
    if "anonymous" in document:
        table = document["anonymous"]
        if isinstance(table, dict):
            anonymous = _caller({"name": ANONYMOUS, **table}, f"{path}: [anonymous]", env, models, problems, False)
        else:
            problems.append(f"{path}: anonymous must be a table: [anonymous]")
    in_memory = document.get("quotas_in_memory", False)
    if not isinstance(in_memory, bool):
        problems.append(f"{path}: quotas_in_memory = {in_memory!r} is not valid: expected true or false")
        in_memory = False
    return CallerTables(tuple(callers), anonymous, in_memory)


def quota_problem(tables: CallerTables, path: str, redis_url: str | None) -> str | None:
    """A quota kept only in this process resets on every restart; refused unless the file says so."""
    with_quota = [c.name for c in (*tables.callers, tables.anonymous) if c is not None and c.token_quota]
    if with_quota and not redis_url and not tables.quotas_in_memory:
        return (
            f"{path}: token_quota is set for {', '.join(with_quota)} but CHATSSE_REDIS_URL is not: a quota kept in "
            "memory starts again at every restart. Set CHATSSE_REDIS_URL, or quotas_in_memory = true at the top "
            "of the file if that is what you want."
        )
    return None


def _caller(
    table: dict[str, Any],
    where: str,
    env: Mapping[str, str],
    models: list[str],
    problems: list[str],
    keyed: bool,
) -> CallerConfig | None:
    before = len(problems)
    known = _KEYS if keyed else {k: v for k, v in _KEYS.items() if k not in ("key_sha256", "key_env")}
    for key in sorted(set(table) - set(known)):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    for key, value in table.items():
        if key in _LIMITS and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_LIMITS[key]}")
        elif key in ("name", "key_sha256", "key_env") and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_KEYS[key]}")
    if "models" in table:
        listed = table["models"]
        if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
            problems.append(f"{where}: models = {listed!r} is not valid: expected {_KEYS['models']}")
        else:
            for model in listed:
                if model not in models:
                    problems.append(f"{where}: models names {model!r}, which no upstream serves ({', '.join(models)})")
    period = table.get("quota_period")
    if period is not None and period not in PERIODS:
        problems.append(f"{where}: quota_period = {period!r} is not valid: expected {_KEYS['quota_period']}")
    if "token_quota" in table and period is None:
        problems.append(f"{where}: token_quota needs quota_period ({', '.join(PERIODS)})")
    if period is not None and "token_quota" not in table:
        problems.append(f"{where}: quota_period without token_quota")
    key_hash = _key_hash(table, where, env, problems) if keyed else None
    if len(problems) > before:
        return None
    listed_models = table.get("models")
    return CallerConfig(
        name=table["name"].strip(),
        key_sha256=key_hash,
        models=tuple(listed_models) if listed_models is not None else None,
        requests_per_minute=table.get("requests_per_minute"),
        tokens_per_minute=table.get("tokens_per_minute"),
        token_quota=table.get("token_quota"),
        quota_period=period,
        max_streams=table.get("max_streams"),
        max_tokens=table.get("max_tokens"),
    )


def _key_hash(table: dict[str, Any], where: str, env: Mapping[str, str], problems: list[str]) -> str | None:
    if ("key_sha256" in table) == ("key_env" in table):
        problems.append(f"{where}: needs exactly one of key_sha256 or key_env")
        return None
    if "key_env" in table:
        key = env.get(str(table["key_env"]), "").strip()
        if not key:
            problems.append(f"{where}: key_env = {table['key_env']!r} names an environment variable that is not set")
            return None
        return key_sha256(key)
    digest = str(table["key_sha256"]).strip().lower()
    if not _HEX_SHA256.match(digest):
        problems.append(f"{where}: key_sha256 is not valid: expected {_KEYS['key_sha256']}")
        return None
    return digest
