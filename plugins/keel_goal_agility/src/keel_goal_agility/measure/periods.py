"""Periods ("YYYY-MM") and pacing: how much of a goal's target is due by the end of a month."""
from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
TIMEZONE = "Asia/Shanghai"  # the company's one time zone; the job definition names the same


class PeriodError(ValueError):
    """A period that is malformed or not finished yet; the message says which and why."""


def parse_period(text: Any) -> tuple[int, int]:
    m = PERIOD.match(str(text)) if isinstance(text, str) else None
    if m is None:
        raise PeriodError(f"period must be YYYY-MM (e.g. 2025-10), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def bounds(period: str) -> tuple[dt.date, dt.date]:
    """First and last day of the month."""
    y, m = parse_period(period)
    return dt.date(y, m, 1), dt.date(y, m, calendar.monthrange(y, m)[1])


def today(tz: str = TIMEZONE) -> dt.date:
    return dt.datetime.now(ZoneInfo(tz)).date()


def check_finished(period: str, now: dt.date | None = None) -> None:
    """A snapshot is of a finished month: refuse the current month and any later one."""
    first, last = bounds(period)
    now = now or today()
    if last >= now:
        raise PeriodError(f"period {period} has not ended yet (today is {now.isoformat()} in {TIMEZONE}); "
                          "snapshots are taken of finished months")


def previous_period(at: dt.datetime | dt.date | None = None, tz: str = TIMEZONE) -> str:
    """The month before `at` (a scheduled fire time, or now) in the company's time zone."""
    if isinstance(at, dt.datetime):
        day = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(ZoneInfo(tz)).date()
    else:
        day = at or today(tz)
    last = day.replace(day=1) - dt.timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def month_key(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def months_between(start: dt.date, end: dt.date) -> list[str]:
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _weight(weights: Any, key: str) -> Decimal:
    """A month's weight from a list of 12 (by calendar month) or a map by "YYYY-MM" or "MM"/"M"."""
    month = int(key[5:])
    if isinstance(weights, list):
        value = weights[month - 1] if len(weights) == 12 else 0
    elif isinstance(weights, Mapping):
        value = weights.get(key, weights.get(f"{month:02d}", weights.get(str(month), 0)))
    else:
        value = 0
    try:
        return max(Decimal(str(value)), Decimal(0))
    except ArithmeticError:
        return Decimal(0)


def monthly_fraction(weights: Any, start: dt.date, end: dt.date, period: str) -> Decimal | None:
    """Share of the target due by the end of `period` under monthly weights over the goal's months;
    None when the weights are unusable (the caller falls back to linear pacing)."""
    if isinstance(weights, str):
        try:
            weights = json.loads(weights)
        except ValueError:
            return None
    months = months_between(start, end)
    total = sum((_weight(weights, k) for k in months), Decimal(0))
    if total <= 0:
        return None
    due = sum((_weight(weights, k) for k in months if k <= period), Decimal(0))
    return min(due / total, Decimal(1))


def linear_fraction(start: dt.date | None, end: dt.date | None, period: str) -> Decimal:
    """Share of the target due by the end of `period` when it accrues evenly by day (the Python twin of
    the SQL in snapshot.py, used for monthly goals' fallback and by the benchmark's row-by-row loop)."""
    if start is None or end is None or end < start:
        return Decimal(1)
    _, last = bounds(period)
    done = (min(last, end) - start).days + 1
    return max(Decimal(0), min(Decimal(done) / Decimal((end - start).days + 1), Decimal(1)))
