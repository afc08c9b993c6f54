"""Time for jobs: always aware and in UTC inside Keel; cron is read in the definition's time zone.
`now()` is the one place the scheduler and the executor ask for the time, so tests can pass a clock."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime in UTC; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A value read back from the database (SQLite returns naive UTC) as an aware UTC datetime."""
    return None if value is None else utc(value)
