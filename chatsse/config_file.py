"""The CHATSSE_CONFIG file: its upstreams, callers, teams and prices, parsed and checked together, every problem
named by file, table and key (pure but for reading the file)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

from chatsse.callers.config import CallerTables, callers_from, quota_problem
from chatsse.guards.config import GuardTables, guard_names, guards_from
from chatsse.prices import Prices, prices_from, unknown_price_names, unpriced_budgets
from chatsse.upstreams.config import UpstreamConfig, upstreams_from

TOP_LEVEL = ("upstream", "caller", "anonymous", "quotas_in_memory", "price", "prices", "team", "guard", "guards")


def config_file(
    path: str, env: Mapping[str, str], problems: list[str]
) -> tuple[tuple[UpstreamConfig, ...], CallerTables, Prices, GuardTables]:
    """What the file at `path` says; `env` names the keys it refers to and whether Redis is set."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        problems.append(f"CHATSSE_CONFIG={path!r} cannot be read ({exc.strerror})")
        return (), CallerTables(), Prices(), GuardTables()
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML ({exc})")
        return (), CallerTables(), Prices(), GuardTables()
    unknown = sorted(set(document) - set(TOP_LEVEL))
    if unknown:
        problems.append(
            f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected [[upstream]], [[caller]], [[team]] and "
            "[[price]] tables, [anonymous], prices and quotas_in_memory"
        )
    upstreams = upstreams_from(document, path, env, problems)
    models = list(dict.fromkeys(upstream.model for upstream in upstreams))
    callers = callers_from(document, path, env, models, problems)
    problem = quota_problem(callers, path, env.get("CHATSSE_REDIS_URL", "").strip() or None)
    if problem:
        problems.append(problem)
    prices = prices_from(document, path, problems)
    named = {f"{path}: [[upstream]] {u.name!r}": u.price for u in upstreams if u.price is not None}
    problems += unknown_price_names(named, prices)
    problems += unpriced_budgets(callers, upstreams, prices, path)
    guards = guards_from(document, path, problems, env)
    for who in (*callers.callers, callers.anonymous, *callers.teams):
        if who is not None and who.guards:
            guard_names(list(who.guards), f"{path}: guards of {who.name!r}", guards.guards, problems)
    return upstreams, callers, prices, guards
