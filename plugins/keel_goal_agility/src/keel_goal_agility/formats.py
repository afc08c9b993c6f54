"""How goal values read to people: amounts as ¥800,000.00, counts without decimals, rates as 90%, incentive
weights as 拓新占比70%. One place, so the inbox, the approvers' panel and the graph say the same thing."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

UNIT_LABELS = {"cny": {"zh": "元", "en": "CNY"}, "count": {"zh": "个", "en": "count"},
               "percent": {"zh": "%", "en": "%"}}
CATEGORY_LABELS = {"new_business": {"zh": "拓新", "en": "new business"}, "upsell": {"zh": "增购", "en": "upsell"},
                   "renewal": {"zh": "续约", "en": "renewal"}, "other": {"zh": "其他", "en": "other"}}


def decimal_of(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        return None


def amount(value: Any, unit: str | None) -> str:
    """A target or actual in its unit; "无数据"/"no data" is the caller's business (None gives "—")."""
    d = decimal_of(value)
    if d is None:
        return "—"
    if unit == "cny":
        return f"¥{d:,.2f}"
    if unit == "percent":
        return f"{d.normalize():f}%" if d == d.to_integral() else f"{d:.2f}%"
    return f"{d:,.0f}" if d == d.to_integral() else f"{d:,.2f}"


def metric_text(metric: str | None, target: Any, unit: str | None, lang: str = "zh") -> str:
    """新增客户数 ≥ 40 个 / 客户增购额 ≥ ¥800,000.00 — from the fields, never from a title."""
    unit_word = "" if unit in ("cny", "percent") or unit is None else f" {UNIT_LABELS.get(unit, {}).get(lang, '')}"
    return f"{metric or ''} ≥ {amount(target, unit)}{unit_word}".strip()


def incentive_text(category: str | None, weight: Any, lang: str = "zh") -> str:
    w = decimal_of(weight)
    if w is None:
        return "—"
    label = CATEGORY_LABELS.get(category or "", {}).get(lang, category or "")
    pct = (w * 100).quantize(Decimal(1)) if (w * 100) == (w * 100).to_integral() else (w * 100).quantize(Decimal("0.1"))
    return f"{label}占比{pct}%" if lang == "zh" else f"{label} {pct}%"
