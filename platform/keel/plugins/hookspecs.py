"""The hooks a Keel plugin may implement. Each returns a list of objects with a unique `name`; the shapes
are in keel.plugins.types. Keel's own field types and connector types register through these same hooks
(keel.plugins.builtins), so every built-in is an example of a plugin."""
from __future__ import annotations

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("keel")
hookimpl = HookimplMarker("keel")  # what plugins mark their functions with (as keel.plugins.hookimpl)


@hookspec
def keel_field_types() -> list[Any]:
    """Add field types (keel.fieldtypes.base.FieldType instances) that entity definitions can use."""


@hookspec
def keel_connector_types() -> list[Any]:
    """Add connector types (keel.plugins.types.ConnectorType) that `connectors/*.json` can name."""


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
def keel_delivery_channels() -> list[Any]:
    """Add channels (keel.notify.delivery.Channel) that deliver inbox messages outside Keel."""


@hookspec
def keel_startup(app: Any) -> None:
    """Do one-time set-up for a Flask app (register a blueprint, read config); called once per app."""
