"""Values and formatting rules of dashboard widgets: checked when a definition is validated, compiled once
per app version, evaluated per record on the stored (raw) values.

A value is a literal or `{"setting": "a.b", "negate": bool, "times": number}`: a number read from the app's
`settings`, so a threshold lives in one place (app.json) and moves when the setting is applied. A rule is
`{"field", "op", "value"?, "abs"?, "style"}`; the first matching rule of a list gives the record's style.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

STYLES = ("red", "orange", "yellow", "green", "blue", "grey")
COLORS = {"red": "#d32f2f", "orange": "#ef6c00", "yellow": "#f9a825", "green": "#2e7d32", "blue": "#1565c0",
          "grey": "#757575", None: "#5c7080"}
ORDER_OPS = ("lt", "lte", "gt", "gte")
VALUE_OPS = ("eq", "ne", *ORDER_OPS)
OPS = (*VALUE_OPS, "isnull", "notnull")
RULE_KEYS = frozenset({"field", "op", "value", "abs", "style"})
NUMERIC = ("integer", "decimal", "money", "percent")
ORDERED = (*NUMERIC, "date", "datetime")


class RuleProblem(ValueError):
    """A rule or value that cannot be used; `where` is the JSON pointer suffix inside the rule."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where, self.message = where, message


def setting_at(settings: Mapping[str, Any], path: str) -> Any:
    """The app setting at a dotted path; KeyError when it is not there."""
    node: Any = settings
    for part in str(path).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _number(x: Any) -> Decimal | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        return Decimal(str(x)) if isinstance(x, (int, float, str, Decimal)) else None
    except InvalidOperation:
        return None


def resolve_value(raw: Any, settings: Mapping[str, Any], where: str = "/value") -> Any:
    """The literal a value stands for; RuleProblem when it names a missing or non-numeric setting."""
    if not isinstance(raw, Mapping):
        return raw
    extra = set(raw) - {"setting", "negate", "times"}
    if "setting" not in raw or extra:
        raise RuleProblem(where, "a value object needs 'setting' (and may have 'negate', 'times')"
                          + (f"; unknown key(s): {', '.join(sorted(extra))}" if extra else ""))
    try:
        value = setting_at(settings, raw["setting"])
    except KeyError:
        raise RuleProblem(where + "/setting", f"unknown setting '{raw['setting']}' (app.json settings)") from None
    if raw.get("negate") or raw.get("times") is not None:
        num, times = _number(value), _number(raw.get("times", 1))
        if num is None or times is None:
            raise RuleProblem(where, f"setting '{raw['setting']}' is not a number, so it cannot be negated or scaled")
        value = num * times * (-1 if raw.get("negate") else 1)
    return value


def _coerce(ftype: str, value: Any, where: str) -> Any:
    """A rule's literal in the type the stored values have, so comparing needs no conversion per row."""
    if value is None:
        return None
    if ftype in NUMERIC:
        num = _number(value)
        if num is None:
            raise RuleProblem(where, f"{value!r} is not a number")
        return num
    if ftype == "date":
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise RuleProblem(where, f"{value!r} is not a date (YYYY-MM-DD)") from None
    return value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class Rule:
    field: str
    op: str
    value: Any
    absolute: bool
    style: str

    def matches(self, row: Mapping[str, Any]) -> bool:
        v = row.get(self.field)
        if self.op == "isnull":
            return v is None
        if self.op == "notnull":
            return v is not None
        if v is None:
            return self.op == "ne" and self.value is not None
        if self.absolute:
            v = abs(v)
        if isinstance(v, float):
            v = Decimal(repr(v))
        try:
            return _COMPARE[self.op](v, self.value)
        except TypeError:  # a stored value of another type than the field's: no match, never an error
            return False


def compile_rule(raw: Any, fields: Mapping[str, Any], settings: Mapping[str, Any],
                 default_field: str | None = None) -> Rule:
    """A checked Rule; RuleProblem naming the place otherwise. `fields`: field id -> type name."""
    if not isinstance(raw, Mapping):
        raise RuleProblem("", "a rule is an object {field, op, value, style}")
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise RuleProblem("", f"unknown key(s) in rule: {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(sorted(RULE_KEYS))})")
    fid = raw.get("field", default_field)
    if not isinstance(fid, str) or fid not in fields:
        raise RuleProblem("/field", f"unknown field '{fid}'")
    op = raw.get("op")
    if op not in OPS:
        raise RuleProblem("/op", f"unknown op {op!r} (one of {', '.join(OPS)})")
    style = raw.get("style")
    if style not in STYLES:
        raise RuleProblem("/style", f"unknown style {style!r} (one of {', '.join(STYLES)})")
    ftype = fields[fid]
    value = None
    if op in VALUE_OPS:
        if "value" not in raw:
            raise RuleProblem("/value", f"op '{op}' needs a value")
        value = resolve_value(raw["value"], settings)
        if op in ORDER_OPS and ftype not in ORDERED:
            raise RuleProblem("/op", f"'{op}' compares order, but field '{fid}' is a {ftype}")
        value = _coerce(ftype, value, "/value")
    absolute = bool(raw.get("abs", False))
    if absolute and ftype not in NUMERIC:
        raise RuleProblem("/abs", f"'abs' needs a number field; '{fid}' is a {ftype}")
    return Rule(fid, op, value, absolute, style)


def rule_problems(rules: Any, fields: Mapping[str, Any], settings: Mapping[str, Any],
                  default_field: str | None = None) -> Iterator[tuple[str, str]]:
    """(pointer suffix, message) for every rule that cannot be compiled."""
    if rules is None:
        return
    if not isinstance(rules, Sequence) or isinstance(rules, str):
        yield "", "rules must be a list"
        return
    for i, raw in enumerate(rules):
        try:
            compile_rule(raw, fields, settings, default_field)
        except RuleProblem as p:
            yield f"/{i}{p.where}", p.message


def compile_rules(rules: Any, fields: Mapping[str, Any], settings: Mapping[str, Any],
                  default_field: str | None = None) -> tuple[Rule, ...]:
    return tuple(compile_rule(r, fields, settings, default_field) for r in (rules or ()))


def style_of(rules: Sequence[Rule], row: Mapping[str, Any]) -> str | None:
    for rule in rules:
        if rule.matches(row):
            return rule.style
    return None
