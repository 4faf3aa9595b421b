"""Quota and budget periods: UTC calendar hours, days, weeks (from Monday) and months (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DAY = 86400
REPORT_DAYS = 32  # the spend report's counters are kept per day this long: a month's, whatever the month


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


_current: dict[str, tuple[float, float]] = {}


def current_bounds(period: str, now: float) -> tuple[float, float]:
    """`period_bounds`, computed again only when `now` leaves the last bounds found (a request's hot path asks)."""
    bounds = _current.get(period)
    if bounds is None or not bounds[0] <= now < bounds[1]:
        bounds = _current[period] = period_bounds(period, now)
    return bounds


def days_of(period: str, now: float) -> list[float]:
    """The starts of the UTC days of the `period` ("day", "week", "month") holding `now`, up to today's."""
    start, _ = period_bounds(period, now)
    today, _ = period_bounds("day", now)
    return [start + DAY * n for n in range(round((today - start) / DAY) + 1)]
