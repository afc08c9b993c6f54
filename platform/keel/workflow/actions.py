"""Actions a workflow runs on entering a state or completing a step, inside the transition's transaction:

    {"action": "set_fields", "values": {"status": "approved"}}
    {"action": "set_fields", "record": "goal", "from": {"target": "proposed_target"}}   (the linked record)
    {"action": "create_record", "entity": "task", "values": {"title": "Follow up"}, "from": {"goal": "goal"}}
    {"action": "notify", "template": "goal_changed", "to": ["submitter", "approvers", {"rule": "role", ...}]}
                    (without a template: the engine's own message about the request's status)

`from` maps a field of the new record to a safe expression over the workflow's record. Any other name
is looked up among the plugins' `keel_workflow_actions` (objects with `name`, `params_schema` and
`run(context, params)`); the built-ins are offered through the same hook below. Writes go through
`storage.records` as the system actor, so they are validated, versioned and audited like any other.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.actor import Actor, workflow_actor
from keel.definitions.model import SYSTEM_COLUMNS, thaw
from keel.expressions import ExpressionError, compile_expression
from keel.fieldtypes.base import FieldValueError

log = logging.getLogger("keel.workflow")
RECIPIENT_WORDS = ("submitter", "approvers", "participants")


@dataclass
class ActionContext:
    """What an action may use: the transaction, who triggered the transition, the app as built now
    (records are written to today's tables), the instance row, its workflow and the record's values."""

    conn: sa.Connection
    actor: Actor
    built: Any                 # keel.runtime.BuiltApp of the app's latest version
    instance: Mapping[str, Any]
    workflow: Any              # keel.workflow.definition.Workflow (of the pinned version)
    record: Mapping[str, Any]
    app_def: Any = None        # the pinned AppDef

    @property
    def writer(self) -> Actor:
        """Who an action writes records as: the system acting for this request (keel.actor.workflow_actor),
        the one writer a `"changed_by": "workflow"` field accepts; the audit trail names the request."""
        return workflow_actor(self.instance["app"], self.instance["workflow"], self.instance["id"])


def _field_value_problems(entity, fid: str, value: Any) -> list[str]:
    f = entity.field(fid)
    if f is None:
        return [f"no field '{fid}' in entity '{entity.id}'"]
    if f.computed:
        return [f"'{fid}' is computed and cannot be set"]
    if value is None:
        return []
    ftype = f.ftype
    try:
        parsed = ftype.parse(f, thaw(value))
    except FieldValueError as e:
        return [f"invalid value for '{fid}': " + "; ".join(m.render() for m in e.messages)]
    except (TypeError, ValueError, ArithmeticError):
        return [f"invalid value for '{fid}'"]
    return [f"invalid value for '{fid}': {m.render()}" for m in ftype.check(f, parsed)]


def _unknown_keys(params, allowed: set[str]) -> list[tuple[str, str]]:
    return [(f"/{k}", f"unknown key '{k}'; this action takes: {', '.join(sorted(allowed))}")
            for k in sorted(set(params) - allowed - {"action"})]


class SetFields:
    """{"action": "set_fields", "values": {"field": value}, "from": {"field": "<expression>"},
        "record": "<link field>"}: set fields of the request's record — or, with `record`, of the record
    its link field points to (an approved revision writing the goal's new target). `from` computes values
    from the request's record (safe expressions). Written as the workflow (ctx.writer), so fields marked
    `"changed_by": "workflow"` accept it."""

    name = "set_fields"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {
        "values": {"type": "object"}, "from": {"type": "object"}, "record": {"type": "string"}}}

    def check(self, params, scope):
        out = _unknown_keys(params, {"values", "from", "record"})
        values, sources = params.get("values") or {}, params.get("from") or {}
        if not isinstance(values, Mapping) or not isinstance(sources, Mapping) or not (values or sources):
            return out + [("/values", "give the fields to set, {\"field\": value} (or `from`, {\"field\": \"expression\"})")]
        target = scope.entity
        link = params.get("record")
        if link is not None and scope.entity is not None:
            f = scope.entity.field(link) if isinstance(link, str) else None
            if f is None or f.type != "link":
                links = ", ".join(x.id for x in scope.entity.fields if x.type == "link") or "none"
                return out + [("/record", f"'{link}' is not a link field of entity '{scope.entity.id}' (link fields: {links})")]
            target = scope.entities.get(f.entity)
        if target is not None:
            for fid, value in values.items():
                out += [(f"/values/{fid}", m) for m in _field_value_problems(target, fid, value)]
            for fid in sources:
                if target.field(fid) is None:
                    out.append((f"/from/{fid}", f"no field '{fid}' in entity '{target.id}'"))
        out += _expression_problems(sources, scope)
        return out

    def run(self, ctx: ActionContext, params):
        from keel.storage import records

        inst = ctx.instance
        values = dict(thaw(params.get("values") or {}))
        for fid, source in (params.get("from") or {}).items():
            values[fid] = _jsonish(compile_expression(source).evaluate(ctx.record))
        entity, record_id = inst["entity"], inst["record_id"]
        link = params.get("record")
        if link:
            target_id = ctx.record.get(link)
            if target_id is None:
                from keel.errors import Conflict

                raise Conflict(f"set_fields: the request's '{link}' is empty, so there is no record to update")
            entity, record_id = ctx.built.entity(inst["entity"]).field(link).entity, target_id
        # The record as it is now, read once under its row lock (the engine acts on the current version).
        records.update_current(ctx.conn, ctx.built, entity, record_id, values, ctx.writer)


def _expression_problems(sources, scope) -> list[tuple[str, str]]:
    out = []
    known = {f.id for f in scope.entity.fields} | set(SYSTEM_COLUMNS) if scope.entity else None
    for fid, source in sources.items():
        try:
            names = compile_expression(source).names if isinstance(source, str) else None
        except ExpressionError as e:
            out.append((f"/from/{fid}", f"invalid expression: {e}"))
            continue
        if names is None:
            out.append((f"/from/{fid}", "give an expression over the workflow's record"))
        elif known is not None:
            out += [(f"/from/{fid}", f"unknown name '{n}' in expression {source!r}") for n in sorted(names - known)]
    return out


class CreateRecord:
    name = "create_record"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["entity"],
                     "properties": {"entity": {"type": "string"}, "values": {"type": "object"},
                                    "from": {"type": "object"}}}

    def check(self, params, scope):
        out = _unknown_keys(params, {"entity", "values", "from"})
        target = scope.entities.get(params.get("entity"))
        if target is None:
            return out + [("/entity", f"no entity '{params.get('entity')}' in this app")]
        for fid, value in (params.get("values") or {}).items():
            out += [(f"/values/{fid}", m) for m in _field_value_problems(target, fid, value)]
        for fid in params.get("from") or {}:
            if target.field(fid) is None:
                out.append((f"/from/{fid}", f"no field '{fid}' in entity '{target.id}'"))
        return out + _expression_problems(params.get("from") or {}, scope)

    def run(self, ctx: ActionContext, params):
        from keel.storage import records

        values = dict(thaw(params.get("values") or {}))
        for fid, source in (params.get("from") or {}).items():
            values[fid] = _jsonish(compile_expression(source).evaluate(ctx.record))
        records.create(ctx.conn, ctx.built, params["entity"], values, ctx.writer)


def _jsonish(value: Any) -> Any:
    """A computed value as the write path takes it (dates as ISO text, Decimals as text)."""
    import datetime as dt
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


class Notify:
    name = "notify"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object",
                     "properties": {"template": {"type": "string"}, "to": {"type": "array"}}}

    def check(self, params, scope):
        from keel.workflow.resolvers import rule_errors

        out = _unknown_keys(params, {"template", "to"})
        template = params.get("template")
        if template is None:
            pass  # the engine's own message about the request's status
        elif not isinstance(template, str):
            out.append(("/template", "give the id of a notification in notifications/"))
        elif scope.notifications is not None and template not in scope.notifications:
            listing = ", ".join(sorted(scope.notifications)) or "none"
            out.append(("/template", f"no notification '{template}' in this app (notifications: {listing})"))
        to = params.get("to", ["submitter"])
        if not isinstance(to, (list, tuple)) or not to:
            return out + [("/to", "give a list of recipients")]
        for i, item in enumerate(to):
            if isinstance(item, Mapping):
                out += [(f"/to/{i}{p}", m) for p, m in rule_errors(item, scope)]
            elif item not in RECIPIENT_WORDS:
                words = ", ".join(RECIPIENT_WORDS)
                out.append((f"/to/{i}", f"unknown recipient {item!r}: use {words} or an approver rule"))
        return out

    def run(self, ctx: ActionContext, params):
        from keel.workflow import notices

        recipients = notices.recipients(ctx, params.get("to", ["submitter"]))
        if params.get("template"):
            notices.send_template(ctx, params["template"], recipients)
        elif ctx.instance["status"] in notices.MESSAGES:  # no template: the engine's message of the status
            notices.send_engine_message(ctx.conn, ctx.instance["status"], app=ctx.instance["app"],
                                        recipients=recipients, instance_id=ctx.instance["id"],
                                        workflow_label=ctx.workflow.label, step_label=None, actor=ctx.actor,
                                        app_def=ctx.built.definition)


BUILTIN_ACTIONS = {a.name: a for a in (SetFields(), CreateRecord(), Notify())}



def action_for(name: Any, actions: Mapping[str, Any]) -> Any | None:
    """The workflow action called `name` among the registered `actions` (the built-ins register there too)."""
    return actions.get(name) if isinstance(name, str) else None


def action_errors(spec: Mapping[str, Any], scope) -> list[tuple[str, str]]:
    actions = scope.registries.workflow_actions
    impl = action_for(spec.get("action"), actions)
    if impl is None:
        known = sorted(actions)
        return [("/action", f"unknown action '{spec.get('action')}' (known: {', '.join(known)})")]
    check = getattr(impl, "check", None)
    if check is not None:
        return list(check(spec, scope))
    from jsonschema import Draft202012Validator

    params = {k: v for k, v in thaw(spec).items() if k != "action"}
    return [("".join(f"/{p}" for p in e.absolute_path), e.message)
            for e in Draft202012Validator(getattr(impl, "params_schema", {})).iter_errors(params)]


def run_actions(ctx: ActionContext, specs) -> None:
    """Run a list of actions in order. An action that fails fails the transition: its transaction rolls
    back whole, and the error reaches the person who acted."""
    for spec in specs:
        impl = action_for(spec["action"], ctx.built.registries.workflow_actions)
        if impl is None:  # checked when the definition was applied; a plugin uninstalled since?
            from keel.errors import Conflict

            raise Conflict(f"workflow action '{spec['action']}' is not available (is its plugin installed?)")
        params = spec if spec["action"] in BUILTIN_ACTIONS else {k: v for k, v in spec.items() if k != "action"}
        impl.run(ctx, params)
