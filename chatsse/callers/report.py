"""The spend report: every caller and team's requests, tokens by kind, cost and refusals by reason in the current
UTC day, week or month, from the ledger's day counters, as JSON, CSV or a terminal table (pure but for the read)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from chatsse.callers.config import ANONYMOUS, CallerTables
from chatsse.callers.ledger import Ledger
from chatsse.callers.periods import days_of, period_bounds
from chatsse.prices import MICRO

REPORT_PERIODS = ("day", "week", "month")
COLUMNS = ("kind", "name", "team", "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost")


def report_rows(tables: CallerTables) -> list[tuple[str, str, str | None, str]]:
    """(kind, name, team, ledger row) of every configured caller, anonymous callers (one row) and team."""
    rows = [("caller", c.name, c.team, c.name) for c in tables.callers]
    if tables.anonymous is not None:
        rows.append(("caller", ANONYMOUS, None, ANONYMOUS))
    rows += [("team", t.name, None, f"team:{t.name}") for t in tables.teams]
    return rows


async def spend_report(ledger: Ledger, tables: CallerTables, period: str, now: float, currency: str) -> dict[str, Any]:
    """The report's JSON body for the `period` holding `now`."""
    rows = report_rows(tables)
    counters = await ledger.days([row for *_, row in rows], days_of(period, now))
    start, end = period_bounds(period, now)
    body = []
    for kind, name, team, row in rows:
        counted = counters.get(row, {})
        refusals = {k.removeprefix("refused:"): v for k, v in sorted(counted.items()) if k.startswith("refused:")}
        body.append(
            {
                "kind": kind,
                "name": name,
                "team": team,
                "requests": counted.get("requests", 0),
                "tokens": {
                    "prompt": counted.get("prompt", 0),
                    "cached": counted.get("cached", 0),
                    "completion": counted.get("completion", 0),
                },
                "cost": counted.get("cost", 0) / MICRO,
                "refusals": refusals,
            }
        )
    return {"period": period, "from": _iso(start), "to": _iso(end), "currency": currency, "rows": body}


def as_csv(report: dict[str, Any]) -> str:
    """One line per caller or team; a `refused_<code>` column per refusal reason seen."""
    codes = sorted({code for row in report["rows"] for code in row["refusals"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "currency", *(f"refused_{code}" for code in codes)])
    for row in report["rows"]:
        tokens = row["tokens"]
        writer.writerow(
            [row["kind"], row["name"], row["team"] or "", row["requests"], tokens["prompt"], tokens["cached"]]
            + [tokens["completion"], f"{row['cost']:.6f}", report["currency"]]
            + [row["refusals"].get(code, 0) for code in codes]
        )
    return out.getvalue()


def as_table(report: dict[str, Any]) -> str:
    """The report for a terminal: aligned columns, a total line."""
    header = ["KIND", "NAME", "TEAM", "REQUESTS", "PROMPT", "CACHED", "COMPLETION", f"COST ({report['currency']})"]
    lines = [header + ["REFUSED"]]
    for row in report["rows"]:
        tokens = row["tokens"]
        refused = ", ".join(f"{code} {n}" for code, n in row["refusals"].items()) or "-"
        lines.append(
            [row["kind"], row["name"], row["team"] or "-", str(row["requests"]), str(tokens["prompt"])]
            + [str(tokens["cached"]), str(tokens["completion"]), f"{row['cost']:.4f}", refused]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [f"{report['period']} from {report['from']} to {report['to']}"]
    for line in lines:
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        text.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(text) + "\n"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
