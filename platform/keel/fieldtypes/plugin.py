"""Keel's built-in field types, registered through the same hook as any plugin's."""
from __future__ import annotations

from keel.hooks import hookimpl


@hookimpl
def keel_field_types():
    from keel.fieldtypes.builtin import BUILTIN_TYPES

    return [cls() for cls in BUILTIN_TYPES]
