"""REST routes of the Goal Agility mechanism, under /api/v1/apps/goal_agility/ (Bearer token, like every API route;
registered by the plugin's keel_startup). Reads check the caller may read the record they are about."""
from __future__ import annotations

from flask import Blueprint, request
from werkzeug.exceptions import default_exceptions

from keel.api.common import actor, json_response, runtime
from keel.api.errors import handle
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.storage.query import fetch_row
from keel_goal_agility import cascade, leadtimes, tree
from keel_goal_agility.settings import APP

bp = Blueprint("goal_agility_api", __name__, url_prefix=f"/api/v1/apps/{APP}")
for _code in default_exceptions:
    bp.register_error_handler(_code, handle)
bp.register_error_handler(Exception, handle)


def _built():
    return runtime().get(APP)


def _reader_roles(who) -> bool:
    return who.is_admin or bool({"manager", "strategy", "executive"} & set(who.roles))


@bp.get("/revisions/lead-times")
def revision_lead_times():
    """Lead times of decided revision requests against the case's targets.

    Request → decision, decision → everyone notified and end to end, averaged over approved and rejected requests
    (withdrawn and pending ones have no decision and are not counted). Managers, the strategy department,
    executives and admins.

    Responses:
        403: not a manager, strategist, executive or admin
    """
    who = actor()
    if not _reader_roles(who):
        raise PermissionDenied("only managers, the strategy department and executives see lead times")
    with runtime().engine.connect() as conn:
        return json_response(leadtimes.lead_times(conn, _built()))


@bp.get("/revisions/pipeline")
def revision_pipeline():
    """Open revision requests with their SLA status (ok, due_soon, overdue).

    Responses:
        403: not a manager, strategist, executive or admin
    """
    who = actor()
    if not _reader_roles(who):
        raise PermissionDenied("only managers, the strategy department and executives see the pipeline")
    with runtime().engine.connect() as conn:
        return json_response({"items": leadtimes.pipeline(conn, _built())})


@bp.get("/revisions/<int:request_id>/impact")
def revision_impact(request_id: int):
    """The impact preview of a revision request: old → new per dimension, re-split goals, goals, tasks and people.

    What the approvers see before they decide; once applied, the same plan as it was carried out.

    Path:
        request_id: the revision request's id
    Responses:
        404: no such request, or one the caller may not read
    """
    built = _built()
    with runtime().engine.connect() as conn:
        fetch_row(conn, built, "revision_request", request_id, actor())
        p = cascade.plan(conn, built, request_id)
    if p is None:
        raise NotFound(f"no revision request {request_id}")
    return json_response({"request": request_id, "goal": {"id": p.goal["id"], "title": p.goal["title"]},
                          "changes": p.changes, "resplit": p.resplit, "confirm": p.confirm,
                          "impact": p.summary()})


@bp.get("/goals/<int:goal_id>/rollup")
def goal_rollup(goal_id: int):
    """A goal's progress rolled up from the goals under it, as its metric demands.

    Amounts and counts are summed, rates averaged with the links' weights; `null` means no data.

    Path:
        goal_id: the goal's id
    Query:
        children (boolean): also list each child's rolled-up value
    """
    built = _built()
    with runtime().engine.connect() as conn:
        fetch_row(conn, built, "goal", goal_id, actor())
        st = tree.subtree(conn, built, goal_id)
    values = tree.rolled_up(st)
    g = st.goals[goal_id]
    body = {"goal": goal_id, "unit": g.get("unit"), "mode": tree.rollup_mode(g), "target": g.get("target"),
            "value": values.get(goal_id), "goals": len(st.goals)}
    flag = request.args.get("children", "")
    if flag not in ("", "0", "1", "true", "false"):
        errors = FieldErrors()
        errors.add("children", "Must be true or false.")
        raise errors
    if flag in ("1", "true"):
        body["children"] = [{"id": c, "title": st.goals[c]["title"], "weight": w, "value": values.get(c)}
                            for c, w in st.children.get(goal_id, [])]
    return json_response(body)
