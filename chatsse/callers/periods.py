"""Quota periods: UTC calendar hours, days, weeks (from Monday) and months (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The start and end, as Unix times, of the `period` ("hour", "day", "week", "month") that holds `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period in ("day", "week"):
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "week":
            start -= timedelta(days=start.weekday())
        end = start + timedelta(days=1 if period == "day" else 7)
    elif period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(period)
    return start.timestamp(), end.timestamp()
