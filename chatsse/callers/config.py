"""Who the callers are and what each may spend: the `[[caller]]` and `[[team]]` tables, `[anonymous]` and
`quotas_in_memory` of the CHATSSE_CONFIG file, checked up front with every problem named by file, table and key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatsse.callers.keys import CallerKey, keys_from
from chatsse.prices import micro_units

PERIODS = ("hour", "day", "week", "month")
ANONYMOUS = "anonymous"
_LIMITS: dict[str, str] = {
    "requests_per_minute": "a whole number > 0",
    "tokens_per_minute": "a whole number > 0 (prompt + completion tokens)",
    "token_quota": "a whole number > 0, with quota_period",
    "max_streams": "a whole number > 0",
    "max_tokens": "a whole number > 0",
}
_KEYS: dict[str, str] = {
    "name": "a non-empty string",
    "key_sha256": "the hex SHA-256 of the key (chatsse keys new NAME prints it), or a list of them",
    "key_env": "the NAME of an environment variable holding the key, or a list of them",
    "models": "a list of model group names",
    "quota_period": "one of " + ", ".join(PERIODS),
    "budget": "an amount of the [[price]] rows' currency > 0, with budget_period",
    "budget_period": "one of " + ", ".join(PERIODS),
    "alert_at": "a list of fractions of the budget, each > 0 and <= 1, such as [0.5, 0.8, 1.0]",
    "admin": "true or false: it may read every caller's spend (GET /api/v1/admin/usage)",
    "guards": "a list of [[guard]] names: its guardrails, besides those of everyone",
    **_LIMITS,
}
_TEAM_KEYS = ("name", "members", "token_quota", "quota_period", "budget", "budget_period", "alert_at", "guards")
RESERVED_PREFIXES = ("team:", "ip:", "key:")  # what the counters of teams, addresses and plain keys are kept under


@dataclass(frozen=True, kw_only=True)
class CallerConfig:
    """A caller and its limits; None: no limit of that kind."""

    name: str
    key_sha256: str | None = field(default=None, repr=False)  # its one key (the first, when it has several)
    keys: tuple[CallerKey, ...] = field(default=(), repr=False)  # every key, each with its expiry (parsed files)

    def every_key(self) -> tuple[CallerKey, ...]:
        return self.keys or ((CallerKey(self.key_sha256),) if self.key_sha256 else ())

    models: tuple[str, ...] | None = None  # the model groups it may use (None: all)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_quota: int | None = None
    quota_period: str | None = None
    max_streams: int | None = None
    max_tokens: int | None = None
    budget: int | None = None  # micro-units of the prices' currency per budget_period
    budget_period: str | None = None
    alert_at: tuple[float, ...] = ()  # fractions of the budget whose crossing sends an alert
    admin: bool = False
    team: str | None = None  # the [[team]] it is a member of
    guards: tuple[str, ...] = ()  # the [[guard]] names it gets, besides everyone's


@dataclass(frozen=True)
class CallerTables:
    """What the file says about callers."""

    callers: tuple[CallerConfig, ...] = ()
    anonymous: CallerConfig | None = None  # limits for requests without a key, per client address
    quotas_in_memory: bool = False
    teams: tuple[CallerConfig, ...] = ()  # a team's shared limits: token_quota and budget (with alert_at)


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
        if caller.name.startswith(RESERVED_PREFIXES):
            problems.append(f"{where}: name {caller.name!r} starts with {caller.name.split(':')[0]}:, kept for chatsse")
        if any(key.sha256 in hashes for key in caller.keys):
            problems.append(f"{where}: its key is another caller's key; keys must be unique")
        names.add(caller.name)
        hashes.update(key.sha256 for key in caller.keys)
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
    teams = _teams(document, path, callers, problems)
    members = {member: team.name for team, listed in teams for member in listed}
    callers = [dataclasses.replace(c, team=members[c.name]) if c.name in members else c for c in callers]
    return CallerTables(tuple(callers), anonymous, in_memory, tuple(team for team, _ in teams))


def _teams(
    document: Mapping[str, Any], path: str, callers: list[CallerConfig], problems: list[str]
) -> list[tuple[CallerConfig, list[str]]]:
    """The `[[team]]` tables: each team's shared limits, and its members (callers, each in one team at most)."""
    tables = document.get("team", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: team must be [[team]] tables")
        return []
    known = {c.name for c in callers}
    teams: list[tuple[CallerConfig, list[str]]] = []
    team_of: dict[str, str] = {}
    for index, table in enumerate(tables, start=1):
        named = f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        where = f"{path}: [[team]] #{index}{named}"
        before = len(problems)
        for key in sorted(set(table) - set(_TEAM_KEYS)):
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_TEAM_KEYS)})")
        name, members = table.get("name"), table.get("members")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: name = {name!r} is not valid: expected a non-empty string")
        elif any(name.strip() == team.name for team, _ in teams):
            problems.append(f"{where}: name {name!r} is used already; names must be unique")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            problems.append(f"{where}: members = {members!r} is not valid: expected a list of [[caller]] names")
            members = []
        for member in members:
            if member not in known:
                problems.append(f"{where}: members names {member!r}, which is no [[caller]]'s name")
            elif member in team_of:
                problems.append(f"{where}: {member!r} is a member of team {team_of[member]!r} already")
            team_of.setdefault(member, str(name))
        limits = {k: v for k, v in table.items() if k not in ("name", "members")}
        _check_limits(limits, where, problems)
        if len(problems) == before:
            teams.append((CallerConfig(name=name.strip(), **_period_limits(limits)), members))
    return teams


def quota_problem(tables: CallerTables, path: str, redis_url: str | None) -> str | None:
    """A quota or budget kept only in this process resets on every restart; refused unless the file says so."""
    every = (*tables.callers, tables.anonymous, *(dataclasses.replace(t, name=f"team {t.name}") for t in tables.teams))
    with_quota = [c.name for c in every if c is not None and (c.token_quota or c.budget)]
    if with_quota and not redis_url and not tables.quotas_in_memory:
        return (
            f"{path}: token_quota or budget is set for {', '.join(with_quota)} but CHATSSE_REDIS_URL is not: a quota "
            "kept in memory starts again at every restart. Set CHATSSE_REDIS_URL, or quotas_in_memory = true at the "
            "top of the file if that is what you want."
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
    known = _KEYS if keyed else {k: v for k, v in _KEYS.items() if k not in ("key_sha256", "key_env", "admin")}
    for key in sorted(set(table) - set(known)):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    for key, value in table.items():
        whole = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if key in _LIMITS and key != "token_quota" and not whole:  # token_quota: with the period limits
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_LIMITS[key]}")
        elif key == "name" and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {_KEYS[key]}")
    if "models" in table:
        listed = table["models"]
        if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
            problems.append(f"{where}: models = {listed!r} is not valid: expected {_KEYS['models']}")
        else:
            for model in listed:
                if model not in models:
                    problems.append(f"{where}: models names {model!r}, which no upstream serves ({', '.join(models)})")
    if "admin" in table and not isinstance(table["admin"], bool):
        problems.append(f"{where}: admin = {table['admin']!r} is not valid: expected {_KEYS['admin']}")
    _check_limits({k: v for k, v in table.items() if k in _TEAM_KEYS}, where, problems)
    keys = keys_from(table, where, env, problems) if keyed else []
    if len(problems) > before:
        return None
    listed_models = table.get("models")
    return CallerConfig(
        name=table["name"].strip(),
        key_sha256=keys[0].sha256 if keys else None,
        keys=tuple(keys),
        models=tuple(listed_models) if listed_models is not None else None,
        requests_per_minute=table.get("requests_per_minute"),
        tokens_per_minute=table.get("tokens_per_minute"),
        max_streams=table.get("max_streams"),
        max_tokens=table.get("max_tokens"),
        admin=table.get("admin", False),
        **_period_limits(table),
    )


def _check_limits(table: Mapping[str, Any], where: str, problems: list[str]) -> None:
    """The limits kept per calendar period, which a team shares: token_quota and budget, with their periods."""
    for amount, period_key in (("token_quota", "quota_period"), ("budget", "budget_period")):
        period = table.get(period_key)
        if period is not None and period not in PERIODS:
            problems.append(f"{where}: {period_key} = {period!r} is not valid: expected {_KEYS[period_key]}")
        if amount in table and period is None:
            problems.append(f"{where}: {amount} needs {period_key} ({', '.join(PERIODS)})")
        if period is not None and amount not in table:
            problems.append(f"{where}: {period_key} without {amount}")
    quota = table.get("token_quota")
    if quota is not None and (not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0):
        problems.append(f"{where}: token_quota = {quota!r} is not valid: expected {_LIMITS['token_quota']}")
    if "budget" in table and not micro_units(table["budget"]):
        problems.append(f"{where}: budget = {table['budget']!r} is not valid: expected {_KEYS['budget']}")
    alert_at = table.get("alert_at")
    if alert_at is not None:
        if not isinstance(alert_at, list) or not all(
            isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1 for f in alert_at
        ):
            problems.append(f"{where}: alert_at = {alert_at!r} is not valid: expected {_KEYS['alert_at']}")
        elif "budget" not in table:
            problems.append(f"{where}: alert_at without budget")


def _period_limits(table: Mapping[str, Any]) -> dict[str, Any]:
    """The checked period limits of a table, as CallerConfig's fields."""
    return {
        "token_quota": table.get("token_quota"),
        "quota_period": table.get("quota_period"),
        "budget": micro_units(table["budget"]) if "budget" in table else None,
        "budget_period": table.get("budget_period"),
        "alert_at": tuple(sorted({float(f) for f in table.get("alert_at", ())})),
        "guards": tuple(table["guards"]) if isinstance(table.get("guards"), list) else (),
    }
