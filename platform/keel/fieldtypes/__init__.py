"""Field types: the registry that maps a definition's `type` to its behaviour."""
from __future__ import annotations

from keel.fieldtypes.base import FieldType, FieldValueError
from keel.fieldtypes.registry import FieldTypeRegistry, registry

__all__ = ["FieldType", "FieldValueError", "FieldTypeRegistry", "registry"]
