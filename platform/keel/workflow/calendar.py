"""Working days in mainland China, for SLA due times ("closed within 7 working days").

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
import zoneinfo

import chinese_calendar
import holidays

log = logging.getLogger("keel.workflow.calendar")

DEFAULT_TZ = "Asia/Shanghai"
# Beyond this many calendar days without reaching the count, the calendar data is broken (a year of
# holidays?): stop instead of looping.
_MAX_SCAN_DAYS = 3660

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


def _zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    return zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz


def add_working_days(start: dt.datetime, n: int, tz: str | dt.tzinfo = DEFAULT_TZ) -> dt.datetime:
    """The moment `n` working days after `start`: the same local clock time (in `tz`) on the n-th
    working day after start's local date. Negative `n` counts back (a reminder one working day before
    a due time). A naive `start` is taken as UTC (Keel stores UTC). The result is in UTC.

    Submitted on Friday 2025-09-26 at 10:00, 7 working days → Monday 2025-10-13 at 10:00 (Sunday
    28 September and Saturday 11 October count, the National Day week does not)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"the number of working days must be a whole number, not {n!r}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    local = start.astimezone(_zone(tz))
    day, step, left = local.date(), (1 if n >= 0 else -1), abs(n)
    scanned = 0
    while left:
        day += dt.timedelta(days=step)
        scanned += 1
        if scanned > _MAX_SCAN_DAYS + abs(n) * 2:
            raise ValueError(f"no {abs(n)} working days found within {scanned} days of {start.isoformat()}")
        if is_working_day(day):
            left -= 1
    # Combine in the zone (not timedelta arithmetic) so a DST zone keeps the wall-clock time.
    moved = dt.datetime.combine(day, local.timetz().replace(tzinfo=None)).replace(tzinfo=_zone(tz))
    return moved.astimezone(dt.UTC)


def working_days_between(start: dt.datetime, end: dt.datetime, tz: str | dt.tzinfo = DEFAULT_TZ) -> int:
    """Working days after start's local date up to and including end's (0 when end is on the same day
    or earlier): how many working days a request took, for dashboards."""
    zone = _zone(tz)
    a = (start if start.tzinfo else start.replace(tzinfo=dt.UTC)).astimezone(zone).date()
    b = (end if end.tzinfo else end.replace(tzinfo=dt.UTC)).astimezone(zone).date()
    count, day = 0, a
    while day < b:
        day += dt.timedelta(days=1)
        count += is_working_day(day)
    return count
