"""What the installed plugins registered, as one immutable value handed down from the composition root.

The plugin host (keel.plugins, near the top of the layers) loads Keel's built-ins and the installed
plugins once per app or CLI process and builds a `Registries`; `create_app`, the CLI and tests pass it to
whatever needs it (the definition loader, the runtime, the job runner). Nothing below the host fills a
registry by itself from a process-wide global, so a test can build a host with exactly the plugins it
wants and two apps in one process can have different plugins.

Every registry maps a name to the object a hook returned; the shapes are the ones each hook documents
(keel.hooks). `record_events` is what the record write path calls (keel.storage.events.RecordListeners).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, eq=False)
class Registries:
    field_types: Mapping[str, Any] = field(default_factory=_empty)
    definition_kinds: Mapping[str, Any] = field(default_factory=_empty)  # by kind name, e.g. "workflow"
    connector_types: Mapping[str, Any] = field(default_factory=_empty)
    job_types: Mapping[str, Any] = field(default_factory=_empty)
    workflow_actions: Mapping[str, Any] = field(default_factory=_empty)
    approver_rules: Mapping[str, Any] = field(default_factory=_empty)
    dashboard_widgets: Mapping[str, Any] = field(default_factory=_empty)
    delivery_channels: Mapping[str, Any] = field(default_factory=_empty)
    workbench_sections: Mapping[str, Any] = field(default_factory=_empty)
    record_events: Any = None
    # keel_review_panels(conn=, app=, entity=, record=, task=, actor=) -> one list of panels per plugin
    review_panels: Any = None
    # keel_record_read_grant(conn=, app=, entity_id=, record_id=, actor=) -> a list of answers
    read_grants: Any = None
    # Which plugin registered what: (registry attribute, name) -> plugin name; for messages only.
    owners: Mapping[tuple[str, str], str] = field(default_factory=_empty)

    def owner(self, attr: str, name: str) -> str | None:
        return self.owners.get((attr, name))
