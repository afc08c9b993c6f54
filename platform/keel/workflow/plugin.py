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


def _warn(d: Definition, app) -> Iterator[DefinitionError]:
    """An approver role that cannot read the entity it decides on: allowed (an approver always reads the
    records of their own tasks), but everywhere else — lists, links, search — the record is hidden from them."""
    from keel.workflow.definition import workflows_of

    wf = workflows_of(app).get(d.id)
    entity = app.entities.get(wf.entity) if wf is not None and wf.entity else None
    if entity is None:
        return
    readers = {p.role for p in entity.permissions if p.read != "none"}
    for n, step in enumerate(d.data.get("steps") or ()):
        for i, rule in enumerate(step.get("approvers") or ()):
            role = rule.get("role") if rule.get("rule") == "role" else rule.get("fallback_role")
            if isinstance(role, str) and role not in readers:
                yield DefinitionError(d.file, pointer("steps", n, "approvers", i),
                                      f"approver role '{role}' cannot read entity '{entity.id}' (no read permission): "
                                      f"its approvers open only the records of their own tasks")


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="workflow", folder="workflows", schema=read_schema(__file__), check=_check,
                           label="workflows", order=10, warn=_warn)]


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
    from keel.workflow import guards

    if event.action == "create":
        guards.after_create(event.conn, event.app, event.entity_id, {"id": event.record_id}, event.actor,
                            form=event.form)
    elif event.action == "update":
        guards.after_update(event.conn, event.app, event.entity_id, event.record_id, event.changes, event.actor)


@hookimpl
def keel_record_read_grant(conn, app, entity_id, record_id, actor):
    """An approver (or a CC) always reads the record of a task assigned to them, even when their roles
    would not show it: nobody decides on what they cannot open."""
    if not app.definition.definitions_of("workflow"):
        return None
    import sqlalchemy as sa

    from keel.storage.workflow_tables import wf_instances, wf_tasks

    found = conn.execute(sa.select(wf_tasks.c.id).select_from(
        wf_tasks.join(wf_instances, wf_instances.c.id == wf_tasks.c.instance_id)).where(
        wf_instances.c.app == app.id, wf_instances.c.entity == entity_id, wf_instances.c.record_id == record_id,
        sa.or_(wf_tasks.c.assignee_id == actor.user_id, wf_tasks.c.on_behalf_of == actor.user_id)).limit(1)).first()
    return True if found is not None else None
