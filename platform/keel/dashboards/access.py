"""Which dashboards and widgets a viewer may open: the `roles` of a dashboard and of a widget (administrators
see all). What a widget then shows is decided row by row and field by field by the permission point."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.actor import Actor
from keel.errors import NotFound, PermissionDenied
from keel.storage.built import BuiltApp


def allowed(roles: Any, actor: Actor) -> bool:
    return not roles or actor.is_admin or bool(set(roles) & set(actor.roles))


def dashboards_for(built: BuiltApp, actor: Actor) -> list[tuple[str, Mapping[str, Any]]]:
    """(id, data) of the app's dashboards the viewer may open, in (order, id) order."""
    items = [(did, d.data) for did, d in built.definition.definitions_of("dashboard").items()
             if allowed(d.data.get("roles"), actor)]
    return sorted(items, key=lambda x: (x[1].get("order", 100), x[0]))


def dashboard(built: BuiltApp, dashboard_id: str, actor: Actor) -> Mapping[str, Any]:
    d = built.definition.definitions_of("dashboard").get(dashboard_id)
    if d is None:
        raise NotFound(f"no dashboard '{dashboard_id}' in app '{built.id}'")
    if not allowed(d.data.get("roles"), actor):
        raise PermissionDenied(f"dashboard '{dashboard_id}' is not for your roles")
    return d.data


def widgets(data: Mapping[str, Any], actor: Actor) -> list[Mapping[str, Any]]:
    return [w for w in data.get("widgets") or () if allowed(w.get("roles"), actor)]


def widget(built: BuiltApp, dashboard_id: str, widget_id: str, actor: Actor) -> tuple[Mapping, Any]:
    """(widget, its registered type) of a dashboard the viewer may open."""
    for w in widgets(dashboard(built, dashboard_id, actor), actor):
        if w.get("id") == widget_id:
            wt = built.registries.dashboard_widgets.get(w.get("type"))
            if wt is None:
                raise NotFound(f"widget type '{w.get('type')}' is not installed")
            return w, wt
    raise NotFound(f"no widget '{widget_id}' in dashboard '{dashboard_id}'")


def graph_spec(built: BuiltApp, entity: str, dashboard_id: str | None, widget_id: str | None, actor: Actor):
    """The graph definition a request names, if the viewer may open its dashboard and widget; else the
    default one for the entity."""
    from keel.dashboards.graph import find_spec

    if dashboard_id or widget_id:
        widget(built, dashboard_id or "", widget_id or "", actor)
    return find_spec(built.definition, entity, dashboard_id, widget_id)
