"""The definition language: JSON files (or a stored bundle) -> a validated, immutable `AppDef`.

Re-exports are resolved lazily: the field types import `keel.definitions.model`, and the loader imports
the field types, so importing the loader here eagerly would be circular.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_app_dir": "keel.definitions.loader",
    "load_bundle": "keel.definitions.loader",
    "read_bundle": "keel.definitions.loader",
    "DefinitionError": "keel.definitions.errors",
    "DefinitionErrors": "keel.definitions.errors",
}

__all__ = ["DefinitionError", "DefinitionErrors", "load_app_dir", "load_bundle", "read_bundle"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keel.definitions' has no attribute {name!r}")
