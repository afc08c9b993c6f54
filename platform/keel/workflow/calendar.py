"""Working days in mainland China, for SLA due times ("closed within 7 working days"): moments in a
time zone on the calendar of `keel.workdays` (which the expression functions use too).

The State Council publishes each year's holidays together with the weekend days that become working
days to pay for them (调休): 2025-10-11, a Saturday, is a working day; 1–8 October 2025 are not.
`chinese-calendar` knows both, but only for the years it ships data for (2004–2026 in 1.11); it raises
NotImplementedError for any other year. For those years we fall back to Monday–Friday minus the
statutory holidays the `holidays` package lists (it knows no adjusted Saturdays), and log that once per
year so an operator sees that the package needs an update."""
from __future__ import annotations

import datetime as dt
import zoneinfo

from keel import workdays
from keel.workdays import is_working_day, uses_fallback  # noqa: F401 - the calendar's public API

DEFAULT_TZ = "Asia/Shanghai"


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
    day = workdays.add_working_days(local.date(), n)
    # Combine in the zone (not timedelta arithmetic) so a DST zone keeps the wall-clock time.
    moved = dt.datetime.combine(day, local.timetz().replace(tzinfo=None)).replace(tzinfo=_zone(tz))
    return moved.astimezone(dt.UTC)


def working_days_between(start: dt.datetime, end: dt.datetime, tz: str | dt.tzinfo = DEFAULT_TZ) -> int:
    """Working days after start's local date up to and including end's (0 when end is on the same day
    or earlier): how many working days a request took, for dashboards."""
    zone = _zone(tz)
    a = (start if start.tzinfo else start.replace(tzinfo=dt.UTC)).astimezone(zone).date()
    b = (end if end.tzinfo else end.replace(tzinfo=dt.UTC)).astimezone(zone).date()
    return max(0, workdays.working_days(a, b))
