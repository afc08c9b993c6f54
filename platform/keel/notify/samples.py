"""Sample contexts for checking notification templates before `apply`: each template is rendered (in
the budgeted sandbox) against the data it will get, built from the definition, so an unknown name
(`{{ nosuch.x }}`), a field the record does not have or an unsafe attribute is a validation error
instead of a failure at the final approval.

A notification gets one of two contexts, depending on who sends it:
- a workflow's `notify` action: the record (its fields as JSON values), the app, the workflow, the
  instance, the decision, the decider and the comment (`workflow.notices.template_context`);
- an SLA timer (`remind_template`, `overdue_template`, `escalate_template`): the instance id, the
  workflow id, the step, the due time, the entity, the record id and the workflow's label
  (`workflow.timers`).
tests/test_templates_bounded.py checks these samples against what the workflow really sends."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from keel.definitions.model import EntityDef
from keel.sandbox import AnyKeys

SAMPLE_BY_TYPE: dict[str, Any] = {
    "text": "示例 sample", "long_text": "示例 sample", "rich_text": "<p>示例 sample</p>", "integer": 1,
    "decimal": "1.5000", "money": "1.00", "percent": "0.150000", "boolean": True, "date": "2025-01-31",
    "datetime": "2025-01-31T09:00:00+00:00", "link": 1, "user": 1, "json": {}, "table": [],
}
SYSTEM_SAMPLE = {"id": 1, "row_version": 1, "created_at": "2025-01-31T09:00:00+00:00", "created_by": 1,
                 "updated_at": "2025-01-31T09:00:00+00:00", "updated_by": 1}
LABEL_SAMPLE = {"zh": "示例", "en": "Sample"}


def sample_record(entity: EntityDef | None) -> dict[str, Any]:
    if entity is None:
        return AnyKeys(SYSTEM_SAMPLE)  # no workflow sends it yet: its entity is unknown
    record = dict(SYSTEM_SAMPLE)
    for f in entity.fields:
        if f.type == "select":
            record[f.id] = f.options[0].id if f.options else "option"
        elif f.type == "multi_select":
            record[f.id] = [f.options[0].id] if f.options else []
        else:
            record[f.id] = SAMPLE_BY_TYPE.get(f.type, SAMPLE_BY_TYPE["text"])
    return record


def action_context(app_id: str, workflow_id: str, entity: EntityDef | None) -> dict[str, Any]:
    return {"record": sample_record(entity), "app": app_id,
            "workflow": {"id": workflow_id, "label": dict(LABEL_SAMPLE)},
            "instance": {"id": 1, "status": "approved", "state": "done"},
            "decision": "approved", "decider": {"id": 1, "username": "sample", "name": "示例 Sample"},
            "comment": "示例 sample"}


def timer_context(workflow_id: str, step_id: str, entity_id: str) -> dict[str, Any]:
    return {"instance_id": 1, "workflow": workflow_id, "step": step_id, "due_at": "2025-01-31 18:00",
            "entity": entity_id, "record_id": 1, "workflow_label": dict(LABEL_SAMPLE)}


def _entity_of(workflow: Mapping[str, Any], ctx) -> EntityDef | None:
    starts = workflow.get("starts_on") or {}
    entity_id = starts.get("entity")
    if entity_id is None and starts.get("form") in ctx.forms:
        entity_id = ctx.forms[starts["form"]].entity
    return ctx.entities.get(entity_id) if entity_id else None


def _uses(value: Any, notification_id: str, step: str = "") -> Iterator[tuple[str, str]]:
    """("action" | "timer", step id) for each place in a workflow definition that sends this notification."""
    if isinstance(value, Mapping):
        step = value.get("id", step) if "sla" in value or "approvers" in value else step
        for key, item in value.items():
            if item == notification_id and key == "template" and value.get("action") == "notify":
                yield "action", step
            elif item == notification_id and isinstance(key, str) and key.endswith("_template"):
                yield "timer", step
            else:
                yield from _uses(item, notification_id, step)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _uses(item, notification_id, step)


def sample_contexts(notification_id: str, ctx) -> list[tuple[str, dict[str, Any]]]:
    """(what sends it, sample context) for every workflow that sends the notification; when none does
    (yet), the action context with a record of unknown fields."""
    out = []
    for workflow in ctx.definitions_of("workflow").values():
        data = workflow.data
        entity = _entity_of(data, ctx)
        for kind, step in dict.fromkeys(_uses(data, notification_id)):
            if kind == "action":
                out.append((f"workflow {data.get('id')}", action_context(ctx.id, data.get("id", ""), entity)))
            else:
                out.append((f"workflow {data.get('id')} step {step} (SLA)",
                            timer_context(data.get("id", ""), step, entity.id if entity else "")))
    return out or [("a notify action", action_context(ctx.id, "workflow", None))]
