"""Working days in mainland China: the one calendar of Keel, used by workflow SLAs (due times,
reminders) and by the expression functions `working_days` and `add_working_days`.

The State Council publishes each year's holidays together with the weekend days that become working
days to pay for them (调休): 2025-10-11, a Saturday, is a working day; 1–8 October 2025 are not.
`chinese-calendar` knows both, but only for the years it ships data for (2004–2026 in 1.11); it raises
NotImplementedError for any other year. For those years we fall back to Monday–Friday minus the
statutory holidays the `holidays` package lists (it knows no adjusted Saturdays), and log that once per
year so an operator sees that the package needs an update."""
from __future__ import annotations

import datetime as dt
import functools
import logging
import threading

import chinese_calendar
import holidays

log = logging.getLogger("keel.workflow.calendar")

# A span longer than this (about ten years) is a data error, not a deadline: refused, not scanned.
MAX_SPAN_DAYS = 3660

_warned: set[int] = set()
_warned_lock = threading.Lock()


def _warn_fallback(year: int) -> None:
    with _warned_lock:
        if year in _warned:
            return
        _warned.add(year)
    log.warning("chinese-calendar has no data for %s: working days that year are Monday to Friday minus "
                "the statutory holidays of the `holidays` package (adjusted working weekends are not "
                "known); update chinese-calendar when the State Council has published %s", year, year)


@functools.lru_cache(maxsize=64)
def _fallback_holidays(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.country_holidays("CN", years=year))


def uses_fallback(day: dt.date) -> bool:
    """Whether `day` is judged by the Monday–Friday fallback (chinese-calendar has no data for it)."""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return True
    return False


def is_working_day(day: dt.date | dt.datetime) -> bool:
    if isinstance(day, dt.datetime):
        day = day.date()
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        _warn_fallback(day.year)
        return day.weekday() < 5 and day not in _fallback_holidays(day.year)


def working_days(start: dt.date, end: dt.date) -> int:
    """Working days after `start` up to and including `end`, negative when `end` is earlier (the order
    of `days_between`): Tuesday to the next Monday is 4 in an ordinary week."""
    if abs((end - start).days) > MAX_SPAN_DAYS:
        raise ValueError(f"working days over more than {MAX_SPAN_DAYS} days are not counted")
    sign, (a, b) = (1, (start, end)) if end >= start else (-1, (end, start))
    count, day = 0, a
    while day < b:
        day += dt.timedelta(days=1)
        count += is_working_day(day)
    return sign * count


def add_working_days(start: dt.date, n: int) -> dt.date:
    """The n-th working day after `start` (before it for a negative n); `start` itself for 0."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"the number of working days must be a whole number, not {n!r}")
    day, step, left, scanned = start, (1 if n >= 0 else -1), abs(n), 0
    while left:
        day += dt.timedelta(days=step)
        scanned += 1
        if scanned > MAX_SPAN_DAYS + abs(n) * 2:
            raise ValueError(f"no {abs(n)} working days found within {scanned} days of {start.isoformat()}")
        if is_working_day(day):
            left -= 1
    return day
