"""What tokens cost: the `[[price]]` tables of CHATSSE_CONFIG, checked up front, and a reply's cost in whole
micro-units of the file's one currency (pure).

    [[price]]
    model = "gpt-4o-mini"      # the base model as the upstream names it in `model` (a date suffix is ignored)
    input = 0.15               # per 1M prompt tokens that were not cached
    cached_input = 0.075       # per 1M cached prompt tokens (default: input)
    output = 0.60              # per 1M completion tokens, reasoning tokens included
    currency = "USD"           # the default; one currency per file

An upstream whose `model` field is generic (a local server, a fine-tune) names its row: `price = "gpt-4o-mini"`.
Costs are integers of micro-units: each reply's is rounded once, so sums never drift.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the configuration this checks; they import nothing from here but micro_units
    from chatsse.callers.config import CallerTables
    from chatsse.upstreams.config import UpstreamConfig

BUILTIN = Path(__file__).parent / "builtin_prices.toml"

MICRO = 1_000_000  # micro-units per unit of currency; also tokens per "1M"
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-11-20 is gpt-4o
_RATES = ("input", "cached_input", "output")
_KEYS = {
    "model": "the base model id, as the upstream's replies name it",
    "input": "a price per 1M tokens >= 0",
    "cached_input": "a price per 1M tokens >= 0",
    "output": "a price per 1M tokens >= 0",
    "currency": "a currency code such as USD",
}


@dataclass(frozen=True)
class Price:
    """One model's prices, in micro-units per 1M tokens (so per token, in micro-units, they read the same)."""

    model: str
    input: int
    cached_input: int
    output: int

    def cost(self, prompt: int, cached: int, completion: int) -> int:
        """A reply's cost in micro-units: its uncached prompt, cached prompt and completion tokens (reasoning
        included) at their prices, rounded once (half up)."""
        cached = min(cached, prompt)
        scaled = (prompt - cached) * self.input + cached * self.cached_input + completion * self.output
        return (scaled + MICRO // 2) // MICRO


@dataclass(frozen=True)
class Prices:
    """The price rows of a config file, by model, and their currency."""

    rows: Mapping[str, Price] = field(default_factory=dict)
    currency: str = "USD"

    def __bool__(self) -> bool:
        return bool(self.rows)

    def find(self, model: str | None, named: str | None = None) -> Price | None:
        """The row an upstream names, else the one of the model its reply names (with or without a date suffix)."""
        if named is not None:
            return self.rows.get(named)
        if not model:
            return None
        return self.rows.get(model) or self.rows.get(_DATE_SUFFIX.sub("", model))

    def of_reply(self, model: str | None, upstream: UpstreamConfig) -> Price | None:
        """A reply's row: the one its upstream names, else its `model` field's, else (a reply that names a model
        no row has) the row of the upstream's deployment or model group name, as start-up checked for budgets."""
        return self.find(model, upstream.price) or self.of_upstream(upstream)

    def of_upstream(self, upstream: UpstreamConfig) -> Price | None:
        """The row an upstream's replies are priced at when their `model` field is no help."""
        if upstream.price is not None:
            return self.rows.get(upstream.price)
        return self.find(upstream.deployment) or self.find(upstream.model)


def prices_from(document: Mapping[str, Any], path: str, problems: list[str]) -> Prices:
    """The `[[price]]` tables of a parsed CHATSSE_CONFIG file, over the built-in file's rows if `prices =
    "builtin"`; every problem is appended naming the file, table and key."""
    tables = document.get("price", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: price must be [[price]] tables")
        return Prices()
    rows: dict[str, Price] = {}
    currencies: set[str] = set()
    base = document.get("prices")
    if base is not None and base != "builtin":
        problems.append(f'{path}: prices = {base!r} is not valid: expected "builtin" (the file shipped in chatsse)')
    elif base == "builtin":
        builtin = builtin_prices()
        rows.update(builtin.rows)
        currencies.add(builtin.currency)
    own: set[str] = set()
    for index, table in enumerate(tables, start=1):
        where = f"{path}: [[price]] #{index}" + (
            f" ({table['model']!r})" if isinstance(table.get("model"), str) else ""
        )
        for key in sorted(set(table) - set(_KEYS)):
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        model = table.get("model")
        if not isinstance(model, str) or not model.strip():
            problems.append(f"{where}: model is missing: expected {_KEYS['model']}")
            continue
        if model in own:
            problems.append(f"{where}: model {model!r} has an earlier [[price]] row")
        own.add(model)
        currency = table.get("currency", "USD")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            problems.append(f"{where}: currency = {currency!r} is not valid: expected {_KEYS['currency']}")
        else:
            currencies.add(currency)
        wanted = [name for name in _RATES if name in table or name != "cached_input"]  # cached_input may be left out
        rates = {name: _micro(table, name, where, problems) for name in wanted}
        if any(rate is None for rate in rates.values()):
            continue
        given = {name: rate for name, rate in rates.items() if rate is not None}
        cached = given.get("cached_input", given["input"])
        rows[model] = Price(model, given["input"], cached, given["output"])
    if len(currencies) > 1:
        problems.append(f"{path}: [[price]] rows in {', '.join(sorted(currencies))}: one currency per file")
    return Prices(rows, currencies.pop() if len(currencies) == 1 else "USD")


def _micro(table: Mapping[str, Any], name: str, where: str, problems: list[str]) -> int | None:
    """A price per 1M tokens as whole micro-units; None (and a problem) if missing or not a price."""
    value = table.get(name)
    if value is None:
        problems.append(f"{where}: {name} is missing: expected {_KEYS[name]}")
        return None
    micro = micro_units(value)
    if micro is None:
        problems.append(f"{where}: {name} = {value!r} is not valid: expected {_KEYS[name]} (at most 6 decimals)")
    return micro


def micro_units(value: Any) -> int | None:
    """An amount of currency (a TOML number >= 0, at most 6 decimals) as whole micro-units; None if it is not one."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOperation
        micro = Decimal(str(value)) * MICRO
        if micro < 0 or micro != micro.to_integral_value():
            raise InvalidOperation
    except InvalidOperation:
        return None
    return int(micro)


@functools.cache
def builtin_prices() -> Prices:
    """The price file shipped in the package (`prices = "builtin"`), with the date its figures were read."""
    problems: list[str] = []
    with BUILTIN.open("rb") as file:
        prices = prices_from({"price": tomllib.load(file)["price"]}, str(BUILTIN), problems)
    assert not problems, problems
    return prices


def builtin_date() -> str:
    with BUILTIN.open("rb") as file:
        return str(tomllib.load(file)["read_on"])


def unpriced_budgets(tables: CallerTables, upstreams: Sequence[UpstreamConfig], prices: Prices, path: str) -> list[str]:
    """A budget needs a price for every upstream its caller (or team's members) may use: the problems if not."""
    by_name = {caller.name: caller for caller in tables.callers}
    budgeted = [(f"[[caller]] {c.name!r}", [c]) for c in tables.callers if c.budget]
    if tables.anonymous is not None and tables.anonymous.budget:
        budgeted.append(("[anonymous]", [tables.anonymous]))
    for team in tables.teams:
        if team.budget:
            budgeted.append((f"[[team]] {team.name!r}", [c for c in by_name.values() if c.team == team.name]))
    problems = []
    for where, callers in budgeted:
        listed = [c.models for c in callers]
        groups = None if None in listed else {m for models in listed for m in models or ()}
        unpriced = [u.name for u in upstreams if (groups is None or u.model in groups) and not prices.of_upstream(u)]
        if unpriced:
            problems.append(
                f"{path}: {where}: budget is set, but its upstreams {', '.join(unpriced)} have no [[price]] row: add "
                'one for the deployment\'s model (or prices = "builtin"), or name it with price = "..." on the '
                "upstream"
            )
    return problems


def unknown_price_names(named: Mapping[str, str], prices: Prices) -> list[str]:
    """The problems of upstreams (`where` -> price name) that name a [[price]] row the file does not have."""
    return [
        f"{where}: price = {name!r} names no [[price]] row (known: {', '.join(prices.rows) or 'none'})"
        for where, name in named.items()
        if name not in prices.rows
    ]
