"""The built-in field types. Money and decimals are exact: SQL NUMERIC with a declared precision and
Python `Decimal`, written to JSON as strings so no client parses them into floats."""
from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import nh3
import re2
import sqlalchemy as sa

from keel.definitions.model import FieldDef
from keel.errors import Message
from keel.fieldtypes.base import FieldType, FieldValueError
from keel.json_values import integer_problem, text_problem, unstorable

TEXT_MAX = 10_000       # a `text` field without max_length
LONG_TEXT_MAX = 100_000  # long and rich text without max_length


def _length_checks(f: FieldDef, value: str, default_max: int) -> list[Message]:
    out = []
    limit = f.max_length or default_max
    if len(value) > limit:
        out.append(Message.of("At most %(n)s characters.", n=limit))
    if f.min_length and len(value) < f.min_length:
        out.append(Message.of("At least %(n)s characters.", n=f.min_length))
    if f.pattern and not re2.search(f.pattern, value):
        out.append(Message.of("Does not match the required format."))
    return out


def _range_checks(value: Any, lo: Any, hi: Any) -> list[Message]:
    out = []
    if lo is not None and value < lo:
        out.append(Message.of("Must be at least %(min)s.", min=str(lo)))
    if hi is not None and value > hi:
        out.append(Message.of("Must be at most %(max)s.", max=str(hi)))
    return out


class Text(FieldType):
    name = "text"
    keys = frozenset({"min_length", "max_length", "pattern"})
    widget = "text"
    converts_from = frozenset({"long_text", "integer", "decimal", "money", "percent", "select", "date",
                               "datetime", "boolean"})

    def column_type(self, f):
        return sa.String(f.max_length or TEXT_MAX)

    def parse(self, f, value):
        if isinstance(value, (dict, list, bool)):
            raise FieldValueError("Must be text.")
        text = str(value)
        problem = text_problem(text)  # whichever path it came by: a form, the API, a connector
        if problem:
            raise FieldValueError(problem)
        return text

    def check(self, f, value):
        return _length_checks(f, value, TEXT_MAX)

    def json_schema(self, f):
        s = {"type": "string", "maxLength": f.max_length or TEXT_MAX}
        if f.min_length:
            s["minLength"] = f.min_length
        if f.pattern:
            s["pattern"] = f.pattern
        return s

    def definition_errors(self, f):
        if f.pattern:
            try:
                re2.compile(f.pattern)
            except re2.error as e:
                return [f"pattern is not a valid RE2 expression: {e}"]
        return []

    def convert(self, f, value):
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        return str(value)


class LongText(Text):
    name = "long_text"
    widget = "textarea"
    converts_from = frozenset({"text", "rich_text"})

    def column_type(self, f):
        return sa.Text()

    def check(self, f, value):
        return _length_checks(f, value, LONG_TEXT_MAX)

    def json_schema(self, f):
        return {**super().json_schema(f), "maxLength": f.max_length or LONG_TEXT_MAX}


class RichText(LongText):
    """HTML from an editor, sanitised with nh3 on the way in: what is stored is already safe."""

    name = "rich_text"
    widget = "richtext"
    converts_from = frozenset({"text", "long_text"})

    def parse(self, f, value):
        return nh3.clean(super().parse(f, value))


class Integer(FieldType):
    name = "integer"
    keys = frozenset({"min", "max"})
    widget = "number"
    converts_from = frozenset({"text", "decimal", "money", "percent", "boolean"})

    def column_type(self, f):
        return sa.BigInteger()

    def parse(self, f, value):
        if isinstance(value, bool):
            raise FieldValueError("Must be a whole number.")
        if isinstance(value, int):
            if integer_problem(value):  # the column is a BIGINT
                raise FieldValueError("The number is too large.")
            return value
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise FieldValueError("Must be a whole number.") from None
        if not d.is_finite() or d != d.to_integral_value():
            raise FieldValueError("Must be a whole number.")
        if abs(d) >= 2**63:
            raise FieldValueError("The number is too large.")
        return int(d)

    def from_computed(self, f, value):
        if isinstance(value, Decimal) and value.is_finite():  # e.g. `total / 3`: rounded, not refused
            value = value.to_integral_value(rounding=ROUND_HALF_EVEN)
        return self.parse(f, value)

    def check(self, f, value):
        return _range_checks(value, f.min, f.max)

    def json_schema(self, f):
        s: dict = {"type": "integer"}
        if f.min is not None:
            s["minimum"] = int(f.min)
        if f.max is not None:
            s["maximum"] = int(f.max)
        return s

    def convert(self, f, value):
        if isinstance(value, bool):
            return int(value)
        return self.parse(f, value)


class DecimalType(FieldType):
    name = "decimal"
    keys = frozenset({"min", "max", "precision", "scale"})
    widget = "number"
    converts_from = frozenset({"text", "integer", "money", "percent"})
    default_precision = 15  # SQLite keeps 15 significant digits exactly
    default_scale = 4

    def digits(self, f):
        return (f.precision or self.default_precision,
                self.default_scale if f.scale is None else f.scale)

    def column_type(self, f):
        p, s = self.digits(f)
        return sa.Numeric(p, s, asdecimal=True)

    def parse(self, f, value):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise FieldValueError("Must be a number.")
        if isinstance(value, float):
            value = repr(value)
        try:
            d = Decimal(str(value).strip().replace(",", ""))
        except InvalidOperation:
            raise FieldValueError("Must be a number.") from None
        if not d.is_finite():
            raise FieldValueError("Must be a number.")
        p, s = self.digits(f)
        if d.adjusted() >= p - s:  # more integer digits than the column holds
            raise FieldValueError("The number is too large.")
        quantum = Decimal(1).scaleb(-s)
        if d.as_tuple().exponent < -s and d != d.quantize(quantum):
            raise FieldValueError("At most %(n)s digits after the decimal point.", n=s)
        return d.quantize(quantum)

    def from_computed(self, f, value):
        # A division rarely terminates (4 / 14); the result is rounded to the field's scale, half to
        # even, as the column would keep it. Only a result too large for the column is an error.
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            d = Decimal(value)
            if d.is_finite() and d.adjusted() < self.digits(f)[0]:
                value = d.quantize(Decimal(1).scaleb(-self.digits(f)[1]), rounding=ROUND_HALF_EVEN)
        return self.parse(f, value)

    def check(self, f, value):
        return _range_checks(value, f.min, f.max)

    def dump(self, f, value):
        return None if value is None else str(value)

    def json_schema(self, f):
        s = {"type": ["string", "number"], "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
             "description": "exact decimal; sent and returned as a string"}
        if f.min is not None:
            s["x-minimum"] = str(f.min)
        if f.max is not None:
            s["x-maximum"] = str(f.max)
        return s


class Money(DecimalType):
    name = "money"
    keys = DecimalType.keys | {"currency"}
    converts_from = frozenset({"text", "integer", "decimal"})
    default_scale = 2

    def json_schema(self, f):
        return {**super().json_schema(f), "x-currency": f.currency or "CNY"}


class Percent(DecimalType):
    """Stored as a fraction: 0.15 is 15%."""

    name = "percent"
    converts_from = frozenset({"text", "decimal"})
    default_scale = 6


class Boolean(FieldType):
    name = "boolean"
    widget = "checkbox"
    converts_from = frozenset({"integer", "text"})
    TRUE = {"true", "1", "yes", "on", "y"}
    FALSE = {"false", "0", "no", "off", "n", ""}

    def column_type(self, f):
        return sa.Boolean()

    def parse(self, f, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in self.TRUE | self.FALSE:
            return value.strip().lower() in self.TRUE
        raise FieldValueError("Must be true or false.")

    def json_schema(self, f):
        return {"type": "boolean"}


class Date(FieldType):
    name = "date"
    keys = frozenset({"min", "max"})
    widget = "date"
    converts_from = frozenset({"text", "datetime"})

    def column_type(self, f):
        return sa.Date()

    def parse(self, f, value):
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise FieldValueError("Must be a date (YYYY-MM-DD).") from None

    def check(self, f, value):
        def bound(v):
            return None if v is None else dt.date.fromisoformat(str(v))
        return _range_checks(value, bound(f.min), bound(f.max))

    def dump(self, f, value):
        return None if value is None else value.isoformat()

    def json_schema(self, f):
        return {"type": "string", "format": "date"}


class DateTime(FieldType):
    name = "datetime"
    widget = "datetime"
    converts_from = frozenset({"text", "date"})

    def column_type(self, f):
        return sa.DateTime(timezone=True)

    def parse(self, f, value):
        if isinstance(value, dt.datetime):
            d = value
        elif isinstance(value, dt.date):
            d = dt.datetime(value.year, value.month, value.day)
        else:
            try:
                d = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
            except ValueError:
                raise FieldValueError("Must be a date and time (ISO 8601).") from None
        # Naive input is taken as UTC; everything is stored in UTC.
        return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)

    def dump(self, f, value):
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite returns naive values; they were stored as UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()

    def json_schema(self, f):
        return {"type": "string", "format": "date-time"}


class Select(FieldType):
    name = "select"
    keys = frozenset({"options"})
    widget = "select"
    converts_from = frozenset({"text"})

    def column_type(self, f):
        return sa.String(max((len(o.id) for o in f.options), default=1) + 64)

    def parse(self, f, value):
        if not isinstance(value, str):
            raise FieldValueError("Must be one of the options.")
        return value

    def check(self, f, value):
        if value not in f.option_ids():
            return [Message.of("'%(value)s' is not one of the options.", value=value[:50])]
        return []

    def json_schema(self, f):
        return {"type": "string", "enum": list(f.option_ids())}

    def definition_errors(self, f):
        return [] if f.options else ["a select field needs options"]


class MultiSelect(Select):
    name = "multi_select"
    widget = "multiselect"
    converts_from = frozenset({"select"})

    def column_type(self, f):
        return sa.JSON()

    def parse(self, f, value):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise FieldValueError("Must be a list of options.")
        return list(dict.fromkeys(value))

    def check(self, f, value):
        bad = [v for v in value if v not in f.option_ids()]
        if bad:
            return [Message.of("'%(value)s' is not one of the options.", value=bad[0][:50])]
        return []

    def json_schema(self, f):
        return {"type": "array", "items": {"type": "string", "enum": list(f.option_ids())},
                "uniqueItems": True}

    def convert(self, f, value):
        return [value] if isinstance(value, str) else self.parse(f, value)


class Link(FieldType):
    """A reference to a record of another entity, by id. Storage checks the target exists and is
    visible to the writer."""

    name = "link"
    keys = frozenset({"entity"})
    widget = "select"

    def column_type(self, f):
        return sa.BigInteger()

    def parse(self, f, value):
        return Integer.parse(self, f, value)

    def json_schema(self, f):
        return {"type": "integer", "x-link": f.entity}

    def definition_errors(self, f):
        return [] if f.entity else ["a link field needs `entity`"]


class User(Link):
    name = "user"
    keys = frozenset()

    def json_schema(self, f):
        return {"type": "integer", "x-link": "user"}

    def definition_errors(self, f):
        return []


class Json(FieldType):
    """Free JSON, for values that have no fixed shape; capped in size."""

    name = "json"
    widget = "json"
    MAX_BYTES = 100_000

    def column_type(self, f):
        return sa.JSON()

    def parse(self, f, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise FieldValueError("Must be valid JSON.") from None
        if len(json.dumps(value, default=str)) > self.MAX_BYTES:
            raise FieldValueError("At most %(n)s characters.", n=self.MAX_BYTES)
        for _place, problem in unstorable(value):
            raise FieldValueError(problem)
        return value

    def json_schema(self, f):
        return {}


class Table(Json):
    """Rows of named cells, e.g. one row per dimension of a multi-dimension target. `columns` declares
    each cell like a field; every cell is parsed and checked by its own type."""

    name = "table"
    keys = frozenset({"columns", "max_rows"})

    def parse(self, f, value):
        rows = super().parse(f, value)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise FieldValueError("Must be a list of rows.")
        limit = f.raw.get("max_rows", 200)
        if len(rows) > limit:
            raise FieldValueError("At most %(n)s rows.", n=limit)
        cols = {c.id: c for c in f.columns}
        out = []
        for i, row in enumerate(rows, 1):
            unknown = set(row) - set(cols)
            if unknown:
                raise FieldValueError("Row %(row)s: unknown column '%(col)s'.", row=i, col=sorted(unknown)[0])
            clean = {}
            for cid, col in cols.items():
                v = row.get(cid)
                if v is None or v == "":
                    if col.required:
                        raise FieldValueError("Row %(row)s: '%(col)s' is required.", row=i, col=cid)
                    clean[cid] = None
                    continue
                t = col.ftype
                try:
                    pv = t.parse(col, v)
                except FieldValueError as e:
                    raise FieldValueError("Row %(row)s, '%(col)s': %(msg)s", row=i, col=cid,
                                          msg=e.messages[0].render()) from None
                problems = t.check(col, pv)
                if problems:
                    raise FieldValueError("Row %(row)s, '%(col)s': %(msg)s", row=i, col=cid,
                                          msg=problems[0].render())
                clean[cid] = t.dump(col, pv)
            out.append(clean)
        return out

    def json_schema(self, f):
        props = {c.id: c.ftype.json_schema(c) for c in f.columns}
        return {"type": "array", "maxItems": f.raw.get("max_rows", 200),
                "items": {"type": "object", "properties": props, "additionalProperties": False,
                          "required": [c.id for c in f.columns if c.required]}}

    def definition_errors(self, f):
        errs = [] if f.columns else ["a table field needs `columns`"]
        for c in f.columns:
            if c.type in ("table", "link", "user", "json") or c.ftype is None:
                errs.append(f"column '{c.id}' has a type a table cell cannot have: {c.type}")
        return errs


BUILTIN_TYPES = (Text, LongText, RichText, Integer, DecimalType, Money, Percent, Boolean, Date, DateTime,
                 Select, MultiSelect, Link, User, Json, Table)
