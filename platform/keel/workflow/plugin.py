"""What the workflow engine brings to Keel, through the same hooks as any plugin: the `workflow`
definition kind, its approver rules and actions, the job types for bulk approval and SLA timers, and its
part in every record write (guards.py: frozen records, workflow-kept fields, starting approvals)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from keel.definitions.errors import DefinitionError, pointer
from keel.definitions.kinds import CheckContext, DefinitionKind
from keel.definitions.model import Definition
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl


def _check(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    from keel.workflow.definition import Scope, workflow_errors
    from keel.workflow.timers import sla_problem

    starts = d.data.get("starts_on") or {}
    if isinstance(starts, Mapping) and ("form" in starts) == ("entity" in starts):
        yield DefinitionError(d.file, "/starts_on", "give exactly one of `form` and `entity`")
    for key in ("form", "entity"):
        ref = starts.get(key)
        if isinstance(ref, str) and not ctx.known(key, ref):
            yield DefinitionError(d.file, pointer("starts_on", key), f"no {key} '{ref}' in this app")
    yield from workflow_errors(d, Scope(ctx.entities, {f.id: f.entity for f in ctx.forms.values()}, ctx.roles,
                                        ctx.ids("notification"), ctx.registries))
    for n, step in enumerate(d.data.get("steps") or ()):
        sla = step.get("sla") if isinstance(step, Mapping) else None
        problem = None if sla is None else sla_problem(sla)
        if problem:
            yield DefinitionError(d.file, pointer("steps", n, "sla"), problem)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="workflow", folder="workflows", schema=read_schema(__file__), check=_check,
                           label="workflows", order=10)]


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


@hookimpl
def keel_record_before_write(event):
    from keel.workflow import guards

    if event.action == "create":
        guards.check_create(event.app, event.entity_id, event.values, event.actor, form=event.form)
    elif event.action == "update":
        guards.check_update(event.conn, event.app, event.entity_id, event.record_id, event.values, event.actor)
    elif event.action == "delete":
        guards.check_delete(event.conn, event.app, event.entity_id, event.record_id, event.actor)


@hookimpl
def keel_record_written(event):
    if event.action == "create":
        from keel.workflow import guards

        guards.after_create(event.conn, event.app, event.entity_id, {"id": event.record_id}, event.actor,
                            form=event.form)
