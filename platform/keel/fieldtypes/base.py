"""What a field type is. Each type turns one `FieldDef` into every product Keel derives from it: the SQL
column type, the parsed Python value, the JSON value, the JSON Schema and the form widget. Built-in
types live in `builtin.py` and register through the same plugin hook as any plugin's type."""
from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy.types import TypeEngine

from keel.definitions.model import FieldDef
from keel.errors import Message


class FieldValueError(ValueError):
    """A value that does not fit its field; carries one or more translatable messages."""

    def __init__(self, msgid: str, **params: Any):
        super().__init__(msgid % params if params else msgid)
        self.messages = [Message.of(msgid, **params)]


class FieldType:
    name: ClassVar[str]
    # Keys a definition may use with this type, beyond the keys every field has.
    keys: ClassVar[frozenset[str]] = frozenset()
    # How a form shows it: text, textarea, richtext, number, checkbox, date, datetime, select,
    # multiselect, json.
    widget: ClassVar[str] = "text"
    # The types whose stored values this type can take over on a type change (see storage.sync).
    converts_from: ClassVar[frozenset[str]] = frozenset()

    def column_type(self, f: FieldDef) -> TypeEngine:
        raise NotImplementedError

    def parse(self, f: FieldDef, value: Any) -> Any:
        """Turn an input value (JSON or form text) into the Python value, or raise FieldValueError.
        Never called with None."""
        raise NotImplementedError

    def from_computed(self, f: FieldDef, value: Any) -> Any:
        """The stored value of a computed field's result (never None): parsed like an input, except
        that a number is first rounded to what the column keeps (see DecimalType). Raises
        FieldValueError for a result the column cannot hold."""
        return self.parse(f, value)

    def check(self, f: FieldDef, value: Any) -> list[Message]:
        """Constraint messages (min/max, length, pattern, options) for a parsed, non-None value."""
        return []

    def dump(self, f: FieldDef, value: Any) -> Any:
        """The JSON form of a stored value."""
        return value

    def json_schema(self, f: FieldDef) -> dict:
        raise NotImplementedError

    def definition_errors(self, f: FieldDef) -> list[str]:
        """Problems with the field's own definition that the JSON Schema cannot express."""
        return []

    def convert(self, f: FieldDef, value: Any) -> Any:
        """Convert a value stored under another type (listed in `converts_from`); raise
        FieldValueError when one cannot be converted."""
        return self.parse(f, value)
