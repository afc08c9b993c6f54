"""Approver rules: who must approve a step. Each rule is an object with a `name`, a `params_schema`, a
`check(params, scope)` for `keel app validate` and a `resolve(context, params) -> list[int]` of user ids.

    {"rule": "manager_of", "of": "submitter"}      the direct superior (of the submitter or of a user field);
                                                   an empty seat walks up the department tree to the next
                                                   head, then falls back to `fallback_role`
    {"rule": "role", "role": "strategy"}            every active user with the role
    {"rule": "department", "code": "strategy", "pick": "head" | "all"}
    {"rule": "user", "field": "reviewer"}           the user in a user field of the record
    {"rule": "fixed", "username": "cro"}            one named user

Plugins add rules through the `keel_approver_rules` hook; the built-ins are offered through the same hook
(`keel_approver_rules` below). A rule that finds nobody is never an automatic approval: the engine turns
it into `NoApprover`, a 422 shown to the submitter, with an event for the administrators.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.auth import directory
from keel.definitions.model import AppDef
from keel.errors import FieldErrors
from keel.storage.system import departments, user_roles, users

log = logging.getLogger("keel.workflow")


class NoApprover(FieldErrors):
    """A step whose approver rules found nobody: shown to the submitter as a 422 on the request."""

    def __init__(self, workflow: str, step: str, rule: Mapping[str, Any], reason: str):
        super().__init__()
        self.workflow, self.step, self.rule, self.reason = workflow, step, dict(rule), reason
        self.add("_record", "Nobody can approve this request at step %(step)s: %(reason)s. An administrator "
                            "has been told.", step=step, reason=reason)


@dataclass
class ResolveContext:
    """What a rule may look at: the connection, the app version, the record's values and the submitter."""

    conn: sa.Connection
    app: AppDef
    workflow: Any            # keel.workflow.definition.Workflow
    record: Mapping[str, Any]
    submitter_id: int


def _active(conn: sa.Connection, ids: list[int]) -> list[int]:
    if not ids:
        return []
    ok = set(conn.execute(sa.select(users.c.id).where(users.c.id.in_(ids), users.c.active.is_(True))).scalars())
    return [i for i in ids if i in ok]


def users_with_role(conn: sa.Connection, role: str) -> list[int]:
    return list(conn.execute(
        sa.select(users.c.id).select_from(users.join(user_roles, user_roles.c.user_id == users.c.id))
        .where(user_roles.c.role == role, users.c.active.is_(True)).order_by(users.c.id)).scalars())


def _person(ctx: ResolveContext, ref: str) -> int | None:
    if ref == "submitter":
        return ctx.submitter_id
    value = ctx.record.get(ref)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _user_field_problem(params: Mapping[str, Any], key: str, scope) -> list[tuple[str, str]]:
    ref = params.get(key)
    if not isinstance(ref, str):
        return [(f"/{key}", f"give `{key}`: \"submitter\" or a user field of the record")]
    if ref == "submitter" or scope.entity is None:
        return []
    f = scope.entity.field(ref)
    if f is None:
        fields = ", ".join(scope.user_fields()) or "none"
        message = f"no field '{ref}' in entity '{scope.entity.id}' (user fields: {fields}; or \"submitter\")"
        return [(f"/{key}", message)]
    if f.type != "user":
        return [(f"/{key}", f"'{ref}' is a {f.type} field; name a user field or \"submitter\"")]
    return []


def _role_problem(role: Any, where: str, scope) -> list[tuple[str, str]]:
    if not isinstance(role, str):
        return [(where, "give a role id")]
    if scope.roles is not None and role not in scope.roles:
        declared = ", ".join(sorted(scope.roles))
        return [(where, f"unknown role '{role}'; declare it in app.json roles (declared: {declared})")]
    return []


def _unknown_keys(params: Mapping[str, Any], allowed: set[str]) -> list[tuple[str, str]]:
    return [(f"/{k}", f"unknown key '{k}'; this rule takes: {', '.join(sorted(allowed))}")
            for k in sorted(set(params) - allowed - {"rule"})]


class ManagerOf:
    name = "manager_of"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"of": {"type": "string"}, "fallback_role": {"type": "string"}}}

    def check(self, params, scope):
        out = _unknown_keys(params, {"of", "fallback_role"}) + _user_field_problem(params, "of", scope)
        if "fallback_role" in params:
            out += _role_problem(params["fallback_role"], "/fallback_role", scope)
        return out

    def resolve(self, ctx: ResolveContext, params) -> list[int]:
        person = _person(ctx, params.get("of", "submitter"))
        boss = directory.manager_of(ctx.conn, person) if person is not None else None
        if boss is not None:
            return [boss]
        # directory.manager_of already walked up the department tree; nobody there: the fallback role.
        role = params.get("fallback_role") or ctx.workflow.fallback_role
        return [u for u in users_with_role(ctx.conn, role) if u != person] if role else []


class Role:
    name = "role"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["role"], "properties": {"role": {"type": "string"}}}

    def check(self, params, scope):
        return _unknown_keys(params, {"role"}) + _role_problem(params.get("role"), "/role", scope)

    def resolve(self, ctx, params):
        return users_with_role(ctx.conn, params["role"])


class Department:
    name = "department"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["code"],
                     "properties": {"code": {"type": "string"}, "pick": {"enum": ["head", "all"]}}}

    def check(self, params, scope):
        out = _unknown_keys(params, {"code", "pick"})
        if not isinstance(params.get("code"), str) or not params.get("code"):
            out.append(("/code", "give the department's code"))
        if params.get("pick", "head") not in ("head", "all"):
            out.append(("/pick", "pick is \"head\" or \"all\""))
        return out

    def resolve(self, ctx, params):
        if params.get("pick", "head") == "head":
            head = directory.department_head(ctx.conn, params["code"])
            return [head] if head is not None else []
        return list(ctx.conn.execute(
            sa.select(users.c.id).select_from(users.join(departments, departments.c.id == users.c.department_id))
            .where(departments.c.code == params["code"], users.c.active.is_(True)).order_by(users.c.id)).scalars())


class UserField:
    name = "user"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["field"], "properties": {"field": {"type": "string"}}}

    def check(self, params, scope):
        return _unknown_keys(params, {"field"}) + _user_field_problem(params, "field", scope)

    def resolve(self, ctx, params):
        person = _person(ctx, params["field"])
        return _active(ctx.conn, [person]) if person is not None else []


class Fixed:
    name = "fixed"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["username"], "properties": {"username": {"type": "string"}}}

    def check(self, params, scope):
        out = _unknown_keys(params, {"username"})
        if not isinstance(params.get("username"), str) or not directory.USERNAME.fullmatch(params["username"]):
            out.append(("/username", "give a username"))
        return out

    def resolve(self, ctx, params):
        row = directory.find_user(ctx.conn, params["username"])
        return [row.id] if row is not None and row.active else []


BUILTIN_RULES = {r.name: r for r in (ManagerOf(), Role(), Department(), UserField(), Fixed())}



def rule_for(name: Any, rules: Mapping[str, Any]) -> Any | None:
    """The approver rule called `name` among the registered `rules` (the built-ins register there too)."""
    return rules.get(name) if isinstance(name, str) else None


def rule_errors(rule: Mapping[str, Any], scope) -> list[tuple[str, str]]:
    """Problems with one approver rule of a definition, as (pointer inside the rule, message)."""
    rules = scope.registries.approver_rules
    impl = rule_for(rule.get("rule"), rules)
    if impl is None:
        known = sorted(rules)
        return [("/rule", f"unknown approver rule '{rule.get('rule')}' (known: {', '.join(known)})")]
    check = getattr(impl, "check", None)
    if check is not None:
        return list(check(rule, scope))
    from jsonschema import Draft202012Validator

    params = {k: v for k, v in rule.items() if k != "rule"}
    return [("".join(f"/{p}" for p in e.absolute_path), e.message)
            for e in Draft202012Validator(getattr(impl, "params_schema", {})).iter_errors(params)]


def describe(rule: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "rule")
    return f"{rule.get('rule')}({params})"


def resolve_rule(ctx: ResolveContext, rule: Mapping[str, Any]) -> list[int]:
    impl = rule_for(rule.get("rule"), ctx.app.registries.approver_rules)
    if impl is None:
        return []
    try:
        found = impl.resolve(ctx, {k: v for k, v in rule.items() if k != "rule"}
                             if impl.name not in BUILTIN_RULES else rule)
    except Exception:
        log.exception("approver rule %s failed", describe(rule))
        return []
    return [u for u in (found or ()) if isinstance(u, int) and not isinstance(u, bool)]


class SeatConflict(NoApprover):
    """A step whose setting (`on_self: refuse`, the default) refuses an approver who is the submitter or
    already decides in the step: the request does not start (422), the administrators are told."""

    MESSAGES = {
        "submitter": "This request cannot start: at step %(step)s the submitter %(user)s would approve their own "
                     "request, which this step does not allow (on_self). An administrator has been told.",
        "duplicate": "This request cannot start: at step %(step)s %(user)s would decide twice, which this step "
                     "does not allow (on_self). An administrator has been told."}

    def __init__(self, workflow: str, step: str, rule: Mapping[str, Any], kind: str, username: str, more: str = ""):
        FieldErrors.__init__(self)
        self.workflow, self.step, self.rule = workflow, step, dict(rule)
        self.reason = _reason_text(kind, username) + more
        self.add("_record", self.MESSAGES[kind], step=step, user=username)


class Seats(list):
    """The approvers of a step, in order (a list of user ids), with what `on_self` did on the way:
    `auto`: the ids whose seat is approved without a decision (on_self: auto_approve), and `notes`: one
    dict per adjustment, for the timeline and the audit trail
    ({"user", "reason": "submitter" | "duplicate", "outcome": "left_out" | "skipped_to_superior" |
    "auto_approved", "to_user", "rule"})."""

    def __init__(self) -> None:
        super().__init__()
        self.auto, self.notes = [], []


def _reason_text(reason: str, username: str) -> str:
    return (f"the submitter {username} would approve their own request" if reason == "submitter"
            else f"{username} would decide twice")


def _username(conn: sa.Connection, uid: int) -> str:
    return conn.execute(sa.select(users.c.username).where(users.c.id == uid)).scalar() or f"#{uid}"


def resolve_step(ctx: ResolveContext, step) -> Seats:
    """The approvers of a step, in rule order, each at most once: one person decides at most once per
    step. A person who is the submitter (unless the step sets `allow_self_approval`) or already has a seat
    is a conflict. When the rule found others too, the conflicting person is left out of it; when they
    were the rule's only answer, the step's `on_self` decides: `refuse` (SeatConflict, the default),
    `skip_to_superior` (their superior, walking up, takes the seat) or `auto_approve` (the seat counts as
    approved). Every adjustment is in `Seats.notes`. Raises NoApprover when a rule finds nobody."""
    out = Seats()
    on_self = getattr(step, "on_self", "refuse")

    def conflict(uid: int) -> str | None:
        if uid == ctx.submitter_id and not step.allow_self_approval:
            return "submitter"
        if uid in out or uid in out.auto:
            return "duplicate"
        return None

    for rule in step.approvers:
        found = list(dict.fromkeys(resolve_rule(ctx, rule)))
        if not found:
            raise NoApprover(ctx.workflow.id, step.id, rule, f"rule {describe(rule)} found nobody")
        clear = [u for u in found if conflict(u) is None]
        if clear:
            for uid in found:
                reason = conflict(uid)
                if reason is not None:
                    out.notes.append({"user": uid, "reason": reason, "outcome": "left_out", "rule": describe(rule)})
            out.extend(clear)
            continue
        uid = found[0]
        reason = conflict(uid)
        note = {"user": uid, "reason": reason, "rule": describe(rule)}
        if on_self == "auto_approve":
            out.auto.append(uid)
            out.notes.append({**note, "outcome": "auto_approved"})
            continue
        if on_self == "skip_to_superior":
            boss = _superior_outside(ctx, uid, out)
            if boss is not None:
                out.append(boss)
                out.notes.append({**note, "outcome": "skipped_to_superior", "to_user": boss})
                continue
            raise SeatConflict(ctx.workflow.id, step.id, rule, reason, _username(ctx.conn, uid),
                               " and nobody above them is free to take the seat")
        raise SeatConflict(ctx.workflow.id, step.id, rule, reason, _username(ctx.conn, uid))
    return out


def _superior_outside(ctx: ResolveContext, uid: int, taken: Seats) -> int | None:
    """The nearest superior of `uid` who is neither the submitter nor already seated in the step."""
    for boss in directory.manager_chain(ctx.conn, uid):
        if boss != ctx.submitter_id and boss not in taken and boss not in taken.auto:
            return boss
    return None
