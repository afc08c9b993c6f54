"""The relation graph, widget exports and the viewer's yellow marks over REST:

    GET  /apps/{app}/graph/{entity}/{id}                      cytoscape elements, permission-filtered
    GET  /apps/{app}/dashboards/{dashboard}/widgets/{widget}/export?format=csv|xlsx
    GET  /highlights?app=&entity=                             my open marks
    POST /highlights/acknowledge {app, entity?, record_id?}   close them (audited)
"""
from __future__ import annotations

from flask import Response, request

from keel.api import bp
from keel.api.common import actor, built_app, int_arg, json_object, json_response, runtime
from keel.dashboards import access
from keel.dashboards import export as ex
from keel.dashboards.context import WidgetContext
from keel.dashboards.graph import graph_elements
from keel.errors import FieldErrors
from keel.i18n import current_lang
from keel.storage import highlights


@bp.get("/apps/<app_id>/graph/<entity_id>/<record_id>")
def relation_graph(app_id: str, entity_id: str, record_id: str):
    """The relation graph of one record, as cytoscape.js elements.

    Follows the link fields of a graph definition (a `graph` widget of a dashboard; by default the first one
    whose links touch the entity, else every link field of the app) up and down to a depth. Records the
    caller may not read are left out, and the walk does not pass through them. Levels past the definition's
    `expand_levels`, or past the node budget, are collapsed into one "+N" node per parent (`collapsed` > 0).
    Edge `source` is the upper record, `target` the lower; node `level` < 0 above the root, > 0 below.

    Path:
        record_id (integer): the record's id
    Query:
        dashboard: the dashboard holding the graph widget (with `widget`)
        widget: the graph widget's id
        depth (integer): hops up and down, 1 to 10 (default: the definition's)
        expand: comma-separated node ids ("goal:12") whose collapsed neighbours to show
        max_nodes (integer): node budget, 1 to 5000 (default: the definition's, 300)
        all (boolean): no collapsing (still at most 5,000 nodes)
    Responses:
        200: {app, root, graph, depth, truncated, elements: {nodes, edges}}
        403: the caller may not read this record, or the named dashboard is not for their roles
    """
    who = actor()
    built = built_app(app_id)
    built.entity(entity_id)
    if not str(record_id).isdigit():
        errors = FieldErrors()
        errors.add("record_id", "Must be a whole number.")
        raise errors
    args = request.args
    depth = int_arg("depth", args.get("depth"))
    max_nodes = int_arg("max_nodes", args.get("max_nodes"))
    expand = [x for x in (args.get("expand") or "").split(",") if x][:1000]
    everything = (args.get("all") or "").lower() in ("1", "true", "yes")
    with runtime().engine.connect() as conn:
        built = runtime().latest(conn, app_id)
        spec = access.graph_spec(built, entity_id, args.get("dashboard"), args.get("widget"), who)
        ctx = WidgetContext(conn, built, who, current_lang())
        body = graph_elements(ctx, spec, entity_id, record_id, depth=depth, expand=expand, max_nodes=max_nodes,
                              everything=everything)
    return json_response(body)


@bp.get("/apps/<app_id>/dashboards/<dashboard_id>/widgets/<widget_id>/export")
def widget_export(app_id: str, dashboard_id: str, widget_id: str):
    """Export a table widget's rows as CSV or xlsx, with the caller's permissions.

    Every row matching the widget's filters (not only the first page), the columns the caller may read,
    cells as the dashboard shows them. Cells starting with `=`, `+`, `-`, `@`, tab or CR get a leading `'`.

    Query:
        format: csv (default) or xlsx
    Responses:
        200: the file
        403: the dashboard is not for the caller's roles
    """
    fmt = request.args.get("format", "csv")
    if fmt not in ex.FORMATS:
        errors = FieldErrors()
        errors.add("format", "Must be csv or xlsx.")
        raise errors
    who = actor()
    with runtime().engine.connect() as conn:
        built = runtime().latest(conn, app_id)
        widget, wt = access.widget(built, dashboard_id, widget_id, who)
        headers, rows = ex.export_table(WidgetContext(conn, built, who, current_lang(), dashboard_id), wt, widget)
    body = ex.to_csv(headers, rows) if fmt == "csv" else ex.to_xlsx(headers, rows, widget_id)
    resp = Response(body, mimetype=ex.FORMATS[fmt])
    resp.headers["Content-Disposition"] = f'attachment; filename="{dashboard_id}-{widget_id}.{fmt}"'
    return resp


@bp.get("/highlights")
def highlights_list():
    """The caller's open yellow marks: records changed since they last acknowledged them.

    Query:
        app: only this app
        entity: only this entity
    Responses:
        200: {items: [{app, entity, record_id, reason, detail, marked_at, url}], count}
    """
    who = actor()
    app_id, entity = request.args.get("app") or None, request.args.get("entity") or None
    if who.user_id is None:
        return json_response({"items": [], "count": 0})
    with runtime().engine.connect() as conn:
        found = highlights.marked(conn, who.user_id, app_id, entity)
    items = [{"app": a, "entity": e, "record_id": rid, "reason": m["reason"], "detail": m["detail"],
              "marked_at": m["marked_at"], "url": f"/apps/{a}/{e}/{rid}"} for (a, e, rid), m in found.items()]
    return json_response({"items": items, "count": len(items)})


@bp.post("/highlights/acknowledge")
def highlights_acknowledge():
    """Acknowledge the caller's marks on one record, one entity or a whole app (audited).

    Body:
        app (string, required): the app
        entity (string): only this entity
        record_id (integer): only this record (needs `entity`)
    Responses:
        200: {acknowledged: how many marks were closed}
    """
    who = actor()
    data = json_object()
    errors = FieldErrors()
    app_id, entity, rid = data.get("app"), data.get("entity"), data.get("record_id")
    if not isinstance(app_id, str) or not app_id:
        errors.add("app", "A value is required.")
    if entity is not None and not isinstance(entity, str):
        errors.add("entity", "Must be text.")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int)):
        errors.add("record_id", "Must be a whole number.")
    elif rid is not None and entity is None:
        errors.add("entity", "A value is required.")
    if errors:
        raise errors
    with runtime().engine.begin() as conn:
        n = highlights.acknowledge(conn, who, app_id, entity, rid)
    return json_response({"acknowledged": n})
