"""Values as JSON writes them: what the API answers with and what templates are given as data; and the
values no database column can hold (text with NUL or an unpaired surrogate, integers beyond 64 bits),
found before they reach a driver."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# PostgreSQL refuses NUL in text and SQLite cuts strings at it (a `contains` filter then matches
# everything); an unpaired surrogate cannot be encoded as UTF-8 by either driver.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def jsonable(value: Any) -> Any:
    """JSON values for a response. Decimals stay exact as strings; dates and times are ISO 8601 (Flask's
    default would write dates as HTTP dates and has no rule for naive datetimes)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # SQLite gives back naive values; Keel stores UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (an English msgid), or None."""
    m = _UNSTORABLE_TEXT.search(text)
    if m is None:
        return None
    if m.group() == "\x00":
        return "Text may not contain a NUL character."
    return "Text may not contain an unpaired surrogate (not valid Unicode)."


def integer_problem(n: int) -> str | None:
    if isinstance(n, int) and not isinstance(n, bool) and not INT64_MIN <= n <= INT64_MAX:
        return "The number is too large."
    return None


def unstorable(value: Any, place: str = "") -> Iterator[tuple[str, str]]:
    """(place, msgid) for every string (keys included) and integer in a JSON value that no column can
    hold; `place` is a dotted path ("items.0.name"). Iterative, so any depth the parser admitted is
    walked without recursion."""
    stack = [(place, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            problem = text_problem(v)
        elif isinstance(v, int):
            problem = integer_problem(v)
        elif isinstance(v, dict):
            problem = None
            for k, item in v.items():
                key = str(k)
                sub = f"{where}.{key}" if where else key
                if text_problem(key):
                    yield (where or "_body", text_problem(key))
                    continue
                stack.append((sub, item))
        elif isinstance(v, (list, tuple)):
            problem = None
            stack.extend((f"{where}.{i}" if where else str(i), item) for i, item in enumerate(v))
        else:
            problem = None
        if problem:
            yield (where or "_body", problem)
