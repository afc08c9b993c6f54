"""The workflow engine's side of every record write, heard through the record events (workflow/plugin.py
subscribes these to `keel_record_before_write` and `keel_record_written`); storage never imports it.

- A field a workflow keeps (its `status_field`) is written by the engine only: a user sending it gets a
  422, on create and update alike, through every channel (form, API, import).
- While a request is pending its record is frozen (the approvers decide on what they saw), and once
  approved it is immutable: a change needs a new revision request. Both are a 409 with a message that
  says so. A request returned for changes, rejected or withdrawn leaves the record editable again.
- A record created by a user starts the workflows that start on its entity, and those of the form it was
  submitted with. When every form of an entity starts an approval, its records can only be created
  through one of them: any other channel (the entity API, an import) gets a 422 naming the form, so no
  record exists outside its approval. (A form that starts none is the admin's way to allow records
  without approval.)

- A field marked `"changed_by": "workflow"` takes any value when its record is created; afterwards only a
  workflow's actions (an actor whose `via` names a workflow, keel.actor.workflow_actor) change it. Every
  other write that would change it — a person through any channel, an import, a connector sync, a job
  acting as the system — is a 422 naming the field, before anything is written.

The system actor (the engine's own actions, migrations) is never stopped here, except by `changed_by`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor, acts_for_workflow
from keel.errors import Conflict, FieldErrors
from keel.storage.workflow_tables import wf_instances


def managed_fields(built, entity_id: str) -> set[str]:
    def build() -> set[str]:
        from keel.workflow.definition import workflows_of

        return {w.status_field for w in workflows_of(built.definition).values()
                if w.entity == entity_id and w.status_field}

    if not built.definition.definitions_of("workflow"):
        return set()
    return built.product(("workflow_managed_fields", entity_id), build)


def entry_forms(built, entity_id: str) -> list[str]:
    """The forms through which records of `entity_id` must be created: all of its forms when each starts a
    workflow; none when one of them starts nothing (or a workflow starts on the entity itself)."""
    def build() -> list[str]:
        from keel.workflow.definition import workflows_of

        flows = [w for w in workflows_of(built.definition).values() if w.entity == entity_id]
        starting = {w.form for w in flows if w.form is not None}
        forms = {f.id for f in built.definition.forms.values() if f.entity == entity_id}
        if not starting or forms - starting or any(w.form is None for w in flows):
            return []
        return sorted(starting)

    if not built.definition.definitions_of("workflow"):
        return []
    return built.product(("workflow_entry_forms", entity_id), build)


def _check_managed(built, entity_id: str, values: Any, actor: Actor) -> None:
    if actor.is_system or not isinstance(values, Mapping):
        return
    managed = managed_fields(built, entity_id) & set(values)
    if managed:
        errors = FieldErrors()
        for fid in sorted(managed):
            errors.add(fid, "This field is managed by the workflow.")
        raise errors


def check_create(built, entity_id: str, values: Any, actor: Actor, form: str | None = None) -> None:
    _check_managed(built, entity_id, values, actor)
    if actor.is_system:
        return
    forms = entry_forms(built, entity_id)
    if forms and form is None:
        errors = FieldErrors()
        labels = "、".join(f"「{built.definition.forms[f].label.get(actor.locale)}」" if f in built.definition.forms
                          else f for f in forms)
        errors.add("_record", "Records of this kind start an approval: create them through the form %(forms)s "
                   "(POST /api/v1/apps/%(app)s/forms/%(form)s).", forms=labels, app=built.id, form=forms[0])
        raise errors


def latest_status(conn: sa.Connection, built, entity_id: str, record_id: int) -> tuple[int, str] | None:
    if not built.definition.definitions_of("workflow"):
        return None
    row = conn.execute(sa.select(wf_instances.c.id, wf_instances.c.status).where(
        wf_instances.c.app == built.id, wf_instances.c.entity == entity_id, wf_instances.c.record_id == record_id,
        wf_instances.c.status.in_(("pending", "approved"))).order_by(wf_instances.c.id.desc()).limit(1)).first()
    return (row.id, row.status) if row is not None else None


def _binds_content(conn: sa.Connection, built, instance_id: int) -> bool:
    from keel.workflow.definition import workflows_of

    wid = conn.execute(sa.select(wf_instances.c.workflow).where(wf_instances.c.id == instance_id)).scalar()
    wf = workflows_of(built.definition).get(wid)
    return wf is not None and wf.bind_content


def _check_frozen(conn: sa.Connection, built, entity_id: str, record_id: int, action: str) -> None:
    found = latest_status(conn, built, entity_id, record_id)
    if found is None:
        return
    instance_id, status = found
    if status == "pending" and action == "changed" and _binds_content(conn, built, instance_id):
        return  # bind_content: editable while pending; an edit after an approval restarts (after_update)
    if status == "pending":
        raise Conflict(f"This record is under approval (request #{instance_id}) and cannot be {action} now; "
                       f"the submitter may withdraw the request to change it.")
    raise Conflict(f"This record was approved (request #{instance_id}) and cannot be {action}; "
                   f"file a new revision request to change it.")


def workflow_only_fields(built, entity_id: str) -> tuple[Any, ...]:
    """The fields of an entity that only a workflow may change (`"changed_by": "workflow"`)."""
    return built.product(("workflow_only_fields", entity_id),
                         lambda: tuple(f for f in built.entity(entity_id).fields if f.changed_by == "workflow"))


def _same(f, sent: Any, stored: Any) -> bool:
    """Whether a value as sent equals the stored one, in the field's own terms ("5" and 5.00 are equal)."""
    if sent is None or sent == "":
        return stored is None or stored == ""
    try:
        parsed = f.ftype.parse(f, sent)
    except Exception:  # not a value of this field at all: the write path reports it; it changes nothing
        return True
    try:
        return f.ftype.dump(f, parsed) == f.ftype.dump(f, stored) if stored is not None else parsed is None
    except Exception:
        return parsed == stored


def check_changed_by(conn: sa.Connection, built, entity_id: str, record_id: int, values: Any,
                     actor: Actor) -> None:
    """Refuse an update that changes a field only a workflow may change, unless a workflow writes it."""
    if acts_for_workflow(actor) or not isinstance(values, Mapping):
        return
    guarded = [f for f in workflow_only_fields(built, entity_id) if f.id in values]
    if not guarded:
        return
    table = built.table(entity_id)
    row = conn.execute(sa.select(*(table.c[f.id] for f in guarded)).where(table.c.id == record_id)).first()
    if row is None:
        return
    errors = FieldErrors()
    for f in guarded:
        if not _same(f, values[f.id], row._mapping[f.id]):
            errors.add(f.id, "“%(label)s” can only be changed by an approval workflow (%(field)s).",
                       label=f.label.get(actor.locale), field=f.id)
    if errors:
        raise errors


def check_update(conn: sa.Connection, built, entity_id: str, record_id: int, values: Any, actor: Actor) -> None:
    check_changed_by(conn, built, entity_id, record_id, values, actor)
    if actor.is_system:
        return
    _check_managed(built, entity_id, values, actor)
    _check_frozen(conn, built, entity_id, record_id, "changed")


def check_delete(conn: sa.Connection, built, entity_id: str, record_id: int, actor: Actor) -> None:
    if actor.is_system:
        return
    _check_frozen(conn, built, entity_id, record_id, "deleted")


def after_create(conn: sa.Connection, built, entity_id: str, record: Mapping[str, Any], actor: Actor,
                 form: str | None = None) -> None:
    if actor.is_system or not built.definition.definitions_of("workflow"):
        return
    from keel.workflow.engine import start_for

    start_for(conn, built, dict(record), actor, form_id=form, entity_id=entity_id)


class _BuiltRuntime:
    """What the engine's `load_run` needs from a runtime, when all a record event carries is the app as
    built now: that build for its own version, other (pinned) versions read from the stored bundles."""

    def __init__(self, built):
        self.built = built

    def latest(self, conn, app_id):
        return self.built

    def at(self, conn, app_id, version):
        if version == self.built.version:
            return self.built
        from keel.storage import versions
        from keel.storage.built import build

        return build(versions.get(conn, app_id, version, self.built.registries), version)


def after_update(conn: sa.Connection, built, entity_id: str, record_id: int, changes: Mapping[str, Any],
                 actor: Actor) -> None:
    """bind_content: a person's edit of a pending request after any approval starts its approvals again."""
    if actor.is_system or not changes or not built.definition.definitions_of("workflow"):
        return
    found = latest_status(conn, built, entity_id, record_id)
    if found is None or found[1] != "pending" or not _binds_content(conn, built, found[0]):
        return
    from keel.workflow.engine import restart_after_edit

    restart_after_edit(conn, _BuiltRuntime(built), found[0], actor, sorted(changes))
