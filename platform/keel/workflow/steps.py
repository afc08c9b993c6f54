"""The machinery under every transition: the pinned definition of an instance, entering a step or state,
creating tasks per the step's mode, deciding whether a step is done, finishing. `engine.py` checks who may
do what and then drives these; nothing here checks permissions.

Everything runs on the caller's connection, inside the one transaction of the transition that holds the
instance's row lock."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.actor import SYSTEM, Actor
from keel.definitions.model import AppDef
from keel.errors import Conflict
from keel.expressions import ExpressionError, compile_expression
from keel.storage.audit import record_event, utcnow
from keel.storage.system import app_versions, users
from keel.storage.workflow_tables import wf_delegations, wf_instances, wf_tasks
from keel.workflow import notices
from keel.workflow.actions import ActionContext, run_actions
from keel.workflow.definition import MAX_HOPS, State, Step, Workflow, workflows_of
from keel.workflow.resolvers import ResolveContext, resolve_step

log = logging.getLogger("keel.workflow")
OPEN = ("pending", "waiting")
SEATED = (*OPEN, "approved", "rejected", "sent_back")  # a task whose assignee decides, or decided, in a step

# ---- definitions of a version, built apps ----------------------------------------------------------

# The app's latest version, as a column next to an instance row (engine's locking statements).
LATEST_VERSION = (sa.select(sa.func.max(app_versions.c.version)).where(app_versions.c.app == wf_instances.c.app)
                  .scalar_subquery().label("latest_app_version"))


def latest_built(conn: sa.Connection, runtime, app_id: str, version: int | None = None):
    """The app as built from its latest version: records live in today's tables. `version`: the latest
    version number, when the caller read it in this transaction already."""
    if version is None:
        return runtime.latest(conn, app_id)
    return runtime.at(conn, app_id, version)


def pinned_app(conn: sa.Connection, runtime, app_id: str, version: int) -> AppDef:
    """The definition of the version an instance started with."""
    return runtime.at(conn, app_id, version).definition


# ---- one transition's working set ------------------------------------------------------------------

@dataclass
class Run:
    conn: sa.Connection
    instance: dict[str, Any]
    app_def: AppDef
    workflow: Workflow
    built: Any
    actor: Actor
    now: dt.datetime
    values: dict[str, Any] | None = None   # the record's values, read once until something writes it
    planned: dict[str, list[int]] | None = None  # approvers resolved while planning the path at start

    @property
    def id(self) -> int:
        return self.instance["id"]


def load_run(conn: sa.Connection, runtime, instance: Any, actor: Actor) -> Run:
    inst = dict(instance._mapping) if hasattr(instance, "_mapping") else dict(instance)
    built = latest_built(conn, runtime, inst["app"], inst.pop(LATEST_VERSION.name, None))
    app_def = pinned_app(conn, runtime, inst["app"], inst["app_version"])
    wf = workflows_of(app_def).get(inst["workflow"])
    if wf is None:
        raise Conflict(f"workflow '{inst['workflow']}' is missing from version {inst['app_version']} of app "
                       f"'{inst['app']}'")
    return Run(conn, inst, app_def, wf, built, actor, utcnow())


# Statements run by every transition, built once (see engine.py): a call only binds its values.
_SAVE = wf_instances.update().where(wf_instances.c.id == sa.bindparam("instance_id"))
_STEP_TASKS = sa.select(wf_tasks).where(
    wf_tasks.c.instance_id == sa.bindparam("instance_id"), wf_tasks.c.step == sa.bindparam("step_id"),
    wf_tasks.c.visit == sa.bindparam("visit_no"), wf_tasks.c.kind == sa.bindparam("task_kind"),
).order_by(wf_tasks.c.seq, wf_tasks.c.id)
_OPEN_TASKS = sa.select(wf_tasks.c.id, wf_tasks.c.assignee_id).where(
    wf_tasks.c.instance_id == sa.bindparam("instance_id"), wf_tasks.c.status.in_(OPEN),
    wf_tasks.c.id.not_in(sa.bindparam("except_ids", expanding=True)))
_CLOSE_TASKS = wf_tasks.update().where(wf_tasks.c.id.in_(sa.bindparam("task_ids", expanding=True)))
_DELEGATES = (
    sa.select(wf_delegations.c.user_id, wf_delegations.c.delegate_id)
    .select_from(wf_delegations.join(users, users.c.id == wf_delegations.c.delegate_id))
    .where(wf_delegations.c.user_id.in_(sa.bindparam("user_ids", expanding=True)), users.c.active.is_(True),
           sa.or_(wf_delegations.c.until.is_(None), wf_delegations.c.until > sa.bindparam("now"))))


def save(run: Run, **values: Any) -> None:
    values["updated_at"] = run.now
    run.conn.execute(_SAVE, {"instance_id": run.id, **values})
    run.instance.update(values)


def audit(run: Run, action: str, **detail: Any) -> None:
    inst = run.instance
    record_event(run.conn, run.actor, f"workflow.{action}", app=inst["app"], entity=inst["entity"],
                 record_id=inst["record_id"], at=run.now,
                 detail={"instance": run.id, "workflow": inst["workflow"], **detail})


def record_values(run: Run) -> dict[str, Any]:
    if run.values is None:
        table = run.built.table(run.instance["entity"])
        row = run.conn.execute(sa.select(table).where(table.c.id == run.instance["record_id"])).first()
        run.values = dict(row._mapping) if row is not None else {}
    return run.values


def run_step_actions(run: Run, specs) -> None:
    """Run definition actions; they may write the record, so its values are read afresh afterwards."""
    if specs:
        run_actions(ActionContext(run.conn, run.actor, run.built, run.instance, run.workflow, record_values(run),
                                  run.app_def), specs)
        run.values = None


def resolve_context(run: Run, values: dict | None = None) -> ResolveContext:
    return ResolveContext(run.conn, run.app_def, run.workflow,
                          values if values is not None else record_values(run), run.instance["submitter_id"])


def sync_status(run: Run) -> None:
    """Keep the record's status field equal to the request's status (written as the system: users
    cannot write it)."""
    field = run.workflow.status_field
    if not field or run.built.definition.entities.get(run.instance["entity"]) is None:
        return
    if run.built.entity(run.instance["entity"]).field(field) is None:
        return
    from keel.storage import records

    if run.values is not None and run.values.get(field) == run.instance["status"]:
        return  # read in this transaction and already equal: nothing to write
    # update_current reads the row once, under its lock, and writes (with a version row and an audit
    # event) only when the value differs; reading the values first as well would be a second read.
    records.update_current(run.conn, run.built, run.instance["entity"], run.instance["record_id"],
                           {field: run.instance["status"]}, SYSTEM)
    run.values = None


# ---- moving between states ---------------------------------------------------------------------------

def next_node(workflow: Workflow, node: Step | State, values) -> str:
    """The first transition whose condition holds. `values`: the record's values, or a function giving
    them (read only when a condition needs them)."""
    for t in node.next:
        if t.when is None:
            return t.to
        if callable(values):
            values = values()
        try:
            if compile_expression(t.when).evaluate(values):
                return t.to
        except ExpressionError:
            continue  # e.g. a comparison with an empty field: not met
    raise Conflict(f"no transition of '{node.id}' in workflow '{workflow.id}' applies to this record")


def plan_path(ctx: ResolveContext, workflow: Workflow, start: str) -> dict[str, list[int]]:
    """Walk the path the request would take if every step approved, resolving each step's approvers:
    a step that would find nobody is refused now, at submission, not when the request gets there.
    Returns the approvers found, by step."""
    node_id, found = start, {}
    for _ in range(MAX_HOPS):
        node = workflow.node(node_id)
        if node is None or (isinstance(node, State) and node.final) or node_id in found:
            break
        if isinstance(node, Step):
            found[node_id] = resolve_step(ctx, node)
        node_id = next_node(workflow, node, dict(ctx.record))
    return found


def enter(run: Run, node_id: str) -> None:
    for _ in range(MAX_HOPS):
        node = run.workflow.node(node_id)
        if node is None:
            raise Conflict(f"workflow '{run.workflow.id}' has no state '{node_id}'")
        if isinstance(node, Step):
            start_step(run, node)
            return
        if node.final:
            finish(run, node)
            return
        save(run, state=node.id)
        audit(run, "route", state=node.id)
        run_step_actions(run, node.on_enter)
        node_id = next_node(run.workflow, node, lambda: record_values(run))
    raise Conflict(f"workflow '{run.workflow.id}' passed {MAX_HOPS} states without reaching a step: a routing loop")


def _delegates(conn: sa.Connection, user_ids: list[int], now: dt.datetime) -> dict[int, int]:
    """Standing delegations in force: user -> the active user who acts for them."""
    if not user_ids:
        return {}
    rows = conn.execute(_DELEGATES, {"user_ids": list(user_ids), "now": now}).all()
    return {r.user_id: r.delegate_id for r in rows}


def insert_tasks(run: Run, step: Step, people: list[int], statuses: list[str], seqs: list[int],
                 kind: str = "approve", on_behalf_of: list[int | None] | None = None) -> list[int]:
    if not people:
        return []
    rows = [{"instance_id": run.id, "step": step.id, "visit": run.instance["visit"], "seq": seq, "kind": kind,
             "assignee_id": uid, "on_behalf_of": (on_behalf_of or [None] * len(people))[i], "status": status,
             "created_at": run.now} for i, (uid, status, seq) in enumerate(zip(people, statuses, seqs, strict=True))]
    result = run.conn.execute(wf_tasks.insert().returning(wf_tasks.c.id, sort_by_parameter_order=True), rows)
    return [r[0] for r in result]


def seated(run: Run, step: Step) -> set[int]:
    """Who has a seat in the step's current visit: an open task, or one they decided. One person decides
    at most once per step, across transfer, delegation and add-approvers."""
    return {t.assignee_id for t in step_tasks(run, step.id) if t.status in SEATED}


def assign(run: Run, step: Step, people: list[int], statuses: list[str], seqs: list[int],
           on_behalf_of: list[int | None] | None = None) -> list[int]:
    """Tasks for these approvers, each given to their delegate when a delegation is in force — unless the
    delegate is the submitter or already has a seat in the step: then the task stays with the approver
    (the timeline and the audit trail say so), so a delegation never makes one person decide twice."""
    delegates = _delegates(run.conn, people, run.now)
    behalf = list(on_behalf_of or [None] * len(people))
    taken = (seated(run, step) if delegates else set()) | set(people)
    final = []
    for i, uid in enumerate(people):
        to = delegates.get(uid)
        if to is not None:
            if to == run.instance["submitter_id"] or to in taken:
                audit(run, "delegation_skipped", step=step.id, user=uid, delegate=to,
                      reason="submitter" if to == run.instance["submitter_id"] else "duplicate")
            else:
                behalf[i] = behalf[i] or uid
                uid = to
                taken.add(to)
        final.append(uid)
    ids = insert_tasks(run, step, final, statuses, seqs, on_behalf_of=behalf)
    active = [(tid, uid) for tid, uid, s in zip(ids, final, statuses, strict=True) if s == "pending"]
    announce(run, step, active)
    return ids


def announce(run: Run, step: Step, tasks: list[tuple[int, int]]) -> None:
    """Pending tasks start their SLA clock and their assignees hear of them."""
    if not tasks:
        return
    notices.schedule_step(run.conn, run.id, step.id, [t for t, _ in tasks], step.sla,
                          run.instance.get("step_started_at") or run.now)
    notices.send_engine_message(run.conn, "task", app=run.instance["app"], recipients=[u for _, u in tasks],
                                instance_id=run.id, workflow_label=run.workflow.label, step_label=step.label,
                                actor=run.actor, app_def=run.built.definition)


def start_step(run: Run, step: Step) -> None:
    planned = (run.planned or {}).pop(step.id, None)  # resolved a moment ago, in this transaction
    seats = planned if planned is not None else resolve_step(resolve_context(run), step)
    people, auto = list(seats), list(getattr(seats, "auto", ()))
    if step.mode == "single":
        people, auto = (people[:1], []) if people else ([], auto[:1])
    save(run, state=step.id, status="pending", visit=run.instance["visit"] + 1, step_started_at=run.now)
    statuses = (["pending"] + ["waiting"] * (len(people) - 1)) if step.mode == "sequential" else ["pending"] * len(people)
    ids = assign(run, step, people, statuses, list(range(len(people))))
    audit(run, "step_enter", step=step.id, visit=run.instance["visit"], mode=step.mode, tasks=ids, assignees=people)
    for note in getattr(seats, "notes", ()):
        audit(run, "on_self", step=step.id, visit=run.instance["visit"], setting=step.on_self, **note)
    auto_ids = insert_tasks(run, step, auto, ["approved"] * len(auto), list(range(len(people), len(people) + len(auto))))
    if auto_ids:
        run.conn.execute(_CLOSE_TASKS, {"task_ids": auto_ids, "acted_at": run.now})
        for tid, uid in zip(auto_ids, auto, strict=True):
            audit(run, "auto_approve", step=step.id, visit=run.instance["visit"], task_id=tid, assignee=uid)
    run_step_actions(run, step.on_enter)
    if auto_ids:
        after_decision(run, step, "approve")


def step_tasks(run: Run, step_id: str | None = None, kind: str = "approve") -> list[Any]:
    return run.conn.execute(_STEP_TASKS, {"instance_id": run.id, "step_id": step_id or run.instance["state"],
                                          "visit_no": run.instance["visit"], "task_kind": kind}).all()


def close_open(run: Run, status: str = "withdrawn", except_ids: tuple[int, ...] = ()) -> list[int]:
    """End every open task of the instance (the other branches of an any-of step, a withdrawn request)."""
    found = run.conn.execute(_OPEN_TASKS, {"instance_id": run.id, "except_ids": list(except_ids or (-1,))}).all()
    ids = [r.id for r in found]
    if ids:
        run.conn.execute(_CLOSE_TASKS, {"task_ids": ids, "status": status, "acted_at": run.now})
        notices.cancel_tasks(run.conn, ids, run.id, [r.assignee_id for r in found])
    return ids


def after_decision(run: Run, step: Step, decision: str) -> None:
    """Whether the step is done after one approver decided, per its mode."""
    tasks = step_tasks(run, step.id)
    approved = sum(t.status == "approved" for t in tasks)
    pending = [t for t in tasks if t.status == "pending"]
    waiting = [t for t in tasks if t.status == "waiting"]
    if decision == "reject":
        if step.mode == "all" and step.quorum and approved + len(pending) + len(waiting) >= step.quorum:
            return  # the quorum can still be reached without this approver
        close_open(run)
        step_rejected(run, step)
        return
    if step.mode == "any" or (step.mode == "all" and step.quorum and approved >= step.quorum):
        close_open(run)
        complete_step(run, step)
    elif not pending and waiting:
        nxt = waiting[0]
        run.conn.execute(wf_tasks.update().where(wf_tasks.c.id == nxt.id).values(status="pending"))
        announce(run, step, [(nxt.id, nxt.assignee_id)])
    elif not pending and not waiting:
        complete_step(run, step)


def complete_step(run: Run, step: Step) -> None:
    audit(run, "step_complete", step=step.id, visit=run.instance["visit"], outcome="approved")
    run_step_actions(run, step.on_complete)
    enter(run, next_node(run.workflow, step, lambda: record_values(run)))


def step_rejected(run: Run, step: Step) -> None:
    audit(run, "step_complete", step=step.id, visit=run.instance["visit"], outcome="rejected")
    if step.on_reject == "back_to_submitter":
        save(run, status="returned")
        sync_status(run)
        audit(run, "return", step=step.id)
        tell_submitter(run, "returned", step)
    else:
        finish(run, run.workflow.final_state("rejected"), step)


def finish(run: Run, state: State, step: Step | None = None) -> None:
    close_open(run)
    save(run, state=state.id, status=state.final, finished_at=run.now)
    sync_status(run)
    outcome_actions = tuple(state.on_enter) + tuple(run.workflow.outcome_actions.get(state.final, ()))
    run_step_actions(run, outcome_actions)
    audit(run, "finish", outcome=state.final, state=state.id)
    if state.final != "withdrawn" and not tells_submitter(outcome_actions, run.built.registries.workflow_actions):
        tell_submitter(run, state.final, step)


def tells_submitter(actions, registered=None) -> bool:
    """Whether an outcome's own `notify` actions reach the submitter: then the app's message is the one
    message of that outcome, and the engine's built-in "Approved: …" is not sent beside it. A plugin's
    action that sends a message itself says so with `tells_submitter = True` (then its spec's `notify`
    names the message)."""
    for spec in actions:
        impl = (registered or {}).get(spec.get("action"))
        if getattr(impl, "tells_submitter", False) and spec.get("notify"):
            return True
        if spec.get("action") == "notify":
            to = spec.get("to", ["submitter"])
            if any(item in ("submitter", "participants") for item in to if isinstance(item, str)):
                return True
    return False


def tell_submitter(run: Run, kind: str, step: Step | None) -> None:
    notices.send_engine_message(run.conn, kind, app=run.instance["app"], recipients=[run.instance["submitter_id"]],
                                instance_id=run.id, workflow_label=run.workflow.label,
                                step_label=step.label if step else None, actor=run.actor,
                                app_def=run.built.definition)
