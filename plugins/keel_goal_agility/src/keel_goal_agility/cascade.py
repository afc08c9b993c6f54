"""An approved revision, applied: the goal gets its new values as a new version linked to the request; the
impact set is computed up to the strategy cards and down to every goal and task under it; children whose
target derives from the parent (`target_share`) are re-split by their shares — or flagged for their owners to
confirm, as settings.cascade.derived_children says; every affected owner gets one inbox message naming the goal
and the change, and their records are marked yellow until they acknowledge; the request records when it was
decided and when everyone was told.

`plan` computes all of that without writing (the approvers' impact preview shows it); `apply` writes it, inside
the approval's transaction (the workflow action below), so the approval, the new target, the cascade and the
messages commit together or not at all. Two approvals at the same instant are serialised by the engine's lock on
the workflow instance; a request already applied (`decided_at` set) is never applied twice.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.actor import SYSTEM, Actor
from keel.json_values import jsonable
from keel.storage import highlights, records
from keel.storage.audit import record_event, utcnow
from keel_goal_agility import guard, settings, tree
from keel_goal_agility.formats import incentive_text, metric_text
from keel_goal_agility.requests import proposed_changes

LABELS = {
    "core_metric": {"zh": "核心指标", "en": "Core metric"},
    "incentive": {"zh": "激励权重", "en": "Incentive weight"},
    "resources": {"zh": "资源倾斜", "en": "Resource allocation"},
    "target": {"zh": "目标值", "en": "Target"},
}


@dataclass
class Plan:
    request: dict[str, Any]
    goal: dict[str, Any]
    new_values: dict[str, Any]                     # goal field -> new value
    changes: list[dict[str, Any]]                  # what people read: label, old, new (zh and en)
    resplit: list[dict[str, Any]] = field(default_factory=list)    # {"id", "owner", "title", "old", "new", "values"}
    confirm: list[dict[str, Any]] = field(default_factory=list)    # derived children flagged for their owner
    down: list[dict[str, Any]] = field(default_factory=list)       # every goal under it
    up: list[dict[str, Any]] = field(default_factory=list)         # every goal above it
    cards: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def owners(self) -> set[int]:
        people = {self.goal["owner"]} | {g["owner"] for g in self.down} | {t["owner"] for t in self.tasks}
        return {p for p in people if p is not None}

    def summary(self) -> dict[str, Any]:
        return {"goals_down": [g["id"] for g in self.down], "goals_up": [g["id"] for g in self.up],
                "cards": [c["id"] for c in self.cards], "tasks": [t["id"] for t in self.tasks],
                "people": sorted(self.owners), "resplit": [r["id"] for r in self.resplit],
                "confirm": [r["id"] for r in self.confirm],
                "counts": {"goals": 1 + len(self.down) + len(self.up), "tasks": len(self.tasks),
                           "people": len(self.owners)}}


def _read_request(conn: sa.Connection, built, request_id: int) -> dict[str, Any] | None:
    t = built.table("revision_request")
    row = conn.execute(sa.select(t).where(t.c.id == request_id)).first()
    return dict(row._mapping) if row is not None else None


def _read_goal(conn: sa.Connection, built, goal_id: int, lock: bool = False) -> dict[str, Any] | None:
    t = built.table("goal")
    q = sa.select(t).where(t.c.id == goal_id, t.c.deleted_at.is_(None))
    row = conn.execute(q.with_for_update() if lock else q).first()
    return dict(row._mapping) if row is not None else None


def describe_changes(goal: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Old → new per dimension, in both languages (the inbox message and the approvers' panel)."""
    after = {**goal, **new}
    out = []

    def row(key: str, old_zh: str, new_zh: str, old_en: str, new_en: str, rationale: Any = None) -> None:
        out.append({"dimension": key, "label": LABELS[key], "old": old_zh, "new": new_zh, "old_en": old_en,
                    "new_en": new_en, "rationale": rationale})

    if any(k in new for k in ("metric", "unit", "target", "category")):
        row("core_metric", metric_text(goal.get("metric"), goal.get("target"), goal.get("unit")),
            metric_text(after.get("metric"), after.get("target"), after.get("unit")),
            metric_text(goal.get("metric"), goal.get("target"), goal.get("unit"), "en"),
            metric_text(after.get("metric"), after.get("target"), after.get("unit"), "en"))
    if any(k in new for k in ("incentive_category", "incentive_weight")):
        row("incentive", incentive_text(goal.get("incentive_category"), goal.get("incentive_weight")),
            incentive_text(after.get("incentive_category"), after.get("incentive_weight")),
            incentive_text(goal.get("incentive_category"), goal.get("incentive_weight"), "en"),
            incentive_text(after.get("incentive_category"), after.get("incentive_weight"), "en"))
    if "resources" in new:
        row("resources", goal.get("resources") or "—", new["resources"], goal.get("resources") or "—", new["resources"])
    return out


def _derived_values(child: Mapping[str, Any], parent_after: Mapping[str, Any], parent_changed: set[str]) -> dict:
    """A derived child follows its parent: target = parent's target × share; metric, unit and category too."""
    out: dict[str, Any] = {}
    for f in ("metric", "unit", "category"):
        if f in parent_changed and parent_after.get(f) != child.get(f):
            out[f] = parent_after.get(f)
    if parent_after.get("target") is not None and child.get("target_share") is not None:
        quantum = Decimal(1) if (out.get("unit") or child.get("unit")) == "count" else Decimal("0.01")
        new_target = (Decimal(parent_after["target"]) * Decimal(child["target_share"])).quantize(quantum, ROUND_HALF_UP)
        if child.get("target") is None or Decimal(child["target"]) != new_target:
            out["target"] = new_target
    return out


@dataclass
class Impact:
    """Everything a change of one goal touches: the goals above it up to the strategy cards, every goal under it
    (through main parents and contributions) and every task of those goals."""

    goal: dict[str, Any]
    up: list[dict[str, Any]]
    down: list[dict[str, Any]]
    cards: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    subtree: tree.Subtree

    @property
    def goals(self) -> int:
        return 1 + len(self.up) + len(self.down)


def impact(conn: sa.Connection, built, goal: dict[str, Any] | int) -> Impact:
    if isinstance(goal, int):
        goal = tree.goal(conn, built, goal) or {"id": goal, "strategy_card": None}
    st = tree.subtree(conn, built, goal["id"])
    down = [st.goals[g] for g in sorted(st.goals, key=lambda g: (st.depth[g], g)) if g != goal["id"]]
    up, _ = tree.ancestors(conn, built, goal["id"])
    cards = tree.cards_of(conn, built, [goal.get("strategy_card")] + [g.get("strategy_card") for g in up])
    tasks = tree.tasks_of(conn, built, [goal["id"]] + [g["id"] for g in down])
    return Impact(goal, up, down, cards, tasks, st)


def plan(conn: sa.Connection, built, request_id: int, lock: bool = False) -> Plan | None:
    req = _read_request(conn, built, request_id)
    if req is None or req.get("goal") is None:
        return None
    goal = _read_goal(conn, built, req["goal"], lock=lock)
    if goal is None:
        return None
    new = {k: v for k, (_, v) in proposed_changes(goal, req).items()}
    p = Plan(req, goal, new, describe_changes(goal, new))
    for c in p.changes:
        c["rationale"] = {"core_metric": req.get("metric_rationale"), "incentive": req.get("incentive_rationale"),
                          "resources": req.get("resources_rationale")}.get(c["dimension"])
    found = impact(conn, built, goal)
    p.down, p.up, p.cards, p.tasks = found.down, found.up, found.cards, found.tasks
    # Re-split top-down: a derived child's new values depend on its parent's new values.
    mode = settings.derived_children(built)
    after = {goal["id"]: {**goal, **new}}
    changed = {goal["id"]: set(new)}
    for g in p.down:
        parent = g.get("parent")
        if parent not in after or g.get("target_share") is None or not changed.get(parent):
            continue
        values = _derived_values(g, after[parent], changed[parent])
        if not values:
            continue
        entry = {"id": g["id"], "owner": g["owner"], "title": g["title"], "values": values,
                 "old": metric_text(g.get("metric"), g.get("target"), g.get("unit")),
                 "new": metric_text(values.get("metric", g.get("metric")), values.get("target", g.get("target")),
                                    values.get("unit", g.get("unit")))}
        if mode == "resplit":
            p.resplit.append(entry)
            after[g["id"]], changed[g["id"]] = {**g, **values}, set(values)
        else:
            p.confirm.append(entry)
    return p


def _jsonish(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in values.items()}


def apply(conn: sa.Connection, built, request_id: int, writer: Actor, *, notify: str | None = None,
          also_tell: list[int] = (), instance_id: int | None = None) -> Plan | None:
    """Apply an approved request (see the module doc). Returns the plan it carried out, or None when the request
    was already applied or its goal is gone."""
    req = _read_request(conn, built, request_id)
    if req is None or req.get("decided_at") is not None:
        return None
    p = plan(conn, built, request_id, lock=True)
    if p is None:
        return None
    goal, now = p.goal, utcnow()
    link = {"last_revision": req["id"]}
    records.update_current(conn, built, "goal", goal["id"], {**_jsonish(p.new_values), **link,
                                                                "revision_no": (goal.get("revision_no") or 1) + 1},
                           writer, origin={"revision": req["id"]}, mark_owner=False)
    numbers = {g["id"]: g.get("revision_no") or 1 for g in p.down}
    children = {r["id"]: {**_jsonish(r["values"]), **link, "revision_no": numbers.get(r["id"], 1) + 1}
                for r in p.resplit}
    children.update({r["id"]: {"needs_confirmation": True} for r in p.confirm})
    if children:
        records.update_many_current(conn, built, "goal", children, writer,
                                    origin={"revision": req["id"], "cascade": goal["id"]}, mark_owner=False)
    changed_words = "；".join(f"{c['label']['zh']} {c['old']} → {c['new']}" for c in p.changes)
    reason = f"「{goal['title']}」已修订：{changed_words}"
    detail = {"revision": req["id"], "goal": goal["id"], "fields": sorted(p.new_values)}
    marks = [("goal", goal["id"], goal["owner"])] + [("goal", g["id"], g["owner"]) for g in p.down] \
        + [("task", t["id"], t["owner"]) for t in p.tasks]
    highlights.mark_many(conn, built.id, marks, reason, detail, at=now)
    summary = p.summary()
    recipients = sorted(p.owners | {int(u) for u in also_tell if u is not None})
    if notify and recipients:
        from keel.notify import inbox

        fresh = _read_goal(conn, built, goal["id"]) or goal
        inbox.send(conn, app=built.id, template=notify, recipients=recipients, actor=writer,
                   link=f"/apps/{built.id}/goal/{goal['id']}", entity="goal", record_id=goal["id"],
                   app_def=built.definition, context={
                       "goal": {"id": goal["id"], "title": goal["title"], "revision_no": fresh.get("revision_no")},
                       "request": {"id": req["id"], "instance": instance_id},
                       "changes": [{k: c[k] for k in ("label", "old", "new", "old_en", "new_en")} for c in p.changes],
                       "impact": summary["counts"]})
    records.update_current(conn, built, "revision_request", req["id"], {
        "decided_at": now.isoformat(), "notified_at": utcnow().isoformat(), "goal_category": goal.get("category"),
        "impact": jsonable(summary)}, SYSTEM)
    record_event(conn, writer, "goal_agility.revision_applied", app=built.id, entity="goal", record_id=goal["id"],
                 detail={"request": req["id"], "fields": sorted(p.new_values), "resplit": summary["resplit"],
                         "confirm": summary["confirm"], "marked": len(marks), "told": len(recipients)}, at=now)
    guard.check(conn, built, goal.get("category"), writer, now)
    return p


def _approvers(conn: sa.Connection, instance_id: int) -> list[int]:
    from keel.storage.workflow_tables import wf_tasks

    return list(conn.execute(sa.select(wf_tasks.c.assignee_id).where(
        wf_tasks.c.instance_id == instance_id, wf_tasks.c.kind == "approve",
        wf_tasks.c.status == "approved")).scalars())


def _unknown(params: Mapping[str, Any], allowed: set[str]) -> list[tuple[str, str]]:
    return [(f"/{k}", f"unknown key '{k}'; this action takes: {', '.join(sorted(allowed)) or 'nothing'}")
            for k in sorted(set(params) - allowed - {"action"})]


class ApplyRevision:
    """Workflow action `{"action": "apply_revision", "notify": "<notification id>"}` on a revision request's
    `on_approved`: applies and cascades it (see the module doc). `notify`: the template of the one message
    everyone affected gets (with the submitter and the approvers)."""

    name = "apply_revision"
    tells_submitter = True  # its one message goes to the submitter too: the engine's "已通过" is not sent beside it
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"notify": {"type": "string"}}}

    def check(self, params, scope):
        out = _unknown(params, {"notify"})
        if scope.entity is not None and scope.entity.field("goal") is None:
            out.append(("/action", f"apply_revision runs on a revision request (with a `goal` link); "
                                   f"entity '{scope.entity.id}' has none"))
        note = params.get("notify")
        if note is not None and scope.notifications is not None and note not in scope.notifications:
            out.append(("/notify", f"no notification '{note}' in this app"))
        return out

    def run(self, ctx, params):
        inst = ctx.instance
        writer = getattr(ctx, "writer", None) or SYSTEM
        apply(ctx.conn, ctx.built, inst["record_id"], writer, notify=params.get("notify"),
              also_tell=[inst["submitter_id"], *_approvers(ctx.conn, inst["id"])], instance_id=inst["id"])


class RecordDecision:
    """Workflow action `{"action": "record_revision_decision"}` on `on_rejected`: the request was decided (for
    the lead times), nothing else changes."""

    name = "record_revision_decision"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def check(self, params, scope):
        return _unknown(params, set())

    def run(self, ctx, params):
        records.update_current(ctx.conn, ctx.built, ctx.instance["entity"], ctx.instance["record_id"],
                               {"decided_at": utcnow().isoformat()}, SYSTEM)
