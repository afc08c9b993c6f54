"""Dashboard widget types of the measures, for the board (registered through `keel_dashboard_widgets`, the
dashboards' widget hook; the board definition places them like any widget):

    {"id": "alignment", "type": "goal_alignment", "months": 6, "department": "company", "width": 6}
    {"id": "effect", "type": "goal_effect", "change_date": "2025-10-18", "window_days": 60, "width": 6}

`data(ctx, widget)` returns `{"columns", "rows"}` (so the dashboards offer the xlsx/CSV export) plus the raw
series; `layout(ctx, widget)` draws a table (and the index as a line). Like the REST routes they are
aggregates over the whole company: managers, the strategy department, executives and admins see them, others
get an empty widget saying so."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from keel_goal_agility.measure import alignment, effect
from keel_goal_agility.measure.pages import percent

AGGREGATE_ROLES = frozenset({"manager", "strategy", "executive"})
_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _allowed(ctx) -> bool:
    return ctx.actor.is_admin or bool(AGGREGATE_ROLES & set(ctx.actor.roles))


def _words(ctx, zh: str, en: str) -> str:
    return zh if getattr(ctx, "lang", "zh") == "zh" else en


class AlignmentWidget:
    name = "goal_alignment"
    label = "Goal alignment index: monthly trend with its components"
    params_schema: Mapping[str, Any] = {
        "type": "object", "additionalProperties": False,
        "properties": {"department": {"type": "string", "minLength": 1, "maxLength": 64},
                       "months": {"type": "integer", "minimum": 1, "maximum": 36}}}

    def check(self, widget, ctx) -> Iterator[tuple[str, str]]:
        return iter(())

    def data(self, ctx, widget) -> dict[str, Any]:
        if not _allowed(ctx):
            return {"columns": [], "rows": [], "series": [], "denied": True}
        built, conn = ctx.built, ctx.conn
        span = alignment.latest_months(conn, built, int(widget.get("months") or 6))
        series = alignment.monthly(conn, built, widget.get("department") or alignment.COMPANY, *span)["series"] \
            if span else []
        columns = [{"id": "period", "label": _words(ctx, "月份", "Month")},
                   {"id": "index", "label": _words(ctx, "对齐度指数", "Index")},
                   {"id": "keywords", "label": _words(ctx, "战略关键词匹配度", "Strategy keywords")},
                   {"id": "task_links", "label": _words(ctx, "个人任务关联率", "Tasks linked to a goal")},
                   {"id": "collaboration", "label": _words(ctx, "跨部门协作", "Collaboration")}]
        rows = [[s["period"], s["index"], *(percent(s["components"][k]["score"])
                                           for k in ("keywords", "task_links", "collaboration"))] for s in series]
        return {"columns": columns, "rows": rows, "series": series}

    def layout(self, ctx, widget):
        from dash import dcc, html

        d = self.data(ctx, widget)
        if d.get("denied"):
            return html.P(_words(ctx, "仅经理、战略部与高管可见。", "For managers, strategy and executives."),
                          className="muted")
        graph = dcc.Graph(figure={"data": [{"x": [r[0] for r in d["rows"]], "y": [r[1] for r in d["rows"]],
                                            "type": "scatter", "mode": "lines+markers"}],
                                  "layout": {"yaxis": {"range": [0, 100]}, "height": 220,
                                             "margin": {"l": 30, "r": 10, "t": 10, "b": 30}}},
                          config={"displayModeBar": False})
        return html.Div([graph, _table(d)])


class EffectWidget:
    name = "goal_effect"
    label = "Before/after panel of a change date (alignment, output per head, upsell share, pulse)"
    params_schema: Mapping[str, Any] = {
        "type": "object", "required": ["change_date"], "additionalProperties": False,
        "properties": {"change_date": {"type": "string", "pattern": _DATE},
                       "window_days": {"type": "integer", "minimum": 1, "maximum": 366}}}

    def check(self, widget, ctx) -> Iterator[tuple[str, str]]:
        try:
            dt.date.fromisoformat(str(widget.get("change_date")))
        except ValueError:
            yield "/change_date", f"not a date: {widget.get('change_date')!r} (YYYY-MM-DD)"

    def data(self, ctx, widget) -> dict[str, Any]:
        if not _allowed(ctx):
            return {"columns": [], "rows": [], "denied": True}
        panel = effect.panel(ctx.conn, ctx.built, dt.date.fromisoformat(widget["change_date"]),
                             widget.get("window_days"))
        from keel_goal_agility.measure.pages import _effect_value

        columns = [{"id": "measure", "label": _words(ctx, "指标", "Measure")},
                   {"id": "before", "label": _words(ctx, "调整前", "Before")},
                   {"id": "after", "label": _words(ctx, "调整后", "After")}]
        rows = [[m["label"]["zh" if getattr(ctx, "lang", "zh") == "zh" else "en"],
                 _effect_value(m["before"], m["unit"]), _effect_value(m["after"], m["unit"])]
                for m in panel["metrics"]]
        return {"columns": columns, "rows": rows, "panel": panel}

    def layout(self, ctx, widget):
        from dash import html

        d = self.data(ctx, widget)
        if d.get("denied"):
            return html.P(_words(ctx, "仅经理、战略部与高管可见。", "For managers, strategy and executives."),
                          className="muted")
        p = d["panel"]
        note = html.P(f"{p['before']['from']} – {p['before']['to']} | {p['after']['from']} – {p['after']['to']}",
                      className="muted small")
        return html.Div([note, _table(d)])


def _table(d: Mapping[str, Any]):
    from dash import html

    head = html.Thead(html.Tr([html.Th(c["label"]) for c in d["columns"]]))
    body = html.Tbody([html.Tr([html.Td("" if v is None else str(v)) for v in row]) for row in d["rows"]])
    return html.Table([head, body], className="records")
