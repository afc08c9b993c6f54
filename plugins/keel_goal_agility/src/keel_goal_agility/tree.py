"""The goal tree: strategy cards → company → department → team → personal goals → tasks.

A goal has one main parent (`parent`) and may also contribute to other goals (`goal_contribution` rows, each
with a share). Everything here reads set-based, one statement per level of the tree, so an impact set over a
10,000-goal tree costs a handful of queries, not one per goal.

Roll-up follows the metric: amounts and counts are summed (three product targets of ¥100k, ¥20k and ¥1k are
not a third each), rates are averaged with the links' weights; a child in another unit does not count. A child
that also contributes elsewhere counts towards each parent with that link's share, its main parent taking the
rest. A goal without data is "no data" (None), never 0.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

CHUNK = 5000
ADDITIVE_UNITS = ("cny", "count")
GOAL_COLUMNS = ("id", "title", "owner", "level", "parent", "target_share", "strategy_card", "category", "metric",
                "unit", "target", "actual", "rollup", "revision_no", "status")


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


def goal_rows(conn: sa.Connection, built, where) -> list[dict[str, Any]]:
    t = built.table("goal")
    cols = [t.c[c] for c in GOAL_COLUMNS if c in t.c]
    return [dict(r._mapping) for r in conn.execute(sa.select(*cols).where(where, t.c.deleted_at.is_(None)))]


def goal(conn: sa.Connection, built, goal_id: int) -> dict[str, Any] | None:
    rows = goal_rows(conn, built, built.table("goal").c.id == goal_id)
    return rows[0] if rows else None


def _has(built, entity: str) -> bool:
    return entity in built.definition.entities


def contributions(conn: sa.Connection, built, *, goals: list[int] | None = None,
                  parents: list[int] | None = None) -> list[dict[str, Any]]:
    """Extra contribution links (goal → parent, share) of the given goals, or into the given parents."""
    if not _has(built, "goal_contribution"):
        return []
    t = built.table("goal_contribution")
    out: list[dict[str, Any]] = []
    ids, col = (goals, t.c.goal) if goals is not None else (parents or [], t.c.parent)
    for part in _chunks(list(ids)):
        out += [dict(r._mapping) for r in conn.execute(
            sa.select(t.c.goal, t.c.parent, t.c.share).where(col.in_(part), t.c.deleted_at.is_(None)))]
    return out


@dataclass
class Subtree:
    """A goal and everything under it: goals by id, children per goal (with the link's weight), tasks."""

    root: int
    goals: dict[int, dict[str, Any]] = field(default_factory=dict)
    children: dict[int, list[tuple[int, Decimal]]] = field(default_factory=dict)
    depth: dict[int, int] = field(default_factory=dict)


def subtree(conn: sa.Connection, built, root_id: int, max_goals: int = 1_000_000) -> Subtree:
    """Breadth first, one query per level (plus one for extra contribution links per level)."""
    t = built.table("goal")
    root = goal(conn, built, root_id)
    st = Subtree(root_id)
    if root is None:
        return st
    st.goals[root_id], st.depth[root_id] = root, 0
    frontier, level = [root_id], 0
    while frontier and len(st.goals) < max_goals:
        level += 1
        found: list[tuple[int, int, Decimal | None]] = []  # (parent, child, extra share or None)
        rows: list[dict[str, Any]] = []
        for part in _chunks(frontier):
            rows += goal_rows(conn, built, t.c.parent.in_(part))
        for r in rows:
            found.append((r["parent"], r["id"], None))
        links = contributions(conn, built, parents=frontier)
        extra_ids = [c["goal"] for c in links if c["goal"] not in st.goals]
        if extra_ids:
            for part in _chunks(extra_ids):
                rows += goal_rows(conn, built, t.c.id.in_(part))
        found += [(c["parent"], c["goal"], c["share"]) for c in links]
        by_id = {r["id"]: r for r in rows}
        # A child's main parent gets what its extra links leave over.
        extra_of = _extra_shares(conn, built, list(by_id))
        nxt = []
        for parent, child, share in found:
            if child not in by_id:
                continue
            weight = Decimal(share) if share is not None else max(Decimal(0), Decimal(1) - extra_of.get(child, 0))
            st.children.setdefault(parent, []).append((child, weight))
            if child not in st.goals:  # a cycle or a diamond: each goal once
                st.goals[child], st.depth[child] = by_id[child], level
                nxt.append(child)
        frontier = nxt
    return st


def _extra_shares(conn: sa.Connection, built, ids: list[int]) -> dict[int, Decimal]:
    out: dict[int, Decimal] = {}
    for c in contributions(conn, built, goals=ids):
        out[c["goal"]] = out.get(c["goal"], Decimal(0)) + Decimal(c["share"] or 0)
    return out


def ancestors(conn: sa.Connection, built, goal_id: int, limit: int = 100) -> tuple[list[dict], list[tuple[int, int]]]:
    """Every goal above (main parents and contribution parents), nearest first, and the (child, parent) links."""
    t = built.table("goal")
    seen: dict[int, dict] = {}
    links: list[tuple[int, int]] = []
    frontier = [goal_id]
    start = goal(conn, built, goal_id)
    known = {goal_id: start} if start else {}
    while frontier and len(seen) < limit:
        parents: list[tuple[int, int]] = []
        for gid in frontier:
            row = known.get(gid)
            if row and row.get("parent"):
                parents.append((gid, row["parent"]))
        parents += [(c["goal"], c["parent"]) for c in contributions(conn, built, goals=frontier)]
        want = [p for _, p in parents if p not in seen and p not in known]
        for part in _chunks(want):
            for r in goal_rows(conn, built, t.c.id.in_(part)):
                known[r["id"]] = r
        nxt = []
        for child, parent in parents:
            if parent not in known:
                continue
            links.append((child, parent))
            if parent not in seen and parent != goal_id:
                seen[parent] = known[parent]
                nxt.append(parent)
        frontier = nxt
    return list(seen.values()), links


def would_cycle(conn: sa.Connection, built, goal_id: int, new_parent: int) -> bool:
    """Would making `new_parent` a parent of `goal_id` close a loop (the parent is the goal or under it)?"""
    if new_parent == goal_id:
        return True
    above, _ = ancestors(conn, built, new_parent, limit=100_000)
    return any(g["id"] == goal_id for g in above)


def tasks_of(conn: sa.Connection, built, goal_ids: list[int]) -> list[dict[str, Any]]:
    if not _has(built, "task"):
        return []
    t = built.table("task")
    out: list[dict[str, Any]] = []
    for part in _chunks(goal_ids):
        out += [dict(r._mapping) for r in conn.execute(
            sa.select(t.c.id, t.c.title, t.c.owner, t.c.goal, t.c.status).where(
                t.c.goal.in_(part), t.c.deleted_at.is_(None)))]
    return out


def cards_of(conn: sa.Connection, built, card_ids: Iterable[int]) -> list[dict[str, Any]]:
    ids = sorted({c for c in card_ids if c})
    if not ids or not _has(built, "strategy_card"):
        return []
    t = built.table("strategy_card")
    return [dict(r._mapping) for r in conn.execute(
        sa.select(t.c.id, t.c.title, t.c.owner, t.c.period).where(t.c.id.in_(ids), t.c.deleted_at.is_(None)))]


# ---- roll-up ------------------------------------------------------------------------------------------------

def rollup_mode(g: dict[str, Any]) -> str:
    mode = g.get("rollup") or "auto"
    if mode == "auto":
        return "sum" if g.get("unit") in ADDITIVE_UNITS else "weighted_average"
    return mode


def rolled_up(st: Subtree) -> dict[int, Decimal | None]:
    """Each goal's progress as its metric demands (see the module doc); None = no data."""
    out: dict[int, Decimal | None] = {}
    order = sorted(st.goals, key=lambda g: st.depth[g], reverse=True)  # leaves first
    for gid in order:
        g = st.goals[gid]
        own = g.get("actual")
        mode = rollup_mode(g)
        kids = [(c, w) for c, w in st.children.get(gid, []) if st.goals.get(c, {}).get("unit") == g.get("unit")
                and st.depth.get(c, 0) > st.depth[gid]]
        values = [(out.get(c), w) for c, w in kids if out.get(c) is not None]
        if mode == "none" or not kids or not values:
            out[gid] = Decimal(own) if own is not None else None
        elif mode == "sum":
            out[gid] = sum((Decimal(v) * w for v, w in values), Decimal(0))
        else:
            total = sum((w for _, w in values), Decimal(0))
            out[gid] = (sum((Decimal(v) * w for v, w in values), Decimal(0)) / total) if total else None
    return out
