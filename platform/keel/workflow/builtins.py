"""The workflow engine's built-ins, registered through the plugin hooks like any plugin's: approver
rules, actions, and the job types for bulk approval and SLA timers."""
from __future__ import annotations

from keel.plugins.hookspecs import hookimpl


@hookimpl
def keel_approver_rules():
    from keel.workflow.resolvers import BUILTIN_RULES

    return list(BUILTIN_RULES.values())


@hookimpl
def keel_workflow_actions():
    from keel.workflow.actions import BUILTIN_ACTIONS

    return list(BUILTIN_ACTIONS.values())


@hookimpl
def keel_job_types():
    from keel.workflow.bulk import BulkApproveJob
    from keel.workflow.timers import WorkflowTimersJob

    return [BulkApproveJob(), WorkflowTimersJob()]
