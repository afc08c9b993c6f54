"""The Dash app under /dash/ on the Keel server, and its plain Flask routes (export, acknowledge).

Behind the same login as every page: Dash's routes are ordinary view functions of the Flask app, so
`keel.auth`'s deny-by-default check covers the page, the component suites and the update callbacks; a
callback posts with the CSRF token Dash's renderer reads from the `_csrf_token` cookie (set here). Every widget
reads through the viewer's WidgetContext (the one permission point), and the layout is computed per request
from the app's latest version, so an applied change shows on the next load without a restart.

Pages: `/dash/` (the viewer's dashboards), `/dash/<app>/<dashboard>`, `/dash/<app>/graph/<entity>/<id>`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import dash
from dash import MATCH, Input, Output, State, dcc, html
from dash.exceptions import DependencyException, PreventUpdate
from flask import Flask, Response, abort, current_app, g, redirect, request
from werkzeug.exceptions import NotFound as PageNotFound

from keel.dashboards import access, layouts
from keel.dashboards import export as ex
from keel.dashboards.context import WidgetContext
from keel.dashboards.graph import graph_elements
from keel.dashboards.widgets import BUILTIN, Graph
from keel.errors import KeelError, NotFound, PermissionDenied
from keel.i18n import current_lang
from keel.i18n import translate as _
from keel.storage import highlights

log = logging.getLogger("keel.dashboards")
PREFIX = "/dash/"
ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_TYPES = tuple(type(w) for w in BUILTIN)
# Dash's inline scripts are allowed by hash (computed from the app itself); plotly and cytoscape set styles.
CSP = ("default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")

INDEX = """<!DOCTYPE html>
<html lang="{lang}">
<head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}</head>
<body>
<header class="dash-header"><a class="brand" href="/workbench">Keel</a>
<nav><a href="/dash/">{dashboards}</a><a href="/workbench">{workbench}</a>
<a href="?lang=zh">中文</a><a href="?lang=en">English</a></nav></header>
{%app_entry%}
<footer>{%config%}{%scripts%}{%renderer%}</footer>
</body>
</html>"""


class KeelDash(dash.Dash):
    def interpolate_index(self, **kwargs):
        # the header's words are the viewer's language: filled into the rendered page, per request (the
        # template itself is shared by every thread)
        lang = current_lang()
        html_text = super().interpolate_index(**kwargs)
        return html_text.replace("{lang}", "zh-CN" if lang == "zh" else "en", 1) \
            .replace("{dashboards}", _("Dashboards"), 1).replace("{workbench}", _("Workbench"), 1)


def _runtime():
    return current_app.extensions["keel"]


def _ctx(conn, built, dashboard: str | None = None) -> WidgetContext:
    return WidgetContext(conn, built, g.actor, current_lang(), dashboard)


# ------------------------------------------------------------------------------------------- rendering

def render_widget(ctx: WidgetContext, widget: Mapping[str, Any], page: Mapping[str, Any]) -> Any:
    """One widget's box; a widget that fails shows an error box and the rest of the page renders."""
    wt = ctx.built.registries.dashboard_widgets.get(widget.get("type"))
    title = ctx.label(widget.get("title"), "")
    try:
        if wt is None:
            raise NotFound(f"widget type '{widget.get('type')}' is not installed")
        if isinstance(wt, Graph):
            body = _graph_widget(ctx, wt, widget, page)
        elif isinstance(wt, BUILTIN_TYPES):
            if wt.name == "table":
                args = page["args"]
                data = wt.data(ctx, widget, page=_int(args.get(f"{widget['id']}_page"), 1),
                               only=args.get(f"{widget['id']}_only"))
            else:
                data = wt.data(ctx, widget)
            body = layouts.LAYOUTS[wt.name](ctx, widget, data, page)
        else:
            body = wt.layout(ctx, widget)
    except Exception as e:  # one broken widget must not take the dashboard down
        log.exception("dashboard %s widget %s", page.get("dashboard"), widget.get("id"))
        body = layouts.error_box(widget.get("id", "?"), str(e) if isinstance(e, KeelError) else type(e).__name__)
    width = int(widget.get("width", 12))
    return html.Section([html.H3(title) if title else None, body],
                        className=f"widget w{width} widget-{widget.get('type')}", id=f"w-{widget.get('id')}")


def _int(raw: Any, default: int) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def _graph_widget(ctx: WidgetContext, wt: Graph, widget, page) -> Any:
    roots = wt.roots(ctx, widget)
    if not roots:
        return html.Div(_("Nothing to show."), className="empty")
    key = f"{page['dashboard']}-{widget['id']}"
    chosen = _int(page["args"].get(f"{widget['id']}_record"), roots[0][0])
    spec = wt.spec(ctx, widget, page["dashboard"])
    graph = graph_elements(ctx, spec, widget["entity"], chosen)
    picker = dcc.Dropdown(id={"type": "graph-root", "key": key}, value=chosen, clearable=False,
                          options=[{"label": label, "value": rid} for rid, label in roots], className="graph-root")
    ref = {"app": ctx.app, "dashboard": page["dashboard"], "widget": widget["id"], "entity": widget["entity"],
           "record": chosen, "key": key}
    return html.Div([picker, html.Div(layouts.graph_view(ctx, graph, key, expand=[], here=page["here"], spec_ref=ref),
                                      id={"type": "graph-holder", "key": key})])


def dashboard_page(app_id: str, dashboard_id: str, args: Mapping[str, str], here: str) -> Any:
    runtime = _runtime()
    with runtime.engine.connect() as conn:
        built = runtime.latest(conn, app_id)
        data = access.dashboard(built, dashboard_id, g.actor)
        ctx = _ctx(conn, built, dashboard_id)
        page = {"dashboard": dashboard_id, "args": dict(args), "here": here}
        widgets = [render_widget(ctx, w, page) for w in access.widgets(data, g.actor)]
        title = ctx.label(data.get("title") or data.get("label"), dashboard_id)
    return html.Main([html.H2(title), html.Div(widgets, className="widget-grid")], className="dashboard")


def graph_page(app_id: str, entity: str, record_id: str, args: Mapping[str, str], here: str) -> Any:
    runtime = _runtime()
    with runtime.engine.connect() as conn:
        built = runtime.latest(conn, app_id)
        ctx = _ctx(conn, built)
        spec = access.graph_spec(built, entity, args.get("dashboard"), args.get("widget"), g.actor)
        graph = graph_elements(ctx, spec, entity, record_id)
        ent = built.entity(entity)
        root = next(n["data"] for n in graph["elements"]["nodes"] if n["data"]["id"] == graph["root"])
        ref = {"app": app_id, "dashboard": args.get("dashboard"), "widget": args.get("widget"), "entity": entity,
               "record": int(record_id), "key": f"page-{entity}"}
        view = layouts.graph_view(ctx, graph, f"page-{entity}", expand=[], here=here, spec_ref=ref)
    return html.Main([html.H2(f"{ent.label.get(ctx.lang)} · {root['label']}"),
                      html.P(html.A(_("Open the record"), href=root["url"])), view], className="dashboard")


def index_page() -> Any:
    runtime = _runtime()
    items = []
    with runtime.engine.connect() as conn:
        for built in runtime.apps():
            built = runtime.latest(conn, built.id)
            for did, data in access.dashboards_for(built, g.actor):
                title = WidgetContext(conn, built, g.actor, current_lang()).label(data.get("title"), did)
                items.append(html.Li(html.A(f"{built.definition.label.get(current_lang())} · {title}",
                                            href=f"{PREFIX}{built.id}/{did}")))
    if not items:
        items = [html.Li(_("No dashboard is available to you."))]
    return html.Main([html.H2(_("Dashboards")), html.Ul(items, className="dashboard-list")], className="dashboard")


def route(pathname: str | None, search: str | None) -> Any:
    """The page for a /dash/ path; errors are answered on the page, like Keel's error pages."""
    path = (pathname or PREFIX)[len(PREFIX):].strip("/")
    parts = [p for p in path.split("/") if p]
    args = dict(parse_qsl((search or "").lstrip("?")))
    args.pop("lang", None)
    here = (pathname or PREFIX) + ("?" + urlencode(args) if args else "")
    try:
        if not parts:
            return index_page()
        if len(parts) == 2:
            return dashboard_page(parts[0], parts[1], args, here)
        if len(parts) == 4 and parts[1] == "graph":
            return graph_page(parts[0], parts[2], parts[3], args, here)
        raise NotFound("no such page")
    except PermissionDenied:
        return html.Main([html.H2(_("Not allowed")), html.P(_("You may not open this page."))], className="error")
    except NotFound:
        return html.Main([html.H2(_("Not found")), html.P(_("There is no such page or record."))], className="error")


# ------------------------------------------------------------------------------------------- callbacks

def _register_callbacks(app: dash.Dash) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"), State("url", "search"))
    def _page(pathname, search):
        return route(pathname, search)

    @app.callback(Output({"type": "graph-holder", "key": MATCH}, "children"),
                  Input({"type": "graph-root", "key": MATCH}, "value"),
                  State({"type": "graph-state", "key": MATCH}, "data"), prevent_initial_call=True)
    def _pick_root(record, state):
        state = {**state, "record": record, "expand": []}
        return _graph_again(state)

    @app.callback(Output({"type": "graph-state", "key": MATCH}, "data"),
                  Output({"type": "graph", "key": MATCH}, "elements"),
                  Output({"type": "graph", "key": MATCH}, "layout"),
                  Output({"type": "graph-nav", "key": MATCH}, "href"),
                  Input({"type": "graph", "key": MATCH}, "tapNodeData"),
                  State({"type": "graph-state", "key": MATCH}, "data"), prevent_initial_call=True)
    def _tap(node, state):
        if not node:
            raise PreventUpdate
        if node.get("collapsed"):
            state = {**state, "expand": [*state.get("expand", []), node["parent_node"]]}
            graph = _graph_data(state)
            nodes, edges = graph["elements"]["nodes"], graph["elements"]["edges"]
            targets = {e["data"]["target"] for e in edges}
            roots = [n["data"]["id"] for n in nodes if n["data"]["id"] not in targets]
            return state, nodes + edges, layouts.graph_layout(roots), dash.no_update
        if node.get("url"):
            return dash.no_update, dash.no_update, dash.no_update, node["url"]
        raise PreventUpdate



def _graph_data(state: Mapping[str, Any]) -> dict:
    runtime = _runtime()
    with runtime.engine.connect() as conn:
        built = runtime.latest(conn, state["app"])
        ctx = _ctx(conn, built, state.get("dashboard"))
        spec = access.graph_spec(built, state["entity"], state.get("dashboard"), state.get("widget"), g.actor)
        return graph_elements(ctx, spec, state["entity"], state["record"], expand=state.get("expand") or [])


def _graph_again(state: Mapping[str, Any]) -> Any:
    runtime = _runtime()
    with runtime.engine.connect() as conn:
        built = runtime.latest(conn, state["app"])
        ctx = _ctx(conn, built, state.get("dashboard"))
        spec = access.graph_spec(built, state["entity"], state.get("dashboard"), state.get("widget"), g.actor)
        graph = graph_elements(ctx, spec, state["entity"], state["record"])
        here = request.referrer or PREFIX
        return layouts.graph_view(ctx, graph, state["key"], expand=[],
                                  here=_local(here), spec_ref=state)


def _local(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "") or PREFIX


# ------------------------------------------------------------------------------------------- flask routes

def _export(app_id: str, dashboard_id: str, widget_id: str, fmt: str):
    if fmt not in ex.FORMATS:
        abort(404)
    runtime = _runtime()
    with runtime.engine.connect() as conn:
        built = runtime.latest(conn, app_id)
        widget, wt = access.widget(built, dashboard_id, widget_id, g.actor)
        if widget.get("export") is False:
            abort(404)
        ctx = _ctx(conn, built, dashboard_id)
        headers, rows = ex.export_table(ctx, wt, widget)
    body = ex.to_csv(headers, rows) if fmt == "csv" else ex.to_xlsx(headers, rows, widget_id)
    resp = Response(body, mimetype=ex.FORMATS[fmt])
    resp.headers["Content-Disposition"] = f'attachment; filename="{dashboard_id}-{widget_id}.{fmt}"'
    return resp


def _acknowledge():
    from keel.auth import safe_next

    app_id = request.form.get("app", "")
    entity = request.form.get("entity") or None
    rid = request.form.get("record_id") or None
    if not app_id or (rid is not None and (not rid.isdigit() or entity is None)):
        abort(400)
    runtime = _runtime()
    with runtime.engine.begin() as conn:
        highlights.acknowledge(conn, g.actor, app_id, entity, int(rid) if rid else None)
    return redirect(safe_next(request.form.get("next")) or PREFIX)


def _after(response):
    """Give Dash's renderer the CSRF token for its callback posts (it sends the `_csrf_token` cookie back as
    X-CSRFToken, which keel.auth checks like any page form). A callback after the session ended gets the
    login redirect like every page request (the route test holds every page path to that)."""
    if request.path.startswith(PREFIX) and g.get("actor") is not None and request.method == "GET" \
            and response.mimetype == "text/html":
        from flask_wtf.csrf import generate_csrf

        response.set_cookie("_csrf_token", generate_csrf(), path=PREFIX, samesite="Strict", httponly=False,
                            secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return response


def init_app(server: Flask) -> dash.Dash:
    import dash_cytoscape as cyto

    cyto.load_extra_layouts()  # dagre, for the top-down layout (the bundle with it is ~1.4 MB, served locally)
    app = KeelDash(__name__, server=server, url_base_pathname=PREFIX, assets_folder=str(ASSETS),
                   title="Keel", update_title=None, suppress_callback_exceptions=True, serve_locally=True,
                   meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}])
    app.index_string = INDEX
    app.layout = html.Div([dcc.Location(id="url"), html.Div(id="page")])
    _register_callbacks(app)
    hashes = " ".join(app.csp_hashes())
    server.config.setdefault("KEEL_CSP_BY_PREFIX", {})[PREFIX] = CSP.replace("{hashes}", hashes)
    server.add_url_rule(f"{PREFIX}<app_id>/<dashboard_id>/<widget_id>/export.<fmt>", "dash_export", _export)
    server.add_url_rule(f"{PREFIX}acknowledge", "dash_acknowledge", _acknowledge, methods=["POST"])
    server.after_request(_after)
    # Dash answers a request for a script of a package it does not serve by raising: that is a 404, not a 500.
    server.register_error_handler(DependencyException, lambda e: PageNotFound().get_response())
    server.extensions["keel_dash"] = app
    return app
