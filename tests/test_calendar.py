"""Working days in mainland China: statutory holidays and the weekend days that become working days
(chinese-calendar), and the Monday–Friday fallback for years it does not know."""
from __future__ import annotations

import datetime as dt
import logging
import zoneinfo

import pytest

from keel import workdays
from keel.workflow import calendar
from keel.workflow.calendar import add_working_days, is_working_day, working_days_between

SH = zoneinfo.ZoneInfo("Asia/Shanghai")


def shanghai(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SH)


def test_the_national_day_week_2025_is_off_and_its_adjusted_weekend_days_are_working_days():
    assert not any(is_working_day(dt.date(2025, 10, d)) for d in range(1, 9))  # 国庆 + 中秋, 1–8 Oct
    assert is_working_day(dt.date(2025, 9, 28))   # a Sunday, worked to pay for the holiday
    assert is_working_day(dt.date(2025, 10, 11))  # a Saturday, worked too
    assert not is_working_day(dt.date(2025, 10, 12))  # an ordinary Sunday
    assert is_working_day(dt.date(2025, 10, 9))


def test_seven_working_days_across_the_national_day_holiday():
    # Friday 26 September 10:00: Sun 28, Mon 29, Tue 30, Thu 9, Fri 10, Sat 11, Mon 13 October.
    due = add_working_days(shanghai(2025, 9, 26, 10, 0), 7)
    assert due == shanghai(2025, 10, 13, 10, 0)
    assert due.tzinfo == dt.UTC


def test_one_working_day_before_the_holiday_lands_after_it_and_counting_back_skips_it_too():
    assert add_working_days(shanghai(2025, 9, 30, 18, 0), 1) == shanghai(2025, 10, 9, 18, 0)
    assert add_working_days(shanghai(2025, 10, 9, 10, 0), -1) == shanghai(2025, 9, 30, 10, 0)
    assert add_working_days(shanghai(2025, 10, 13, 9, 0), -1) == shanghai(2025, 10, 11, 9, 0)


def test_the_local_date_decides_not_the_utc_date():
    # 2025-09-30 17:00 UTC is already 1 October 01:00 in Shanghai (a holiday): the next working day is 9 Oct.
    start = dt.datetime(2025, 9, 30, 17, 0, tzinfo=dt.UTC)
    assert add_working_days(start, 1) == shanghai(2025, 10, 9, 1, 0)
    # In UTC the same instant is Tuesday 30 September; the next UTC working day is still 9 October.
    assert add_working_days(start, 1, tz="UTC") == dt.datetime(2025, 10, 9, 17, 0, tzinfo=dt.UTC)


def test_a_naive_start_is_utc_and_zero_days_is_the_start_itself():
    naive = dt.datetime(2025, 10, 13, 2, 0)
    assert add_working_days(naive, 0) == naive.replace(tzinfo=dt.UTC)
    assert add_working_days(naive, 1) == dt.datetime(2025, 10, 14, 2, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("bad", [1.5, "7", True, None])
def test_the_number_of_days_must_be_a_whole_number(bad):
    with pytest.raises(TypeError):
        add_working_days(shanghai(2025, 10, 13, 9, 0), bad)


def test_2027_falls_back_to_weekdays_minus_statutory_holidays_and_says_so_once(caplog, monkeypatch):
    monkeypatch.setattr(workdays, "_warned", set())
    caplog.set_level(logging.WARNING, logger="keel.workflow.calendar")
    assert calendar.uses_fallback(dt.date(2027, 1, 4)) and not calendar.uses_fallback(dt.date(2026, 1, 5))
    assert not is_working_day(dt.date(2027, 1, 1))   # New Year's Day, a Friday
    assert not is_working_day(dt.date(2027, 1, 2))   # Saturday
    assert is_working_day(dt.date(2027, 1, 4))       # Monday
    assert not is_working_day(dt.date(2027, 2, 8))   # Spring Festival
    # Thursday 31 December 2026 (known year) + 1 working day -> Monday 4 January 2027 (fallback year).
    assert add_working_days(shanghai(2026, 12, 31, 10, 0), 1) == shanghai(2027, 1, 4, 10, 0)
    warnings = [r for r in caplog.records if "2027" in r.getMessage()]
    assert len(warnings) == 1


def test_working_days_between_counts_the_days_a_request_took():
    assert working_days_between(shanghai(2025, 9, 26, 10), shanghai(2025, 10, 13, 9)) == 7
    assert working_days_between(shanghai(2025, 10, 13, 9), shanghai(2025, 10, 13, 18)) == 0
