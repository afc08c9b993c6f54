"""keel.formats: the one place values are written for readers (pages, dashboards, exports)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

import pytest

from keel import formats as f
from keel.definitions.model import Label, Option


@pytest.mark.parametrize(("value", "kw", "text"), [
    (12000000, {}, "¥12,000,000.00"),
    ("12000000.00", {"style": "wan"}, "1,200 万"),
    (Decimal("12345678.9"), {"style": "wan"}, "1,234.57 万"),
    (-800000, {}, "-¥800,000.00"),
    (12000000, {"style": "wan", "lang": "en"}, "¥12.00M"),
    (1500, {"currency": "USD", "lang": "en"}, "$1,500.00"),
    ("n/a", {}, "n/a"),  # text left by a definition change is shown, never an error
    (None, {}, ""),
])
def test_money(value, kw, text):
    assert f.format_money(value, **kw) == text


def test_counts_numbers_and_percentages():
    assert f.format_count("5.00") == "5" and f.format_count(1234567) == "1,234,567"
    assert f.format_number("1234.50") == "1,234.5" and f.format_number("3", 2) == "3.00"
    assert f.format_percent("0.153") == "15.3%" and f.format_percent("0.15") == "15%"
    assert f.format_percent(95, points=True) == "95%" and f.format_percent(-0.6) == "-60%"
    assert f.format_number(float("nan")) == "nan" and f.format_count(True) == "True"


def test_units_beside_values():
    assert f.format_measure("14.00", "count") == "14 个"
    assert f.format_measure("14.00", "count", "en") == "14"  # English writes no measure word
    assert f.format_measure("14.00", "count", unit_label="人") == "14 人"
    assert f.format_measure("800000", "cny") == "¥800,000.00"
    assert f.format_measure("90", "percent") == "90%"
    assert f.format_measure("7.5", "hours", unit_label="小时") == "7.5 小时"


def test_a_field_value_by_its_type_and_its_definitions_format():
    unit = SimpleNamespace(id="unit", type="select", raw={}, options=(
        Option("cny", Label("元", "CNY")), Option("count", Label("个", "Count"))))
    target = SimpleNamespace(id="target", type="decimal", scale=2, raw={"format": {"unit_field": "unit"}})
    fields = {"unit": unit, "target": target}
    assert f.format_value(target, "14.00", record={"unit": "count"}, fields=fields) == "14 个"
    assert f.format_value(target, "800000.00", record={"unit": "cny"}, fields=fields) == "¥800,000.00"
    hours = SimpleNamespace(type="decimal", scale=1, raw={"format": {"unit": {"zh": "小时", "en": "h"}}})
    assert f.format_value(hours, "7.5") == "7.5 小时" and f.format_value(hours, "7.5", lang="en") == "7.5 h"
    wan = SimpleNamespace(type="money", currency="CNY", raw={"format": {"money": "wan"}})
    assert f.format_value(wan, "12000000") == "1,200 万"
    plain = SimpleNamespace(type="decimal", scale=2, raw={})
    assert f.format_value(plain, "12.5") == "12.50"  # the definition's scale
    assert f.format_value(SimpleNamespace(type="integer", raw={}), 5) == "5"
    assert f.format_value(SimpleNamespace(type="percent", raw={}), "0.25") == "25%"


def test_every_time_in_the_one_configured_zone(app):
    stored = dt.datetime(2025, 10, 18, 6, 3)  # naive: UTC, as SQLite gives it back
    with app.app_context():
        assert f.format_datetime(stored) == "2025-10-18 14:03"
        assert f.format_datetime("2025-10-18T06:03:00Z") == "2025-10-18 14:03"
        assert f.zone_label() == "Asia/Shanghai (UTC+08:00)"
        app.config["KEEL_TIMEZONE"] = "Europe/Berlin"
        assert f.format_datetime(stored) == "2025-10-18 08:03"
        assert 'datetime="2025-10-18T08:03:00+02:00"' in f.time_html(stored)
        app.config["KEEL_TIMEZONE"] = "Not/AZone"  # a typo falls back to the working calendar's zone
        assert f.format_datetime(stored) == "2025-10-18 14:03"
        assert f.format_datetime("not a time") == "not a time"


def test_status_words_are_translated(app):
    with app.test_request_context("/"):
        assert f.status_text("succeeded") == "成功" and f.status_text("queued") == "排队中"
        assert f.status_text("something_new") == "something_new"
    with app.test_request_context("/?lang=en"):
        assert f.status_text("timed_out") == "timed out"
