"""The built-in widget types: their parameters (JSON Schema), the checks a schema cannot say (entity, fields,
rules), and the data each shows. They are registered through `keel_dashboard_widgets`, exactly as a plugin's
widget types are; their Dash layouts are in `layouts.py`.

`check(widget, ctx)` yields (JSON pointer inside the widget, message); `data(ctx, widget)` reads through the
WidgetContext (the viewer's permissions) and returns plain values.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from keel.dashboards import rules as R
from keel.dashboards.context import MAX_ROWS, WidgetContext, field_types, format_value
from keel.dashboards.graph import spec_from_widget
from keel.i18n import translate

COMMON_KEYS = ("id", "type", "title", "width", "roles")
METRICS = ("count", "sum", "avg", "min", "max")


def N_(msgid: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return msgid


METRIC_WORDS = {"count": N_("Count"), "sum": N_("Sum"), "avg": N_("Average"), "min": N_("Minimum"),
                "max": N_("Maximum")}
FORMATS = ("number", "money", "count", "percent")
FILTER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "contains", "in", "isnull")
MAX_TABLE_PAGE = 200

_ID = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
_FIELD_LIST = {"type": "array", "items": {"type": "string"}, "maxItems": 50}
_FILTERS = {"type": "array", "maxItems": 20, "items": {
    "type": "object", "required": ["field", "op"], "additionalProperties": False,
    "properties": {"field": {"type": "string"}, "op": {"enum": list(FILTER_OPS)}, "value": {}}}}
_SORT = {"type": "array", "maxItems": 5, "items": {"type": "string", "pattern": "^-?[a-z_][a-z0-9_]*$"}}
_LABEL = {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "object"}]}
_RULES = {"type": "array", "maxItems": 20, "items": {"type": "object"}}  # checked by rules.py, with places


def _schema(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False,
            "properties": {"entity": _ID, "filters": _FILTERS, **props}}


# ------------------------------------------------------------------------------------------- checks

def entity_of(widget: Mapping[str, Any], ctx) -> Any:
    return ctx.entities.get(widget.get("entity")) if isinstance(widget.get("entity"), str) else None


def _fields(entity) -> dict[str, Any]:
    return {f.id: f for f in entity.fields}


def _entity_known(ctx, eid: Any) -> bool:
    """An entity that exists, or whose file is broken (reported there already: not a second error here)."""
    known = getattr(ctx, "known", None)
    return isinstance(eid, str) and (eid in ctx.entities or (known is not None and known("entity", eid)))


def check_entity(widget, ctx) -> Iterator[tuple[str, str]]:
    if not _entity_known(ctx, widget.get("entity")):
        yield "/entity", f"unknown entity '{widget.get('entity')}' (entities: {', '.join(sorted(ctx.entities))})"


def check_field(entity, where: str, fid: Any, types: tuple[str, ...] | None = None) -> Iterator[tuple[str, str]]:
    f = _fields(entity).get(fid) if isinstance(fid, str) else None
    if f is None:
        yield where, f"unknown field '{fid}' of entity '{entity.id}'"
    elif types is not None and f.type not in types:
        yield where, f"field '{fid}' is a {f.type}; needs one of: {', '.join(types)}"


def check_common(widget, ctx, entity) -> Iterator[tuple[str, str]]:
    """Filters, sort and rules: every field known, every rule well formed."""
    for i, flt in enumerate(widget.get("filters") or ()):
        if flt.get("field") != "id":
            yield from check_field(entity, f"/filters/{i}/field", flt.get("field"))
    for i, key in enumerate(widget.get("sort") or ()):
        if key.lstrip("-") not in ("id", "created_at", "updated_at"):
            yield from check_field(entity, f"/sort/{i}", key.lstrip("-"))
    for where, msg in R.rule_problems(widget.get("rules"), field_types(entity), ctx.settings):
        yield "/rules" + where, msg


def check_metric(entity, widget, where: str = "") -> Iterator[tuple[str, str]]:
    metric, fid = widget.get("metric"), widget.get("field")
    if metric != "count" and fid is None:
        yield where + "/field", f"metric '{metric}' needs a field"
    elif fid is not None:
        types = R.NUMERIC if metric in ("sum", "avg") else (*R.NUMERIC, "date", "datetime") \
            if metric in ("min", "max") else None
        yield from check_field(entity, where + "/field", fid, types)


# ------------------------------------------------------------------------------------------- helpers

def _metric(rows: list[Mapping[str, Any]], metric: str, fid: str | None) -> Any:
    if metric == "count":
        return len(rows) if fid is None else sum(1 for r in rows if r.get(fid) is not None)
    vals = [r.get(fid) for r in rows if r.get(fid) is not None]
    if not vals:
        return None
    if metric == "sum":
        return sum((Decimal(str(v)) for v in vals), Decimal(0))
    if metric == "avg":
        return sum((Decimal(str(v)) for v in vals), Decimal(0)) / len(vals)
    return min(vals) if metric == "min" else max(vals)


def _readable_or_none(ctx: WidgetContext, entity: str, fid: str | None) -> bool:
    return fid is None or fid in ctx.readable(entity)


def _bucket(value: Any, bucket: str | None) -> Any:
    if not isinstance(value, (dt.date, dt.datetime)) or bucket is None:
        return value
    d = value.date() if isinstance(value, dt.datetime) else value
    if bucket == "day":
        return d.isoformat()
    if bucket == "month":
        return f"{d.year}-{d.month:02d}"
    if bucket == "quarter":
        return f"{d.year}-Q{(d.month - 1) // 3 + 1}"
    return str(d.year)


def _group_label(ctx: WidgetContext, f, value: Any) -> str:
    if value is None:
        return "—"
    if f is not None and f.type in ("select", "user", "boolean", "link"):
        return ctx.display(f, value, titles=ctx.titles(f.entity, [value]) if f.type == "link" else None)
    return str(value)


# ------------------------------------------------------------------------------------------- widget types

class Kpi:
    name = "kpi"
    params_schema = _schema(["entity", "metric"], {
        "metric": {"enum": list(METRICS)}, "field": {"type": "string"},
        "target": {"anyOf": [{"type": "number"}, {"type": "object"}]},
        "format": {"enum": list(FORMATS)}, "rules": _RULES})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        yield from check_metric(entity, widget)
        target = widget.get("target")
        if isinstance(target, Mapping) and "metric" in target:
            extra = set(target) - {"metric", "field", "filters"}
            if extra or target["metric"] not in METRICS:
                yield "/target", "a target is a number, {\"setting\": ...} or {\"metric\", \"field\", \"filters\"}"
            else:
                yield from check_metric(entity, target, "/target")
        elif target is not None:
            try:
                if R._number(R.resolve_value(target, ctx.settings, "/target")) is None:
                    yield "/target", "the target is not a number"
            except R.RuleProblem as p:
                yield p.where, p.message
        types = {"value": "decimal"}
        for where, msg in R.rule_problems(widget.get("rules"), types, ctx.settings, default_field="value"):
            yield "/rules" + where, msg
        for i, flt in enumerate(widget.get("filters") or ()):
            yield from check_field(entity, f"/filters/{i}/field", flt.get("field"))

    def data(self, ctx: WidgetContext, widget) -> dict:
        entity, fid, metric = widget["entity"], widget.get("field"), widget["metric"]
        fmt = widget.get("format") or ("count" if metric == "count" else "number")
        if not _readable_or_none(ctx, entity, fid):
            return {"value": None, "target": None, "delta": None, "ratio": None, "style": None, "format": fmt,
                    "text": "—", "target_text": None, "delta_text": None}
        target = widget.get("target")
        tfield = target.get("field") if isinstance(target, Mapping) else None
        rows = ctx.rows(entity, widget.get("filters") or (), columns={c for c in (fid, tfield) if c})
        value = _metric(rows, metric, fid)
        if isinstance(target, Mapping) and "metric" in target:
            if _readable_or_none(ctx, entity, target.get("field")):
                trows = ctx.rows(entity, target["filters"], columns={c for c in (tfield,) if c}) \
                    if target.get("filters") else rows
                target = _metric(trows, target["metric"], target.get("field"))
            else:
                target = None
        elif target is not None:
            target = R._number(R.resolve_value(target, ctx.settings))
        delta = ratio = None
        if value is not None and target is not None:
            delta = Decimal(str(value)) - Decimal(str(target))
            ratio = (Decimal(str(value)) / Decimal(str(target))) if target else None
        rules = R.compile_rules(widget.get("rules"), {"value": "decimal"}, ctx.settings, "value")
        style = R.style_of(rules, {"value": None if value is None else Decimal(str(value))})
        sign = "+" if delta is not None and delta > 0 else ""
        return {"value": value, "target": target, "delta": delta, "ratio": ratio, "style": style, "format": fmt,
                "text": format_value(value, fmt),
                "target_text": None if target is None else format_value(target, fmt),
                "delta_text": None if delta is None else sign + format_value(delta, fmt),
                "ratio_text": None if ratio is None else format_value(ratio, "percent")}


class Table:
    name = "table"
    params_schema = _schema(["entity", "columns"], {
        "columns": {**_FIELD_LIST, "minItems": 1}, "sort": _SORT,
        "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_TABLE_PAGE},
        "rules": _RULES, "marks": {"type": "boolean"}, "export": {"type": "boolean"}, "link": {"type": "boolean"}})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        for i, c in enumerate(widget.get("columns") or ()):
            yield from check_field(entity, f"/columns/{i}", c)
        yield from check_common(widget, ctx, entity)

    def columns(self, ctx: WidgetContext, widget) -> list:
        readable = ctx.readable(widget["entity"])
        return [readable[c] for c in widget["columns"] if c in readable]

    def data(self, ctx: WidgetContext, widget, page: int = 1, only: str | None = None,
             everything: bool = False) -> dict:
        """The page of rows shown (or every row, for an export), each with its style and mark; the count
        of rows per style over all matching rows."""
        entity = widget["entity"]
        cols = self.columns(ctx, widget)
        rules = ctx.rules(widget.get("rules"), entity)
        rows = ctx.rows(entity, widget.get("filters") or (), widget.get("sort") or (),
                        columns={*(f.id for f in cols), *(r.field for r in rules)})
        styles = [R.style_of(rules, r) for r in rows] if rules else [None] * len(rows)
        counts: dict[str, int] = {}
        for s in styles:
            if s:
                counts[s] = counts.get(s, 0) + 1
        pairs = list(zip(rows, styles, strict=True))
        if only:
            pairs = [p for p in pairs if p[1] == only]
        size = int(widget.get("page_size", 20))
        total = len(pairs)
        pages = max(1, -(-total // size))
        page = min(max(1, int(page)), pages)
        shown = pairs if everything else pairs[(page - 1) * size: page * size]
        marks = ctx.marked(entity, [r["id"] for r, _ in shown]) if widget.get("marks", True) else {}
        ctx.user_names(r.get(f.id) for r, _ in shown for f in cols if f.type == "user")
        titles = {f.id: ctx.titles(f.entity, [r.get(f.id) for r, _ in shown]) for f in cols if f.type == "link"}
        out = []
        for r, st in shown:
            mark = marks.get(r["id"])
            out.append({"id": r["id"], "url": ctx.record_url(entity, r["id"]), "style": st,
                        "marked": bool(mark), "mark_reason": mark["reason"] if mark else None,
                        "cells": [ctx.display(f, r.get(f.id), titles=titles.get(f.id)) for f in cols],
                        "values": [r.get(f.id) for f in cols]})
        return {"columns": [{"id": f.id, "label": f.label.get(ctx.lang), "type": f.type} for f in cols],
                "rows": out, "total": total, "page": page, "pages": pages, "page_size": size, "styles": counts,
                "capped": len(rows) >= MAX_ROWS}


class Chart:
    name = "chart"
    params_schema = _schema(["entity", "chart", "x", "y"], {
        "chart": {"enum": ["line", "bar"]}, "x": {"type": "string"}, "series": {"type": "string"},
        "bucket": {"enum": ["day", "month", "quarter", "year"]},
        "y": {"type": "array", "minItems": 1, "maxItems": 6, "items": {
            "type": "object", "required": ["metric"], "additionalProperties": False,
            "properties": {"metric": {"enum": list(METRICS)}, "field": {"type": "string"},
                           "label": _LABEL}}}})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        yield from check_field(entity, "/x", widget.get("x"))
        if "series" in widget:
            yield from check_field(entity, "/series", widget.get("series"))
        for i, y in enumerate(widget.get("y") or ()):
            yield from check_metric(entity, y, f"/y/{i}")
        if widget.get("bucket") and not list(check_field(entity, "/x", widget.get("x"))):
            yield from check_field(entity, "/bucket", widget.get("x"), ("date", "datetime"))
        yield from check_common(widget, ctx, entity)

    def data(self, ctx: WidgetContext, widget) -> dict:
        entity = widget["entity"]
        readable = ctx.readable(entity)
        xf, sf = readable.get(widget["x"]), readable.get(widget.get("series") or "")
        if xf is None:
            return {"chart": widget["chart"], "x": [], "series": []}
        rows = ctx.rows(entity, widget.get("filters") or (),
                        columns={xf.id, *([sf.id] if sf else []), *(y["field"] for y in widget["y"] if y.get("field"))})
        groups: dict[Any, dict[Any, list]] = {}
        for r in rows:
            x = _bucket(r.get(xf.id), widget.get("bucket"))
            s = r.get(sf.id) if sf is not None else None
            groups.setdefault(x, {}).setdefault(s, []).append(r)
        xs = sorted(groups, key=lambda v: (v is None, str(v) if not isinstance(v, (int, Decimal)) else f"{v:020}"))
        series_keys = sorted({s for g in groups.values() for s in g}, key=lambda v: (v is None, str(v)))
        out = []
        for y in widget["y"]:
            if not _readable_or_none(ctx, entity, y.get("field")):
                continue
            name = ctx.label(y.get("label"), y.get("field") and readable[y["field"]].label.get(ctx.lang)
                             or translate(METRIC_WORDS[y["metric"]]))
            for s in series_keys:
                values = [_metric(groups[x].get(s, []), y["metric"], y.get("field")) for x in xs]
                label = name if sf is None else f"{name} · {_group_label(ctx, sf, s)}"
                out.append({"name": label, "values": [None if v is None else float(v) for v in values]})
        return {"chart": widget["chart"], "x": [_group_label(ctx, xf if not widget.get("bucket") else None, x)
                                                for x in xs], "series": out}


class Tree:
    name = "tree"
    params_schema = _schema(["entity", "parent_field"], {
        "parent_field": {"type": "string"}, "label_field": {"type": "string"}, "columns": _FIELD_LIST,
        "sort": _SORT, "rules": _RULES, "marks": {"type": "boolean"}, "export": {"type": "boolean"},
        "expand_levels": {"type": "integer", "minimum": 0, "maximum": 10}})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        problems = list(check_field(entity, "/parent_field", widget.get("parent_field"), ("link",)))
        yield from problems
        if not problems and _fields(entity)[widget["parent_field"]].entity != entity.id:
            yield "/parent_field", f"'{widget['parent_field']}' links to another entity; a tree needs a link to " \
                                   f"'{entity.id}' itself"
        if "label_field" in widget:
            yield from check_field(entity, "/label_field", widget["label_field"])
        for i, c in enumerate(widget.get("columns") or ()):
            yield from check_field(entity, f"/columns/{i}", c)
        yield from check_common(widget, ctx, entity)

    def data(self, ctx: WidgetContext, widget) -> dict:
        entity = widget["entity"]
        ent = ctx.entity(entity)
        readable = ctx.readable(entity)
        pf = widget["parent_field"]
        label_f = readable.get(widget.get("label_field") or ent.title_field or "")
        cols = [readable[c] for c in widget.get("columns") or () if c in readable]
        rules = ctx.rules(widget.get("rules"), entity)
        rows = ctx.rows(entity, widget.get("filters") or (), widget.get("sort") or (),
                        columns={pf, *(f.id for f in cols), *([label_f.id] if label_f else []),
                                 *(r.field for r in rules)})
        marks = ctx.marked(entity) if widget.get("marks", True) else {}
        ctx.user_names(r.get(f.id) for r in rows for f in [*cols, *( [label_f] if label_f else [])]
                       if f.type == "user")
        ids = {r["id"] for r in rows}
        nodes = {}
        for r in rows:
            mark = marks.get(r["id"])
            nodes[r["id"]] = {"id": r["id"], "url": ctx.record_url(entity, r["id"]),
                              "label": ctx.display(label_f, r.get(label_f.id)) if label_f else f"#{r['id']}",
                              "cells": [ctx.display(f, r.get(f.id)) for f in cols],
                              "style": R.style_of(rules, r), "marked": bool(mark),
                              "mark_reason": mark["reason"] if mark else None, "children": []}
        roots = []
        parent_readable = pf in readable
        for r in rows:
            p = r.get(pf) if parent_readable else None
            # a record whose parent the viewer may not read (or that has none) starts a tree of its own
            (nodes[p]["children"] if p in ids and p != r["id"] else roots).append(nodes[r["id"]])
        return {"roots": roots, "count": len(rows), "expand_levels": int(widget.get("expand_levels", 2)),
                "columns": [f.label.get(ctx.lang) for f in cols]}

    def export_rows(self, ctx: WidgetContext, widget) -> tuple[list[str], list[list]]:
        """Every node, depth first, its level beside it (a tree read as an indented list)."""
        out: list[list] = []

        def walk(node, level):
            out.append([node["id"], level, node["label"], *node["cells"]])
            for child in node["children"]:
                walk(child, level + 1)
        data = self.data(ctx, widget)
        for root in data["roots"]:
            walk(root, 0)
        return ["ID", "level", ctx.label(widget.get("title"), widget["id"]), *data["columns"]], out


class Progress:
    name = "progress"
    params_schema = _schema(["entity", "value_field", "target_field"], {
        "value_field": {"type": "string"}, "target_field": {"type": "string"}, "label_field": {"type": "string"},
        "sort": _SORT, "limit": {"type": "integer", "minimum": 1, "maximum": 100}, "rules": _RULES,
        "marks": {"type": "boolean"}, "export": {"type": "boolean"}})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        yield from check_field(entity, "/value_field", widget.get("value_field"), R.NUMERIC)
        yield from check_field(entity, "/target_field", widget.get("target_field"), R.NUMERIC)
        if "label_field" in widget:
            yield from check_field(entity, "/label_field", widget["label_field"])
        yield from check_common(widget, ctx, entity)

    def data(self, ctx: WidgetContext, widget) -> dict:
        entity = widget["entity"]
        ent = ctx.entity(entity)
        readable = ctx.readable(entity)
        vf, tf = readable.get(widget["value_field"]), readable.get(widget["target_field"])
        label_f = readable.get(widget.get("label_field") or ent.title_field or "")
        if vf is None or tf is None:
            return {"items": []}
        rules = ctx.rules(widget.get("rules"), entity)
        rows = ctx.rows(entity, widget.get("filters") or (), widget.get("sort") or (), int(widget.get("limit", 10)),
                        columns={vf.id, tf.id, *([label_f.id] if label_f else []), *(r.field for r in rules)})
        marks = ctx.marked(entity, [r["id"] for r in rows]) if widget.get("marks", True) else {}
        if label_f is not None and label_f.type == "user":
            ctx.user_names(r.get(label_f.id) for r in rows)
        items = []
        for r in rows:
            v, t = r.get(vf.id), r.get(tf.id)
            ratio = float(Decimal(str(v)) / Decimal(str(t))) if v is not None and t else None
            mark = marks.get(r["id"])
            items.append({"id": r["id"], "url": ctx.record_url(entity, r["id"]),
                          "label": ctx.display(label_f, r.get(label_f.id)) if label_f else f"#{r['id']}",
                          "value": ctx.display(vf, v) or "—", "target": ctx.display(tf, t),
                          "ratio": ratio, "percent": None if ratio is None else round(ratio * 100),
                          "style": R.style_of(rules, r), "marked": bool(mark),
                          "mark_reason": mark["reason"] if mark else None})
        return {"items": items}

    def export_rows(self, ctx: WidgetContext, widget) -> tuple[list[str], list[list]]:
        readable = ctx.readable(widget["entity"])
        vf, tf = readable.get(widget["value_field"]), readable.get(widget["target_field"])
        heads = ["ID", ctx.label(widget.get("title"), widget["id"]),
                 vf.label.get(ctx.lang) if vf else "", tf.label.get(ctx.lang) if tf else "", "%"]
        return heads, [[it["id"], it["label"], it["value"], it["target"], it["percent"]]
                       for it in self.data(ctx, widget)["items"]]


class Graph:
    name = "graph"
    params_schema = _schema(["entity", "links"], {
        "links": {"type": "array", "minItems": 1, "maxItems": 20, "items": {
            "type": "object", "required": ["entity", "field"], "additionalProperties": False,
            "properties": {"entity": _ID, "field": {"type": "string"}, "reverse": {"type": "boolean"}}}},
        "depth": {"type": "integer", "minimum": 1, "maximum": 10},
        "expand_levels": {"type": "integer", "minimum": 1, "maximum": 10},
        "max_nodes": {"type": "integer", "minimum": 1, "maximum": 5000},
        "max_width": {"type": "integer", "minimum": 1, "maximum": 500},
        "root_filters": _FILTERS, "marks": {"type": "boolean"},
        "nodes": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "properties": {"label_field": {"type": "string"}, "rules": _RULES,
                           "status": {"type": "object", "required": ["field", "colors"], "additionalProperties": False,
                                      "properties": {"field": {"type": "string"},
                                                     "colors": {"type": "object",
                                                                "additionalProperties": {"enum": list(R.STYLES)}}}}}}}})

    def check(self, widget, ctx):
        entity = entity_of(widget, ctx)
        if entity is None:
            yield from check_entity(widget, ctx)
            return
        for i, lk in enumerate(widget.get("links") or ()):
            holder = ctx.entities.get(lk.get("entity"))
            if holder is None:
                if not _entity_known(ctx, lk.get("entity")):
                    yield f"/links/{i}/entity", f"unknown entity '{lk.get('entity')}'"
                continue
            yield from check_field(holder, f"/links/{i}/field", lk.get("field"), ("link",))
        for ent_id, node in (widget.get("nodes") or {}).items():
            ent = ctx.entities.get(ent_id)
            if ent is None:
                if not _entity_known(ctx, ent_id):
                    yield f"/nodes/{ent_id}", f"unknown entity '{ent_id}'"
                continue
            if "label_field" in node:
                yield from check_field(ent, f"/nodes/{ent_id}/label_field", node["label_field"])
            if "status" in node:
                yield from check_field(ent, f"/nodes/{ent_id}/status/field", node["status"].get("field"))
            for where, msg in R.rule_problems(node.get("rules"), field_types(ent), ctx.settings):
                yield f"/nodes/{ent_id}/rules{where}", msg
        for i, flt in enumerate(widget.get("root_filters") or ()):
            yield from check_field(entity, f"/root_filters/{i}/field", flt.get("field"))

    def spec(self, ctx: WidgetContext, widget, dashboard: str):
        return ctx.built.product(("dash-graph", dashboard, widget["id"]), lambda: spec_from_widget(
            f"{dashboard}/{widget['id']}", widget, ctx.built.definition.entities))

    def roots(self, ctx: WidgetContext, widget) -> list[tuple[int, str]]:
        """(id, label) of the records a viewer may start the graph from."""
        entity = widget["entity"]
        ent = ctx.entity(entity)
        title = ctx.readable(entity).get(ent.title_field or "")
        rows = ctx.rows(entity, widget.get("root_filters") or (), (), 200, columns={title.id} if title else set())
        if title is not None and title.type == "user":
            ctx.user_names(r.get(title.id) for r in rows)
        return [(r["id"], ctx.display(title, r.get(title.id)) if title else f"#{r['id']}") for r in rows]


BUILTIN = (Kpi(), Table(), Chart(), Tree(), Progress(), Graph())
