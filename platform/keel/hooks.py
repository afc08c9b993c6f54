"""The hooks a Keel plugin may implement, and the marker for implementing them.

This module is the bottom of the plugin system: it imports nothing from Keel, so every part of the engine
can implement a hook (`from keel.hooks import hookimpl`) without knowing the plugin host, which sits near
the top (keel.plugins) and is the only place that calls them. Keel's own subsystems register through
these same hooks (`keel.<subsystem>.plugin` modules), so every built-in is an example of a plugin.

Registry hooks return a list of objects, each with a unique `name`; the shapes are documented in
keel.plugins.types. Event hooks are called with keyword arguments, in the caller's transaction.
"""
from __future__ import annotations

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

PROJECT = "keel"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)  # what plugins mark their functions with (also keel.plugins.hookimpl)


# -- registries: each returns a list of named objects ----------------------------------------------------

@hookspec
def keel_definition_kinds() -> list[Any]:
    """Add definition kinds (keel.definitions.kinds.DefinitionKind): a folder of app definition files
    with its JSON Schema and cross-reference checks (workflows/, jobs/, dashboards/ come this way)."""


@hookspec
def keel_field_types() -> list[Any]:
    """Add field types (keel.fieldtypes.base.FieldType instances) that entity definitions can use."""


@hookspec
def keel_connector_types() -> list[Any]:
    """Add connector types (keel.connectors.types.ConnectorType) that `connectors/*.json` can name."""


@hookspec
def keel_job_types() -> list[Any]:
    """Add job types (keel.jobs.types.JobType) that `jobs/*.json` can name as their `type`."""


@hookspec
def keel_workflow_actions() -> list[Any]:
    """Add actions (keel.plugins.types.WorkflowAction) a workflow can run when a step ends."""


@hookspec
def keel_approver_rules() -> list[Any]:
    """Add approver rules (keel.plugins.types.ApproverRule) that pick who approves a workflow step."""


@hookspec
def keel_dashboard_widgets() -> list[Any]:
    """Add widgets (keel.plugins.types.DashboardWidget) that dashboard definitions can place."""


@hookspec
def keel_workbench_sections() -> list[Any]:
    """Add workbench sections (keel.web.workbench_model.WorkbenchSection): a board section of cards that
    every user's /workbench shows (placement "auto") or that an app's `workbench/*.json` places by name."""


@hookspec
def keel_delivery_channels() -> list[Any]:
    """Add channels (keel.notify.delivery.DeliveryChannel) that deliver inbox messages outside Keel."""


# -- events ------------------------------------------------------------------------------------------

@hookspec
def keel_record_before_write(event: Any) -> None:
    """A record is about to be created, updated, deleted or restored (`event`: a
    keel.storage.events.RecordEvent, in the writer's transaction). Refuse it by raising a Keel error:
    FieldErrors (422), Conflict (409), PermissionDenied (403). Nothing has been written yet."""


@hookspec
def keel_record_written(event: Any) -> None:
    """A record was created, updated, deleted or restored (`event`: a keel.storage.events.RecordEvent
    with the record's id and changes), in the same transaction: what a listener writes commits or rolls
    back with the record. Raising a Keel error refuses the whole write."""


@hookspec
def keel_record_read_grant(conn: Any, app: Any, entity_id: str, record_id: int, actor: Any) -> bool:
    """Whether `actor` may read this one record although their roles do not show it to them (asked only
    after the role-based read found nothing). Return True to grant; None or False says nothing."""


@hookspec
def keel_review_panels(conn: Any, app: Any, entity: str, record: Any, task: Any, actor: Any) -> list[Any]:
    """Panels an approver sees beside a task (the task page, `GET /api/v1/workflows/tasks/{id}`), e.g.
    "current → proposed" and an impact preview. `app`: the BuiltApp; `entity`: the request record's
    entity id; `record`: its stored values (with "id"); `task`: {"id", "instance_id", "workflow", "step",
    "status", "assignee_id", "submitter_id"}; `actor`: the reader; `conn`: for reading only. Return a list
    of {"title": text, "rows": [{"label": text, "old": value, "new": value, "unit": text | None}],
    "note": text (optional)}, text being a string or {"zh", "en"}. An implementation may take only the
    arguments it needs."""


@hookspec
def keel_startup(app: Any) -> None:
    """Do one-time set-up for a Flask app (register a blueprint, read config); called once per app."""


@hookspec
def keel_demo(app: Any, logins: list[Any]) -> None:
    """Add demo data to a fresh demo instance (`keel demo`), after Keel has created the demo org (departments
    and users, `logins` being their (username, title) pairs). Called once per instance; write through the
    record write path (`keel.storage.records`) so the data is versioned and audited like a user's."""


def hook_names() -> tuple[str, ...]:
    return tuple(n for n, v in globals().items() if n.startswith("keel_") and callable(v))
