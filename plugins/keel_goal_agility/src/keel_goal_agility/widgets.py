"""The board's own widget types (the dashboards' `keel_dashboard_widgets` hook), beside the built-in tables and
the graph in dashboards/board.json:

- `goal_flagged`: goals flagged red by the snapshot, with their deviation, the month's signals and a 申请修订
  link for those who may request a revision;
- `goal_revision_pipeline`: open revision requests with their SLA status;
- `goal_lead_times`: request → decision → everyone notified, against the settings' targets and the case;

Each has `data(ctx, widget)` (JSON, also the export) and `layout(ctx, widget)` (Dash components, imported only
when a page is drawn). Rows come through the viewer's permissions (ctx.records); the figures only for managers,
the strategy department and executives."""
from __future__ import annotations

from typing import Any, ClassVar

from keel_goal_agility import leadtimes, requests
from keel_goal_agility.formats import metric_text

WORDS = {
    "goal": {"zh": "目标", "en": "Goal"}, "owner": {"zh": "责任人", "en": "Owner"},
    "metric": {"zh": "核心指标", "en": "Core metric"}, "deviation": {"zh": "偏离度", "en": "Deviation"},
    "signals": {"zh": "市场信号", "en": "Signals"}, "request": {"zh": "申请修订", "en": "Request revision"},
    "no_data": {"zh": "无数据", "en": "no data"}, "none": {"zh": "暂无", "en": "None"},
    "submitted": {"zh": "提交时间", "en": "Submitted"}, "due": {"zh": "办结期限", "en": "Due"},
    "sla": {"zh": "时限状态", "en": "SLA"}, "ok": {"zh": "正常", "en": "On time"},
    "due_soon": {"zh": "即将到期", "en": "Due soon"}, "overdue": {"zh": "已超时", "en": "Overdue"},
    "approval": {"zh": "平均审批用时", "en": "Average approval time"},
    "notify": {"zh": "审批后全员同步（最长）", "en": "Approval → everyone notified (longest)"},
    "end_to_end": {"zh": "发起到全员同步（平均）", "en": "Request → everyone notified (average)"},
    "target": {"zh": "目标", "en": "Target"}, "case": {"zh": "案例", "en": "Case"},
    "decided": {"zh": "已决申请", "en": "Decided requests"}, "index": {"zh": "对齐度指数", "en": "Alignment index"},
    "hours": {"zh": "小时", "en": "h"},
}
FIGURE_ROLES = {"manager", "strategy", "executive"}


def w(key: str, lang: str) -> str:
    return WORDS[key].get(lang, WORDS[key]["en"])


def _sees_figures(actor) -> bool:
    return actor.is_admin or bool(FIGURE_ROLES & set(actor.roles))


class _Widget:
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False,
                                               "properties": {"limit": {"type": "integer", "minimum": 1,
                                                                        "maximum": 200}}}

    def check(self, widget, ctx):
        return []


def _signals(ctx, period: str | None) -> list[str]:
    """The month's hot words, from the measures when they are installed."""
    if not period:
        return []
    try:
        import sqlalchemy as sa

        from keel_goal_agility.measure.tables import period_signals  # type: ignore[import-not-found]

        row = ctx.conn.execute(sa.select(period_signals.c.hot_words).where(period_signals.c.period == period)).first()
        return [str(pair[0]) for pair in (row.hot_words or [])[:5]] if row is not None else []
    except Exception:  # the measures are optional here: no signals rather than no board
        return []


class FlaggedGoals(_Widget):
    name = "goal_flagged"

    def data(self, ctx, widget):
        entity = ctx.built.entity("goal")
        if entity.field("flag") is None:
            return {"columns": [], "rows": [], "items": []}
        rows = ctx.rows("goal", filters=[{"field": "flag", "op": "eq", "value": "red"}],
                        limit=widget.get("limit", 50))
        items = []
        for g in rows:
            may = requests.may_request(ctx.conn, ctx.built, g, ctx.actor)
            deviation = g.get("deviation")
            items.append({"id": g["id"], "title": g.get("title"), "owner": g.get("owner"),
                          "metric": metric_text(g.get("metric"), g.get("target"), g.get("unit"), ctx.lang),
                          "deviation": None if deviation is None else float(deviation),
                          "period": g.get("last_snapshot"), "signals": _signals(ctx, g.get("last_snapshot")),
                          "url": f"/apps/{ctx.built.id}/goal/{g['id']}",
                          "request_url": f"/apps/{ctx.built.id}/forms/revision_request?goal={g['id']}" if may else None})
        return {"columns": [{"id": k, "label": w(k, ctx.lang)} for k in ("goal", "metric", "deviation", "signals")],
                "rows": [[i["title"], i["metric"], i["deviation"], "、".join(i["signals"])] for i in items],
                "items": items}

    def layout(self, ctx, widget):
        from dash import html

        items = self.data(ctx, widget)["items"]
        if not items:
            return html.Div(w("none", ctx.lang), className="empty")
        head = html.Tr([html.Th(w(k, ctx.lang)) for k in ("goal", "metric", "deviation", "signals", "request")])
        body = []
        for i in items:
            dev = w("no_data", ctx.lang) if i["deviation"] is None else f"{i['deviation'] * 100:+.1f}%"
            action = html.A(w("request", ctx.lang), href=i["request_url"], className="button") if i["request_url"] else ""
            body.append(html.Tr([html.Td(html.A(i["title"], href=i["url"])), html.Td(i["metric"]), html.Td(dev),
                                 html.Td("、".join(i["signals"]) or "—"), html.Td(action)],
                                className="style-red", id=f"flagged-{i['id']}"))
        return html.Table([html.Thead(head), html.Tbody(body)], className="dash-table goal-flagged")


class RevisionPipeline(_Widget):
    name = "goal_revision_pipeline"

    def data(self, ctx, widget):
        readable = {r["id"] for r in ctx.rows("revision_request")}
        items = [i for i in leadtimes.pipeline(ctx.conn, ctx.built) if i["id"] in readable]
        items = items[:widget.get("limit", 50)]
        return {"columns": [{"id": k, "label": w(k, ctx.lang)} for k in ("goal", "submitted", "due", "sla")],
                "rows": [[i["goal"]["title"], i["submitted_at"].isoformat() if i["submitted_at"] else None,
                          i["due"].isoformat() if i["due"] else None, i["sla"]] for i in items],
                "items": items}

    def layout(self, ctx, widget):
        from dash import html

        items = self.data(ctx, widget)["items"]
        if not items:
            return html.Div(w("none", ctx.lang), className="empty")
        style = {"ok": "green", "due_soon": "orange", "overdue": "red", "none": "grey"}
        head = html.Tr([html.Th(w(k, ctx.lang)) for k in ("goal", "submitted", "due", "sla")])
        body = [html.Tr([html.Td(html.A(i["title"] or i["goal"]["title"], href=f"/workflows/instances/{i['instance']}")),
                         html.Td(i["submitted_at"].strftime("%Y-%m-%d") if i["submitted_at"] else "—"),
                         html.Td(i["due"].strftime("%Y-%m-%d") if i["due"] else "—"),
                         html.Td(w(i["sla"], ctx.lang) if i["sla"] in WORDS else "—",
                                 className=f"style-{style.get(i['sla'], 'grey')}")], id=f"pipeline-{i['id']}")
                for i in items]
        return html.Table([html.Thead(head), html.Tbody(body)], className="dash-table goal-pipeline")


class LeadTimes(_Widget):
    name = "goal_lead_times"

    def data(self, ctx, widget):
        if not _sees_figures(ctx.actor):
            return {"columns": [], "rows": [], "figures": None}
        f = leadtimes.lead_times(ctx.conn, ctx.built)
        f.pop("items", None)
        return {"columns": [{"id": "what", "label": ""}, {"id": "value", "label": ""},
                            {"id": "target", "label": w("target", ctx.lang)}],
                "rows": [["approval_hours_avg", f["approval_hours_avg"], f["targets"]["approval_hours"]],
                         ["notify_hours_max", f["notify_hours_max"], f["targets"]["notify_hours"]],
                         ["end_to_end_hours_avg", f["end_to_end_hours_avg"], None]],
                "figures": f}

    def layout(self, ctx, widget):
        from dash import html

        f = self.data(ctx, widget)["figures"]
        if f is None:
            return html.Div("—", className="empty")
        hours = w("hours", ctx.lang)

        def cell(value, target, meets):
            text = "—" if value is None else f"{value:.1f} {hours}"
            style = "plain" if meets is None else ("green" if meets else "red")
            return html.Div([html.Div(text, className=f"kpi-value style-{style}"),
                             html.Div(f"{w('target', ctx.lang)} ≤ {target:.0f} {hours}" if target else "",
                                      className="kpi-target")], className="kpi")

        case = f["case"]
        return html.Div([
            html.Div([html.H4(w("approval", ctx.lang)),
                      cell(f["approval_hours_avg"], f["targets"]["approval_hours"], f["meets"]["approval"]),
                      html.Div(f"{w('case', ctx.lang)}: {case['approval_days_after']} d（{case['approval_days_before']} d）",
                               className="kpi-target")], id="lead-approval"),
            html.Div([html.H4(w("notify", ctx.lang)),
                      cell(f["notify_hours_max"], f["targets"]["notify_hours"], f["meets"]["notify"])], id="lead-notify"),
            html.Div([html.H4(w("end_to_end", ctx.lang)), cell(f["end_to_end_hours_avg"], None, None),
                      html.Div(f"{w('case', ctx.lang)}: {case['end_to_end_hours']:.0f} {hours}", className="kpi-target")],
                     id="lead-end-to-end"),
            html.Div(f"{w('decided', ctx.lang)}: {f['decided']}", className="summary")], className="goal-lead-times")


WIDGETS = (FlaggedGoals(), RevisionPipeline(), LeadTimes())
