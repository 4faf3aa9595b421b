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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

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


def prices_from(document: Mapping[str, Any], path: str, problems: list[str]) -> Prices:
    """The `[[price]]` tables of a parsed CHATSSE_CONFIG file; every problem is appended naming the file, table
    and key."""
    tables = document.get("price", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: price must be [[price]] tables")
        return Prices()
    rows: dict[str, Price] = {}
    currencies: set[str] = set()
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
        if model in rows:
            problems.append(f"{where}: model {model!r} has an earlier [[price]] row")
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
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOperation
        micro = Decimal(str(value)) * MICRO
        if micro < 0 or micro != micro.to_integral_value():
            raise InvalidOperation
    except InvalidOperation:
        problems.append(f"{where}: {name} = {value!r} is not valid: expected {_KEYS[name]} (at most 6 decimals)")
        return None
    return int(micro)


def unknown_price_names(named: Mapping[str, str], prices: Prices) -> list[str]:
    """The problems of upstreams (`where` -> price name) that name a [[price]] row the file does not have."""
    return [
        f"{where}: price = {name!r} names no [[price]] row (known: {', '.join(prices.rows) or 'none'})"
        for where, name in named.items()
        if name not in prices.rows
    ]
