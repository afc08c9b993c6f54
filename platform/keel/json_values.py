"""Values as JSON writes them: what the API answers with and what templates are given as data."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any


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
