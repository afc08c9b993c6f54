"""The set of known field types. Nothing is registered here by hand: the built-ins (fieldtypes/builtin.py)
and every plugin's types arrive through the `keel_field_types` hook (see keel.plugins).

The registry is process-wide because definitions are loaded without an app (`keel app validate`, the
loader, storage). The module-level `registry` therefore fills itself on first use from the process-wide
plugin host (`keel.plugins.get_host()`); a Flask app's own host adds its types through `add` as well.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from keel.errors import KeelError
from keel.fieldtypes.base import FieldType


class FieldTypeConflict(KeelError):
    """Two different field type classes claim one name; the first one keeps it."""


class FieldTypeRegistry:
    def __init__(self, fill: Callable[[FieldTypeRegistry], None] | None = None) -> None:
        self._types: dict[str, FieldType] = {}
        self._owners: dict[str, str] = {}
        self._fill = fill
        self._filling = False
        # RLock: filling imports plugins, and a plugin that looks a type up meanwhile must not deadlock.
        self._lock = threading.RLock()

    def _ensure(self) -> None:
        if self._fill is None:  # filled, or a registry without a filler
            return
        with self._lock:  # another thread filling: wait for it rather than see half the types
            if self._fill is None or self._filling:  # done meanwhile, or we are inside the fill
                return
            self._filling = True
            try:
                self._fill(self)
                self._fill = None  # on an error the next use tries again and sees the error itself
            finally:
                self._filling = False

    def register(self, field_type: FieldType, owner: str = "keel") -> None:
        """Set the type for its name, replacing any earlier one."""
        with self._lock:
            self._types[field_type.name] = field_type
            self._owners[field_type.name] = owner

    def add(self, field_type: FieldType, owner: str) -> None:
        """Register a type from a plugin. The same class again (a second plugin host in this process
        loading the same plugin) is a no-op; a different class under a taken name is refused."""
        self._ensure()
        with self._lock:
            held = self._types.get(field_type.name)
            if held is None:
                self.register(field_type, owner)
            elif type(held) is not type(field_type):
                raise FieldTypeConflict(f"field type '{field_type.name}' is already registered by "
                                        f"{self._owners[field_type.name]}")

    def get(self, name: str) -> FieldType:
        self._ensure()
        return self._types[name]

    def owner(self, name: str) -> str:
        """Which plugin registered the type (`keel` for the built-ins)."""
        self._ensure()
        return self._owners[name]

    def names(self) -> tuple[str, ...]:
        self._ensure()
        return tuple(self._types)

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._types


def _fill_from_plugins(r: FieldTypeRegistry) -> None:
    from keel.plugins.manager import get_host

    get_host().install_field_types(r)


registry = FieldTypeRegistry(fill=_fill_from_plugins)
