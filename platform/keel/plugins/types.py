"""The shapes a plugin hands to Keel through the hooks (keel.hooks). Protocols, not base classes: any
object with these attributes will do, so a plugin needs nothing from Keel but `hookimpl`.

Field types are `keel.fieldtypes.base.FieldType` instances; job types are `keel.jobs.types.JobType`;
connector types are keel.connectors.types.ConnectorType (re-exported here); definition kinds are
keel.definitions.kinds.DefinitionKind. The host checks only what it needs to index an object (a `name`,
a valid schema); the parts that use them (sync, workflow, dashboards) call the rest.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from keel.connectors.types import ConnectorContext, ConnectorType, ItemSource
from keel.definitions.kinds import CheckContext, DefinitionKind

__all__ = ["ApproverRule", "CheckContext", "ConnectorContext", "ConnectorType", "DashboardWidget",
           "DefinitionKind", "ItemSource", "WorkflowAction"]


# -- shapes for the workflow and dashboard issues ---------------------------------------------------------
# Provisional: the host indexes them by `name` only. What the engines will call is written down here so a
# plugin written today has a target; the workflow and dashboard work may refine the signatures.

class WorkflowAction(Protocol):
    """A step in a workflow's `on_approved`/`on_rejected` list: `{"action": name, ...params}`.
    `params_schema` is the JSON Schema of the params; `run(context, params)` does the work inside the
    workflow's transaction (context: the connection, the acting Actor, the instance and its record)."""

    name: str
    params_schema: Mapping[str, Any]

    def run(self, context: Any, params: Mapping[str, Any]) -> None: ...


class ApproverRule(Protocol):
    """An approver rule in a workflow step: `{"rule": name, ...params}` (e.g. `manager_of`).
    `resolve(context, params)` returns the user ids who must approve; an empty list is a problem the
    engine reports, never a silent auto-approval."""

    name: str
    params_schema: Mapping[str, Any]

    def resolve(self, context: Any, params: Mapping[str, Any]) -> list[int]: ...


class DashboardWidget(Protocol):
    """A widget type dashboard definitions can place: `{"id": ..., "type": name, ...params}`
    (docs/dashboards.md). `params_schema`: the JSON Schema of the widget's own keys (Keel checks `id`, `type`,
    `title`, `width`, `roles`). Optional `check(widget, ctx)`: (JSON pointer inside the widget, message)
    pairs for what the schema cannot say (ctx: the app's CheckContext). `layout(ctx, widget)` returns the
    Dash component tree, reading only through `ctx` (a keel.dashboards.context.WidgetContext: the viewer's
    permissions). Optional `data(ctx, widget)` returning {"columns": [{"id", "label"}], "rows": [[...]]}
    gives the widget CSV/xlsx export."""

    name: str
    params_schema: Mapping[str, Any]

    def layout(self, context: Any, params: Mapping[str, Any]) -> Any: ...
