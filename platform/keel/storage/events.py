"""Record events: what the write path announces, so that the parts above storage (the workflow engine,
plugins such as a goal cascade) act on writes without storage knowing them.

Two moments per write, both inside the writer's transaction (`event.conn`):
- before: the write is about to happen; a listener refuses it by raising a Keel error (FieldErrors → 422,
  Conflict → 409, PermissionDenied → 403) and nothing is written;
- after: the row, its version and its audit event are written; what a listener writes on `event.conn`
  commits or rolls back with them.
The listeners are the `keel_record_before_write` / `keel_record_written` hooks (keel.hooks); the plugin
host wraps them as a `RecordListeners` in the registries handed to the runtime.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ACTIONS = ("create", "update", "delete", "restore")


@dataclass(frozen=True)
class RecordEvent:
    conn: Any                      # sqlalchemy Connection of the writer's transaction
    app: Any                       # keel.storage.built.BuiltApp
    entity_id: str
    action: str                    # one of ACTIONS
    actor: Any                     # keel.actor.Actor
    record_id: int | None = None   # None before a create
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # as sent
    # After an update: field id -> [before, after] as JSON values (what the version row stores).
    changes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    version: int | None = None     # the record's row version after the write
    # Where the write came from: {"form": "<form id>"} for a form submission, {"channel": "api"}, ...
    origin: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def form(self) -> str | None:
        return self.origin.get("form")


class RecordListeners:
    """Calls `before(event=...)` and `after(event=...)`; either may be None (nobody listens)."""

    def __init__(self, before: Callable[..., Any] | None = None, after: Callable[..., Any] | None = None):
        self._before, self._after = before, after

    def before(self, event: RecordEvent) -> None:
        if self._before is not None:
            self._before(event=event)

    def after(self, event: RecordEvent) -> None:
        if self._after is not None:
            self._after(event=event)


NO_LISTENERS = RecordListeners()
