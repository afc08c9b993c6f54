"""Values as a reader expects to see them: money as the locale writes it (¥12,000,000.00, or 1,200 万 where
the definition asks), counts without decimals, percentages with %, units beside values, every time in the
one configured zone, and status words in the reader's language.

This is the one place pages, dashboards and exports format values, so a number reads the same on every
page. Numbers go through Babel (the CLDR data Flask-Babel already brings), not hand-written grouping. It
sits at the bottom of the layers: it knows fields only by their shape (`type`, `options`, `raw`), never by
importing the definition model, so everything above can use it.

The functions never raise on odd input (a value a definition change left behind, text where a number was
expected): they show the value's text instead, because a page must not fail over one cell.
"""
from __future__ import annotations

import datetime as dt
import functools
import os
import zoneinfo
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from babel import Locale
from babel.numbers import NumberPattern, parse_pattern
from markupsafe import Markup, escape

from keel.i18n import current_lang, translate

DEFAULT_ZONE = "Asia/Shanghai"  # the working calendar's zone (keel.workflow.calendar.DEFAULT_TZ)
CURRENCY_SYMBOLS = {"CNY": "¥", "RMB": "¥", "USD": "$", "EUR": "€", "HKD": "HK$", "JPY": "¥", "GBP": "£"}
WAN = Decimal(10000)


def N_(msgid: str) -> str:
    """Marks a msgid for extraction; translated when shown."""
    return msgid


# Status and counter words the engine stores as ids (job runs and attempts, the queue, workflow
# instances and tasks, connector counts): one table, so no page shows a raw English id.
STATUS_WORDS = {
    "queued": N_("queued"), "running": N_("running"), "succeeded": N_("succeeded"), "failed": N_("failed"),
    "skipped": N_("skipped"), "done": N_("done"), "error": N_("error"), "interrupted": N_("interrupted"), "lost": N_("lost"), "timed_out": N_("timed out"),
    "ok": N_("working"), "unavailable": N_("unavailable"), "in-process": N_("in process (no Redis)"),
    "scheduler": N_("schedule"), "manual": N_("by hand"), "api": N_("API"), "retry": N_("retry"),
    "pending": N_("pending"), "approved": N_("approved"), "rejected": N_("rejected"),
    "cancelled": N_("cancelled"), "withdrawn": N_("withdrawn"), "active": N_("active"),
    "created": N_("created"), "updated": N_("updated"), "unchanged": N_("unchanged"),
    "invalid": N_("invalid"), "deactivated": N_("deactivated"), "deleted": N_("deleted"),
    "items": N_("items"), "errors": N_("errors"), "chunks": N_("chunks"), "records": N_("records"),
    "flagged": N_("flagged"), "goals": N_("goals"), "marked": N_("marked"), "notified": N_("notified"),
}


def status_text(word: Any) -> str:
    """A status or counter id in the reader's language; an unknown word is shown as it is."""
    if word is None:
        return ""
    msgid = STATUS_WORDS.get(str(word))
    return translate(msgid) if msgid else str(word)


# ---------------------------------------------------------------- numbers

def _locale(lang: str | None) -> str:
    lang = lang or current_lang()
    return "en" if lang == "en" else "zh_CN"


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _grouped(d: Decimal, decimals: int | None, lang: str | None) -> str:
    if decimals is None:
        # as many decimals as the value has (at most 6), trailing zeros dropped
        d = d.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP).normalize()
        places = max(0, -d.as_tuple().exponent)
        pattern = "#,##0" + ("." + "#" * places if places else "")
    else:
        d = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    return _number_pattern(pattern).apply(d, _babel_locale(_locale(lang)))


@functools.lru_cache(maxsize=64)
def _number_pattern(pattern: str) -> NumberPattern:
    # what babel.numbers.format_decimal does per call, parsed once: a board formats hundreds of numbers
    return parse_pattern(pattern)


@functools.lru_cache(maxsize=8)
def _babel_locale(name: str) -> Locale:
    return Locale.parse(name)


def format_number(value: Any, decimals: int | None = None, lang: str | None = None) -> str:
    """1234.5 -> '1,234.5' (grouping; `decimals` fixes the places, None keeps the value's own)."""
    d = _decimal(value)
    return "" if value is None else (str(value) if d is None else _grouped(d, decimals, lang))


def format_count(value: Any, lang: str | None = None) -> str:
    """A count: whole, grouped, no decimals ('5.00' -> '5')."""
    return format_number(value, 0, lang)


def format_money(value: Any, *, currency: str | None = "CNY", style: str = "yuan", lang: str | None = None) -> str:
    """'¥12,000,000.00'; style 'wan' writes large sums in 万 as Chinese readers do ('1,200 万'), in
    English as millions ('¥12.00M')."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    symbol = CURRENCY_SYMBOLS.get((currency or "CNY").upper(), (currency or "") + " ")
    sign, d = ("-" if d < 0 else ""), abs(d)
    if style == "wan":
        if _locale(lang) == "en":
            return f"{sign}{symbol}{_grouped(d / Decimal(1_000_000), 2, lang)}M"
        return f"{sign}{_grouped(d / WAN, None if d % WAN == 0 else 2, lang)} 万"
    return f"{sign}{symbol}{_grouped(d, 2, lang)}"


def format_percent(value: Any, decimals: int = 1, lang: str | None = None, *, points: bool = False) -> str:
    """A ratio as a percentage (0.153 -> '15.3%'); `points`: the value is already in percent (95 -> '95%').
    Trailing zeros are dropped ('15%', not '15.0%')."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    d = d if points else d * 100
    d = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{_grouped(d, None, lang)}%"


MONEY_UNITS = ("cny", "money", "rmb", "yuan")


def format_measure(value: Any, unit: str | None, lang: str | None = None, unit_label: str | None = None,
                   *, style: str = "yuan", decimals: int | None = None) -> str:
    """A value with its unit beside it: unit 'cny' -> money, 'count' -> '12 个', 'percent' -> '95%'
    (percent points), anything else -> the number and `unit_label`."""
    if value is None:
        return ""
    u = (unit or "").lower()
    if u in MONEY_UNITS:
        return format_money(value, style=style, lang=lang)
    if u == "percent":
        return format_percent(value, decimals if decimals is not None else 1, lang, points=True)
    if u == "count":
        # Chinese writes a measure word beside a count (12 个); English writes the bare number (an option
        # label such as "Count" names the kind of goal, not a unit)
        text = format_count(value, lang)
        return text if _locale(lang) == "en" else f"{text} {unit_label or '个'}"
    text = format_number(value, decimals, lang)
    return f"{text} {unit_label}" if unit_label else text


# ---------------------------------------------------------------- times

def display_zone() -> zoneinfo.ZoneInfo:
    """The one zone every page shows times in: KEEL_TIMEZONE (the app's config, else the environment),
    else the working calendar's zone."""
    name = None
    try:
        from flask import current_app, has_app_context

        if has_app_context():
            name = current_app.config.get("KEEL_TIMEZONE")
    except ImportError:  # pragma: no cover - Flask is a dependency
        pass
    name = name or os.environ.get("KEEL_TIMEZONE") or DEFAULT_ZONE
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(DEFAULT_ZONE)


def zone_label() -> str:
    """'Asia/Shanghai (UTC+08:00)'."""
    zone = display_zone()
    offset = dt.datetime.now(zone).strftime("%z")
    return f"{zone.key} (UTC{offset[:3]}:{offset[3:]})"


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def localise(value: Any) -> dt.datetime | None:
    """A stored time (UTC; SQLite gives it back naive, JSON as ISO text) in the display zone."""
    when = _as_datetime(value)
    if when is None:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return when.astimezone(display_zone())


def format_datetime(value: Any, lang: str | None = None, seconds: bool = False) -> str:
    """'2025-10-18 14:03' in the display zone; text that is not a time is shown as it is."""
    when = localise(value)
    if when is None:
        return "" if value is None else str(value)
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_date(value: Any, lang: str | None = None) -> str:
    if isinstance(value, dt.datetime):
        return format_datetime(value, lang)[:10]
    if isinstance(value, dt.date):
        return value.isoformat()
    return "" if value is None else str(value)[:10]


def time_html(value: Any, lang: str | None = None) -> Markup:
    """A <time> element: the local text, the ISO instant for machines and the zone as its title."""
    when = localise(value)
    if when is None:
        return Markup(escape("" if value is None else str(value)))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        when.isoformat(), zone_label(), when.strftime("%Y-%m-%d %H:%M"))


# ---------------------------------------------------------------- a field's value

def _field_format(field: Any) -> Mapping[str, Any]:
    raw = getattr(field, "raw", None) or {}
    fmt = raw.get("format") if isinstance(raw, Mapping) else None
    return fmt if isinstance(fmt, Mapping) else {}


def _label(value: Any, lang: str) -> str:
    if isinstance(value, Mapping):
        return str(value.get(lang) or value.get("zh") or value.get("en") or "")
    if hasattr(value, "get"):
        return value.get(lang)
    return "" if value is None else str(value)


def _option_label(field: Any, value: Any, lang: str) -> str:
    for o in getattr(field, "options", ()) or ():
        if o.id == value:
            return o.label.get(lang)
    return str(value)


def format_value(field: Any, value: Any, *, record: Mapping[str, Any] | None = None, lang: str | None = None,
                 names: Mapping[int, str] | None = None, fields: Mapping[str, Any] | None = None) -> str:
    """A field's value as text, by its type and the definition's `format` option:
    `{"money": "wan"}`, `{"unit": {"zh": "小时", "en": "h"}}`, `{"unit_field": "unit"}` (a select of the
    same record naming cny/count/percent), `{"decimals": 1}`. `fields`: the entity's fields by id, to find
    the unit field's option label; `names`: user id -> display name."""
    if value is None:
        return ""
    lg = "en" if (lang or current_lang()) == "en" else "zh"
    ftype = getattr(field, "type", None)
    fmt = _field_format(field)
    decimals = fmt.get("decimals") if isinstance(fmt.get("decimals"), int) else None
    unit_field = fmt.get("unit_field")
    if unit_field and record is not None and ftype in ("decimal", "integer", "money"):
        unit = record.get(unit_field)
        label = None
        if fields and unit_field in fields and unit is not None:
            label = _option_label(fields[unit_field], unit, lg)
        return format_measure(value, unit, lg, label, style=fmt.get("money", "yuan"), decimals=decimals)
    unit_label = _label(fmt.get("unit"), lg) if fmt.get("unit") else ""
    if ftype == "money":
        text = format_money(value, currency=getattr(field, "currency", None) or "CNY",
                            style=fmt.get("money", "yuan"), lang=lg)
    elif ftype == "integer":
        text = format_count(value, lg)
    elif ftype == "decimal":
        # the definition's places (its `scale`) unless `format.decimals` says otherwise; a count is an
        # integer field, or a decimal whose unit_field says "count"
        text = format_number(value, decimals if decimals is not None else getattr(field, "scale", None), lg)
    elif ftype == "percent":
        text = format_percent(value, decimals if decimals is not None else 1, lg)
    elif ftype == "datetime":
        text = format_datetime(value, lg)
    elif ftype == "date":
        text = format_date(value, lg)
    elif ftype == "boolean":
        text = translate("Yes") if value else translate("No")
    elif ftype in ("select", "multi_select"):
        vals = value if isinstance(value, list) else [value]
        text = ", ".join(_option_label(field, v, lg) for v in vals)
    elif ftype == "user":
        text = (names or {}).get(value, f"#{value}")
    elif ftype == "link" and isinstance(value, Mapping):
        title = value.get("title")
        text = str(title) if title is not None else f"#{value.get('id')}"
    else:
        text = str(value)
    return f"{text} {unit_label}" if unit_label and text else text


# ---------------------------------------------------------------- names

@functools.lru_cache(maxsize=65536)
def pinyin_of(name: str) -> tuple[str, str]:
    """('li na', 'ln') for 李娜: the key people are ordered by (pypinyin), and the initials a picker
    matches; other characters kept as they are, lower-cased."""
    from pypinyin import Style, lazy_pinyin

    syllables = [s.lower() for s in lazy_pinyin(name or "", style=Style.NORMAL, errors="default")]
    return " ".join(syllables), "".join(s[:1] for s in syllables if s.strip())


def jinja_filters() -> dict[str, Any]:
    """The filters every Keel page can use; register them on any other Jinja environment the same way."""
    return {"money": format_money, "count": format_count, "number": format_number, "percent": format_percent,
            "measure": format_measure, "value": format_value, "date": format_date, "datetime": time_html,
            "local_time": format_datetime, "status_text": status_text}
