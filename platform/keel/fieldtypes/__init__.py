"""Field types: what a definition's `type` means for storage, parsing, forms and schemas. The built-in
types register through the `keel_field_types` hook like any plugin's (keel.fieldtypes.plugin); the
loader resolves each field's type into `FieldDef.ftype`, so nothing downstream looks a type up by name."""
from __future__ import annotations

from keel.fieldtypes.base import FieldType, FieldValueError

__all__ = ["FieldType", "FieldValueError"]
