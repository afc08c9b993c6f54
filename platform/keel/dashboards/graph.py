"""The relation graph: from one record, follow the link fields a graph definition names, up and down, to a
depth, and answer cytoscape.js elements. The API (`GET /api/v1/apps/{app}/graph/{entity}/{id}`) and the Dash
`graph` widget both call `graph_elements`, so they show the same thing.

Up and down: a link `{"entity": E, "field": F}` joins a record of E (below) to the record F points at (above);
`"reverse": true` swaps them. Records the viewer may not read are left out, and the walk does not pass
through them. Levels deeper than `expand_levels` (or past the `max_nodes` budget, or wider than `max_width`
records side by side) are collapsed into one
"+N" node per parent, which a click (or `expand=`) opens: 5,000 records stay a graph one can read.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.dashboards import rules as R
from keel.dashboards.context import WidgetContext
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.storage.query import read_condition

MAX_DEPTH = 10
MAX_NODES = 5000
DEFAULT_MAX_NODES = 300
DEFAULT_MAX_WIDTH = 12   # records drawn side by side on one level; more are collapsed per parent
BATCH = 500


@dataclass(frozen=True)
class Link:
    entity: str        # the entity holding the link field
    field: str
    target: str        # the entity it points at
    reverse: bool = False


@dataclass(frozen=True)
class NodeStyle:
    label_field: str | None = None
    status_field: str | None = None
    colors: Mapping[str, str] | None = None
    rules: Any = None


@dataclass(frozen=True)
class GraphSpec:
    name: str
    links: tuple[Link, ...]
    depth: int = 2
    expand_levels: int = 2
    max_nodes: int = DEFAULT_MAX_NODES
    max_width: int = DEFAULT_MAX_WIDTH
    nodes: Mapping[str, NodeStyle] | None = None
    marks: bool = True

    def touches(self, entity: str) -> bool:
        return any(entity in (lk.entity, lk.target) for lk in self.links)


def spec_from_widget(name: str, widget: Mapping[str, Any], entities: Mapping[str, Any]) -> GraphSpec:
    links = []
    for raw in widget.get("links", ()):
        f = entities[raw["entity"]].field(raw["field"])
        links.append(Link(raw["entity"], raw["field"], f.entity, bool(raw.get("reverse", False))))
    nodes = {}
    for ent, raw in (widget.get("nodes") or {}).items():
        status = raw.get("status") or {}
        nodes[ent] = NodeStyle(raw.get("label_field"), status.get("field"), status.get("colors"), raw.get("rules"))
    return GraphSpec(name, tuple(links), int(widget.get("depth", 2)), int(widget.get("expand_levels", 2)),
                     int(widget.get("max_nodes", DEFAULT_MAX_NODES)), int(widget.get("max_width", DEFAULT_MAX_WIDTH)),
                     nodes, bool(widget.get("marks", True)))


def graph_widgets(definition) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """("dashboard/widget", widget) for every graph widget of an app, dashboards in id order."""
    for did, d in sorted(definition.definitions_of("dashboard").items()):
        for w in d.data.get("widgets") or ():
            if w.get("type") == "graph":
                yield f"{did}/{w.get('id')}", w


def default_spec(definition, entity: str) -> GraphSpec:
    """The first graph widget whose links touch `entity`; else every link field of the app."""
    for name, w in graph_widgets(definition):
        spec = spec_from_widget(name, w, definition.entities)
        if spec.touches(entity):
            return spec
    links = tuple(Link(e.id, f.id, f.entity) for e in definition.entities.values() for f in e.fields
                  if f.type == "link" and f.entity)
    return GraphSpec("links", links)


def find_spec(definition, entity: str, dashboard: str | None, widget: str | None) -> GraphSpec:
    """The graph definition a request names (callers check the viewer may open that dashboard and widget:
    `keel.dashboards.access.widget`), or the default for the entity."""
    if not dashboard and not widget:
        return default_spec(definition, entity)
    for name, w in graph_widgets(definition):
        if name == f"{dashboard}/{widget}":
            return spec_from_widget(name, w, definition.entities)
    raise NotFound(f"no graph widget '{widget}' in dashboard '{dashboard}'")


# ------------------------------------------------------------------------------------------------ walk

def node_id(entity: str, rid: Any) -> str:
    return f"{entity}:{rid}"


class _Walk:
    def __init__(self, ctx: WidgetContext, spec: GraphSpec):
        self.ctx, self.spec = ctx, spec
        self.rows: dict[str, Mapping[str, Any]] = {}     # node id -> the row (readable columns)
        self.levels: dict[str, int] = {}
        self.edges: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, Any] = {}
        self._readable = {e: ctx.readable(e) for e in {lk.entity for lk in spec.links} | {lk.target for lk in spec.links}
                          if e in ctx.built.definition.entities}
        self._links = [lk for lk in spec.links if lk.entity in self._readable and lk.target in self._readable
                       and lk.field in self._readable[lk.entity]]

    def columns(self, entity: str) -> list[str]:
        """The columns a node needs: its label, status, rule fields and link fields; readable ones only."""
        readable = self._readable.get(entity) or self.ctx.readable(entity)
        style = (self.spec.nodes or {}).get(entity) or NodeStyle()
        want = {lk.field for lk in self._links if lk.entity == entity}
        title = style.label_field or self.ctx.entity(entity).title_field
        want |= {title, style.status_field} | {r.get("field") for r in (style.rules or ()) if isinstance(r, Mapping)}
        return sorted(c for c in want if c in readable)

    def condition(self, entity: str):
        """The viewer's read condition on an entity's table, built once per walk."""
        if entity not in self._conditions:
            self._conditions[entity] = read_condition(self.ctx.built.table(entity), self.ctx.entity(entity),
                                                      self.ctx.actor)
        return self._conditions[entity]

    def fetch(self, entity: str, column: str, values: Sequence[Any]) -> list[Mapping[str, Any]]:
        """The readable rows of `entity` whose `column` is one of `values` (batched)."""
        if not values:
            return []
        table = self.ctx.built.table(entity)
        cols = [table.c.id, *(table.c[c] for c in self.columns(entity) if c != "id")]
        cond = self.condition(entity)
        out = []
        vals = sorted(set(values))
        for i in range(0, len(vals), BATCH):
            stmt = sa.select(*cols).where(table.c[column].in_(vals[i:i + BATCH]), cond).order_by(table.c.id)
            out.extend(self.ctx.conn.execute(stmt).mappings())
        return out

    def neighbours(self, frontier: list[str], up: bool, only_reverse: bool = False
                   ) -> dict[str, list[tuple[str, Mapping, Link]]]:
        """For each frontier node, its readable neighbours one step up (or down): [(node id, row, link)]."""
        out: dict[str, list] = {n: [] for n in frontier}
        by_entity: dict[str, list[str]] = {}
        for n in frontier:
            by_entity.setdefault(n.split(":", 1)[0], []).append(n)
        for lk in self._links:
            if only_reverse and not lk.reverse:
                continue
            # along the link (holder -> target) is up unless the link is reversed
            along = up != lk.reverse
            if along:
                holders = by_entity.get(lk.entity, [])
                want = {self.rows[n].get(lk.field): n for n in holders if self.rows[n].get(lk.field) is not None}
                targets: dict[Any, list[str]] = {}
                for n in holders:
                    t = self.rows[n].get(lk.field)
                    if t is not None:
                        targets.setdefault(t, []).append(n)
                for row in self.fetch(lk.target, "id", list(want)):
                    for n in targets.get(row["id"], ()):
                        out[n].append((node_id(lk.target, row["id"]), row, lk))
            else:
                nodes = by_entity.get(lk.target, [])
                ids = {int(n.split(":", 1)[1]): n for n in nodes}
                for row in self.fetch(lk.entity, lk.field, list(ids)):
                    n = ids[row[lk.field]]
                    out[n].append((node_id(lk.entity, row["id"]), row, lk))
        return out

    def count_below(self, frontier: list[str]) -> dict[str, int]:
        """How many readable records lie one step down from each node (a grouped count, no rows read): what a
        collapsed "+N" node needs. Reversed links (rare) are counted by reading their neighbours."""
        out = dict.fromkeys(frontier, 0)
        by_entity: dict[str, list[str]] = {}
        for n in frontier:
            by_entity.setdefault(n.split(":", 1)[0], []).append(n)
        for lk in self._links:
            if lk.reverse:
                continue
            ids = {int(n.split(":", 1)[1]): n for n in by_entity.get(lk.target, [])}
            if not ids:
                continue
            table = self.ctx.built.table(lk.entity)
            col = table.c[lk.field]
            vals = sorted(ids)
            for i in range(0, len(vals), BATCH):
                stmt = sa.select(col, sa.func.count()).where(col.in_(vals[i:i + BATCH]),
                                                             self.condition(lk.entity)).group_by(col)
                for value, count in self.ctx.conn.execute(stmt):
                    out[ids[value]] += count
        if any(lk.reverse for lk in self._links):
            for n, found in self.neighbours(frontier, False, only_reverse=True).items():
                out[n] += len(found)
        return out

    def add_edge(self, upper: str, lower: str, lk: Link) -> None:
        eid = f"{upper}>{lower}:{lk.field}"
        self.edges[eid] = {"data": {"id": eid, "source": upper, "target": lower, "field": lk.field}}


def graph_elements(ctx: WidgetContext, spec: GraphSpec, entity: str, record_id: Any, *, depth: int | None = None,
                   expand: Iterable[str] = (), max_nodes: int | None = None, everything: bool = False) -> dict:
    """{"root", "graph", "depth", "truncated", "elements": {"nodes", "edges"}}. NotFound for a missing root,
    PermissionDenied when the viewer may not read it."""
    built = ctx.built
    table = built.table(entity)
    try:
        rid = int(record_id)
    except (TypeError, ValueError):
        raise NotFound(f"no {entity} record {record_id}") from None
    exists = ctx.conn.execute(sa.select(table.c.id).where(table.c.id == rid, table.c.deleted_at.is_(None))).first()
    if exists is None:
        raise NotFound(f"no {entity} record {rid}")
    depth = spec.depth if depth is None else depth
    max_nodes = spec.max_nodes if max_nodes is None else max_nodes
    errors = FieldErrors()
    if not 1 <= depth <= MAX_DEPTH:
        errors.add("depth", "Give a whole number from %(low)s to %(high)s.", low=1, high=MAX_DEPTH)
    if not 1 <= max_nodes <= MAX_NODES:
        errors.add("max_nodes", "Give a whole number from %(low)s to %(high)s.", low=1, high=MAX_NODES)
    if errors:
        raise errors
    if everything:
        max_nodes = MAX_NODES
    walk = _Walk(ctx, spec)
    root_rows = walk.fetch(entity, "id", [rid])
    if not root_rows:
        raise PermissionDenied(f"you may not read {entity} record {rid}")
    root = node_id(entity, rid)
    walk.rows[root], walk.levels[root] = root_rows[0], 0
    expand = set(expand)
    collapsed: dict[str, tuple[int, int]] = {}   # parent node -> (count of hidden neighbours, their level)
    truncated = False
    for up in (True, False):
        frontier = [root]
        for step in range(1, depth + 1):
            if not frontier:
                break
            # nodes whose next level is closed (past expand_levels, not asked to open): only counted
            closed = [] if everything or step <= spec.expand_levels or up else [n for n in frontier if n not in expand]
            if closed:
                for n, count in walk.count_below(closed).items():
                    if count:
                        collapsed[n], truncated = (count, step), True
            closed_set = set(closed)
            opened = [n for n in frontier if n not in closed_set]
            found = walk.neighbours(opened, up) if opened else {}
            nxt: list[str] = []
            more = 0  # "+N" nodes on the next level: they take width too
            for n in opened:
                fresh = found[n]
                new = [m for m, _, _ in fresh if m not in walk.rows]
                too_many = len(walk.rows) + len(new) > max_nodes
                too_wide = not everything and len(nxt) + more + len(new) > spec.max_width
                if (too_many or too_wide) and n not in expand:
                    if new:
                        collapsed[n] = (len(new), step if not up else -step)
                        truncated = True
                        more += 1
                    for m, _, lk in fresh:  # edges to nodes already drawn still show
                        if m in walk.rows:
                            walk.add_edge(*((m, n) if up else (n, m)), lk)
                    continue
                for m, row, lk in fresh:
                    if m not in walk.rows:
                        walk.rows[m], walk.levels[m] = row, (-step if up else step)
                        nxt.append(m)
                    walk.add_edge(*((m, n) if up else (n, m)), lk)
            frontier = nxt
    return {"app": built.id, "root": root, "graph": spec.name, "depth": depth, "truncated": truncated,
            "elements": {"nodes": _nodes(ctx, spec, walk, root) + _more_nodes(collapsed),
                         "edges": list(walk.edges.values()) + _more_edges(collapsed)}}


def _nodes(ctx: WidgetContext, spec: GraphSpec, walk: _Walk, root: str) -> list[dict]:
    by_entity: dict[str, list[str]] = {}
    for n in walk.rows:
        by_entity.setdefault(n.split(":", 1)[0], []).append(n)
    out = []
    for entity, nodes in by_entity.items():
        ent = ctx.entity(entity)
        style = (spec.nodes or {}).get(entity) or NodeStyle()
        readable = walk._readable.get(entity) or ctx.readable(entity)
        title_id = style.label_field or ent.title_field
        title = readable.get(title_id) if title_id else None
        rules = ctx.rules(style.rules, entity) if style.rules else ()
        marks = ctx.marked(entity, [int(n.split(":", 1)[1]) for n in nodes]) if spec.marks else {}
        if title is not None and title.type == "user":
            ctx.user_names(walk.rows[n].get(title.id) for n in nodes)
        status_f = readable.get(style.status_field) if style.status_field else None
        for n in nodes:
            row = walk.rows[n]
            rid = row["id"]
            label = ctx.display(title, row.get(title.id)) if title is not None else ""
            status = row.get(status_f.id) if status_f is not None else None
            st = R.style_of(rules, row) or ((style.colors or {}).get(status) if status is not None else None)
            mark = marks.get(rid)
            classes = [entity, st or "plain"] + (["marked"] if mark else []) + (["root"] if n == root else [])
            out.append({"data": {"id": n, "entity": entity, "record_id": rid,
                                 "label": label or f"{ent.label.get(ctx.lang)} #{rid}",
                                 "level": walk.levels[n], "status": status, "style": st, "color": R.COLORS[st],
                                 "marked": bool(mark), "mark_reason": mark["reason"] if mark else None,
                                 "url": ctx.record_url(entity, rid), "collapsed": 0},
                        "classes": " ".join(classes)})
    return out


def _more_nodes(collapsed: Mapping[str, tuple[int, int]]) -> list[dict]:
    return [{"data": {"id": f"more:{n}", "label": f"+{count}", "level": level, "collapsed": count,
                      "parent_node": n, "color": R.COLORS[None]}, "classes": "more"}
            for n, (count, level) in collapsed.items()]


def _more_edges(collapsed: Mapping[str, tuple[int, int]]) -> list[dict]:
    out = []
    for n, (_count, level) in collapsed.items():
        upper, lower = (f"more:{n}", n) if level < 0 else (n, f"more:{n}")
        out.append({"data": {"id": f"{upper}>{lower}:more", "source": upper, "target": lower, "field": None}})
    return out
