"""Dash component trees of the built-in widgets, from the plain data `widgets.py` computes. Styling is by
class (assets/keel-dash.css): `style-red` … for formatting rules, `marked` for the viewer's yellow marks."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import dash_cytoscape as cyto
from dash import dcc, html

from keel.dashboards import rules as R
from keel.dashboards.context import WidgetContext
from keel.i18n import translate as _

ACK_URL = "/dash/acknowledge"
GRAPH_STYLESHEET = [
    {"selector": "node", "style": {"label": "data(label)", "background-color": "data(color)", "color": "#222",
                                   "font-size": "14px", "text-wrap": "ellipsis", "text-max-width": "120px",
                                   "text-valign": "bottom", "text-margin-y": "4px", "width": 26, "height": 26}},
    {"selector": "node.root", "style": {"width": 36, "height": 36, "border-width": 3, "border-color": "#1565c0"}},
    {"selector": "node.marked", "style": {"border-width": 5, "border-color": "#fbc02d"}},
    {"selector": "node.more", "style": {"shape": "round-rectangle", "background-color": "#cfd8dc",
                                        "text-valign": "center", "text-margin-y": "0px", "width": 44}},
    {"selector": "edge", "style": {"curve-style": "bezier", "target-arrow-shape": "triangle", "width": 1.5,
                                   "line-color": "#b0bec5", "target-arrow-color": "#b0bec5"}},
]


def csrf_token() -> str:
    from flask_wtf.csrf import generate_csrf

    return generate_csrf()


def ack_form(app: str, entity: str | None, record_id: Any, next_url: str, label: str | None = None) -> html.Form:
    """A plain form post (with the CSRF token) that closes the viewer's mark and comes back."""
    fields = [dcc.Input(type="hidden", name="csrf_token", value=csrf_token()),
              dcc.Input(type="hidden", name="app", value=app),
              dcc.Input(type="hidden", name="next", value=next_url)]
    if entity is not None:
        fields.append(dcc.Input(type="hidden", name="entity", value=entity))
    if record_id is not None:
        fields.append(dcc.Input(type="hidden", name="record_id", value=str(record_id)))
    return html.Form([*fields, html.Button(label or _("Acknowledge"), type="submit", className="ack")],
                     method="POST", action=ACK_URL, className="ack-form")


def _href(args: Mapping[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**args, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


# ------------------------------------------------------------------------------------------- per type

def export_links(ctx: WidgetContext, widget, page: Mapping) -> Any:
    """CSV and Excel downloads of a list widget (unless the definition says `"export": false`)."""
    if widget.get("export", True) is False:
        return None
    base = f"/dash/{ctx.app}/{page['dashboard']}/{widget['id']}/export"
    return html.Div([html.A("CSV", href=base + ".csv", className="button"),
                     html.A("Excel", href=base + ".xlsx", className="button")], className="export")


def kpi(ctx: WidgetContext, widget, data: Mapping[str, Any], page: Mapping) -> Any:
    parts = [html.Div(data["text"], className=f"kpi-value style-{data['style'] or 'plain'}")]
    if data.get("target_text") is not None:
        parts.append(html.Div([html.Span(_("Target") + " "), html.Span(data["target_text"])], className="kpi-target"))
    if data.get("delta_text") is not None:
        parts.append(html.Div([html.Span(_("Difference") + " "), html.Span(data["delta_text"]),
                               html.Span(f" ({data['ratio_text']})" if data.get("ratio_text") else "")],
                              className="kpi-delta"))
    return html.Div(parts, className="kpi")


def table(ctx: WidgetContext, widget, data: Mapping[str, Any], page: Mapping) -> Any:
    wid, args, here = widget["id"], page["args"], page["here"]
    heads = [html.Th(c["label"]) for c in data["columns"]] + [html.Th("")]
    body = []
    for row in data["rows"]:
        cells = []
        for i, text in enumerate(row["cells"]):
            content = html.A(text or f"#{row['id']}", href=row["url"]) if i == 0 and widget.get("link", True) \
                else text
            cells.append(html.Td(content, **{"data-label": data["columns"][i]["label"]}))
        extra = []
        if row["marked"]:
            extra = [html.Span(row["mark_reason"] or _("Changed"), className="mark-reason"),
                     ack_form(ctx.app, widget["entity"], row["id"], here)]
        cells.append(html.Td(extra, className="row-actions"))
        classes = " ".join(c for c in (f"style-{row['style']}" if row["style"] else "",
                                       "marked" if row["marked"] else "") if c)
        body.append(html.Tr(cells, className=classes or None, id=f"{wid}-row-{row['id']}"))
    if not body:
        body = [html.Tr(html.Td(_("Nothing to show."), colSpan=len(heads), className="empty"))]
    only = args.get(f"{wid}_only")
    summary = [html.Span(_("%(n)s rows", n=f"{data['total']:,}"), className="count")]
    if data.get("capped"):
        summary.append(html.Span(_("Only the first %(n)s records are read; narrow the widget's filters.",
                                   n=f"{data['total']:,}"), className="hint"))
    for style, n in sorted(data["styles"].items()):
        summary.append(html.A(f"{_(STYLE_WORDS[style])} {n:,}", className=f"chip style-{style}",
                              href=_href(args, **{f"{wid}_only": None if only == style else style,
                                                  f"{wid}_page": None})))
    tools = [html.Div(summary, className="summary"), export_links(ctx, widget, page)]
    pager = []
    if data["pages"] > 1:
        if data["page"] > 1:
            pager.append(html.A("‹", href=_href(args, **{f"{wid}_page": data["page"] - 1}), className="button"))
        pager.append(html.Span(f"{data['page']} / {data['pages']}"))
        if data["page"] < data["pages"]:
            pager.append(html.A("›", href=_href(args, **{f"{wid}_page": data["page"] + 1}), className="button"))
    return html.Div([html.Div(tools, className="table-tools"),
                     html.Div(html.Table([html.Thead(html.Tr(heads)), html.Tbody(body)], className="dash-table"),
                              className="table-box"),
                     html.Div(pager, className="pager")])


def N_(msgid: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return msgid


STYLE_WORDS = {"red": N_("Red"), "orange": N_("Orange"), "yellow": N_("Yellow"), "green": N_("Green"),
               "blue": N_("Blue"), "grey": N_("Grey")}


def chart(ctx: WidgetContext, widget, data: Mapping[str, Any], page: Mapping) -> Any:
    if not data["x"]:
        return html.Div(_("Nothing to show."), className="empty")
    kind = data["chart"]
    traces = [{"type": "bar" if kind == "bar" else "scatter", "mode": "lines+markers" if kind == "line" else None,
               "name": s["name"], "x": data["x"], "y": s["values"]} for s in data["series"]]
    for t in traces:
        if t["mode"] is None:
            del t["mode"]
    figure = {"data": traces, "layout": {"margin": {"l": 48, "r": 12, "t": 12, "b": 48}, "height": 300,
                                          "legend": {"orientation": "h"}, "autosize": True,
                                          "font": {"family": "Noto Sans CJK SC, sans-serif"}}}
    return dcc.Graph(figure=figure, config={"displayModeBar": False, "responsive": True}, className="chart")


def _tree_node(node: Mapping[str, Any], level: int, open_levels: int, ctx, widget, page,
               columns: list[str] = ()) -> Any:
    classes = " ".join(c for c in ("tree-node", f"style-{node['style']}" if node["style"] else "",
                                   "marked" if node["marked"] else "") if c)
    head = [html.A(node["label"], href=node["url"])] + [html.Span(f"{label}: {c}", className="tree-cell")
                                                        for label, c in zip(columns, node["cells"], strict=False)]
    if node["marked"]:
        head += [html.Span(node["mark_reason"] or _("Changed"), className="mark-reason"),
                 ack_form(ctx.app, widget["entity"], node["id"], page["here"])]
    if not node["children"]:
        return html.Div(head, className=classes + " leaf")
    kids = [_tree_node(c, level + 1, open_levels, ctx, widget, page, columns) for c in node["children"]]
    return html.Details([html.Summary(head + [html.Span(f"({len(node['children'])})", className="tree-count")]),
                         html.Div(kids, className="tree-children")], open=level < open_levels, className=classes)


def tree(ctx: WidgetContext, widget, data: Mapping[str, Any], page: Mapping) -> Any:
    if not data["roots"]:
        return html.Div(_("Nothing to show."), className="empty")
    nodes = [_tree_node(n, 0, data["expand_levels"], ctx, widget, page, data["columns"]) for n in data["roots"]]
    return html.Div([export_links(ctx, widget, page), html.Div(nodes, className="tree")])


def progress(ctx: WidgetContext, widget, data: Mapping[str, Any], page: Mapping) -> Any:
    if not data["items"]:
        return html.Div(_("Nothing to show."), className="empty")
    rows = []
    for it in data["items"]:
        pct = it["percent"]
        width = 0 if pct is None else max(0, min(100, pct))
        classes = " ".join(c for c in ("progress-item", f"style-{it['style']}" if it["style"] else "",
                                       "marked" if it["marked"] else "") if c)
        rows.append(html.Div([
            html.Div([html.A(it["label"], href=it["url"]),
                      html.Span(f"{it['value']} / {it['target']}" + ("" if pct is None else f" · {pct}%"),
                                className="progress-figures")], className="progress-head"),
            html.Div(html.Div(className="progress-fill", style={"width": f"{width}%"}), className="progress-bar"),
            *([ack_form(ctx.app, widget["entity"], it["id"], page["here"])] if it["marked"] else [])],
            className=classes))
    return html.Div([export_links(ctx, widget, page), html.Div(rows, className="progress-list")])


def graph_view(ctx: WidgetContext, graph: Mapping[str, Any], key: str, *, expand: list[str], here: str,
               spec_ref: Mapping[str, Any]) -> Any:
    """The cytoscape graph of `graph_elements` output, with its store (what is expanded) and the list of
    marked nodes to acknowledge. `key` names the widget's components for the callbacks."""
    nodes, edges = graph["elements"]["nodes"], graph["elements"]["edges"]
    targets = {e["data"]["target"] for e in edges}
    roots = [n["data"]["id"] for n in nodes if n["data"]["id"] not in targets]
    marked = [n["data"] for n in nodes if n["data"].get("marked")]
    legend = [html.Span(_(STYLE_WORDS[s]), className=f"chip style-{s}") for s in
              sorted({n["data"].get("style") for n in nodes if n["data"].get("style")})]
    children = [
        dcc.Store(id={"type": "graph-state", "key": key}, data={**spec_ref, "expand": expand}),
        dcc.Location(id={"type": "graph-nav", "key": key}, refresh=True),
        html.Div([html.Span(_("%(n)s records", n=f"{sum(1 for n in nodes if not n['data'].get('collapsed')):,}"),
                            className="count"), *legend,
                  html.Span(_("Click a record to open it; click +N to show more."), className="hint")],
                 className="summary"),
        cyto.Cytoscape(id={"type": "graph", "key": key}, elements=nodes + edges, stylesheet=GRAPH_STYLESHEET,
                       layout=graph_layout(roots), style={"width": "100%", "height": "520px"},
                       # fitting a wide graph into a phone would shrink labels to dots: past this zoom the
                       # graph is drawn readable around its centre and one pans (or pinches) to the rest
                       minZoom=0.5, maxZoom=2.5, className="graph-box"),
    ]
    if marked:
        children.append(html.Div([html.H4(_("Changed since you last looked"))] + [
            html.Div([html.A(m["label"], href=m["url"]), html.Span(m.get("mark_reason") or "", className="mark-reason"),
                      ack_form(ctx.app, m["entity"], m["record_id"], here)], className="marked-item")
            for m in marked], className="marked-list"))
    return html.Div(children, className="graph-widget")


def graph_layout(roots: list[str]) -> dict:
    """Top-down: dagre ranks a DAG in layers (an upper record always above the records linking to it, however
    many paths join them), unlike breadthfirst which places a node by its shortest path from a root."""
    del roots
    # labels (up to 120 px) sit under 26 px nodes: space the nodes by the label width, not the node width
    return {"name": "dagre", "rankDir": "TB", "nodeSep": 110, "rankSep": 60, "animate": False}


def error_box(widget_id: str, message: str) -> Any:
    return html.Div([html.Strong(_("This widget could not be shown.")), html.Span(f" ({widget_id}) {message}")],
                    className="widget-error")


LAYOUTS = {"kpi": kpi, "table": table, "chart": chart, "tree": tree, "progress": progress}
__all__ = ["LAYOUTS", "R", "ack_form", "error_box", "graph_view"]
