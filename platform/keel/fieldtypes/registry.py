"""The set of known field types. Built-ins are registered here; plugins add theirs through the
`keel_field_types` hook (see keel.plugins), which calls `registry.register`."""
from __future__ import annotations

from keel.fieldtypes.base import FieldType


class FieldTypeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, FieldType] = {}

    def register(self, field_type: FieldType) -> None:
        self._types[field_type.name] = field_type

    def get(self, name: str) -> FieldType:
        return self._types[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._types)

    def __contains__(self, name: str) -> bool:
        return name in self._types


def _builtin_registry() -> FieldTypeRegistry:
    from keel.fieldtypes.builtin import BUILTIN_TYPES

    r = FieldTypeRegistry()
    for cls in BUILTIN_TYPES:
        r.register(cls())
    return r


registry = _builtin_registry()
