"""Workflows over the API: my tasks, deciding on them, the submitter's actions and one instance with its
timeline. Every action is one call into `keel.workflow.engine` inside one transaction; refusals come back
through the API's error handlers (422 / 403 / 404 / 409) with the database unchanged."""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app, g, request

from keel.api import bp
from keel.api.common import actor, int_arg, json_object, json_response, only_keys, runtime
from keel.errors import FieldErrors
from keel.i18n import current_lang, translate
from keel.workflow import bulk, delegation, engine, queries

# What each task action takes in its body besides `comment`.
TASK_ACTIONS: dict[str, tuple[str, ...]] = {
    "approve": (), "reject": (), "send_back": ("to_step",), "transfer": ("to_user",),
    "add_approvers": ("users",), "cc": ("users",)}
INSTANCE_ACTIONS = ("withdraw", "remind", "resubmit")
# The summary and body of each action's route in the API docs (keel.api.routedoc reads them).
ACTION_DOCS: dict[str, tuple[str, str]] = {
    "approve": ("Approve a task of mine (同意).", ""),
    "reject": ("Reject a task of mine (驳回): the request ends rejected.", ""),
    "send_back": ("Send a request back (退回) to an earlier step or to the submitter.",
                  "to_step (string, required): a step this request has passed, or `submitter`"),
    "transfer": ("Transfer a task of mine (转交) to another user, who decides instead.",
                 "to_user (integer, required): the user id"),
    "add_approvers": ("Add approvers (加签) at this step.", "users (array, required): user ids"),
    "cc": ("Copy people in (抄送): they are told and may read, but do not decide.",
           "users (array, required): user ids"),
    "withdraw": ("Withdraw my request (撤回); its open tasks are cancelled.", ""),
    "remind": ("Remind the approvers of my request (催办; at most once every ten minutes).", ""),
    "resubmit": ("Resubmit my request after it was sent back for changes.", ""),
}


def _body(allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body (empty allowed when nothing is required); unknown keys and missing ones are 422."""
    data = json_object() if (request.get_data(cache=True) or required) else {}
    return only_keys(data, allowed, required)


@bp.get("/workflows/tasks")
def list_my_tasks():
    """My approval tasks, newest first.

    Query:
        status: `pending` (default), `open`, `all` or another task status
        page (integer): page number, from 1
        per_page (integer): tasks per page
    """
    who = actor()
    status = request.args.get("status", "pending")
    page = int_arg("page", request.args.get("page")) or 1
    per_page = int_arg("per_page", request.args.get("per_page")) or 50
    with runtime().engine.connect() as conn:
        return json_response(queries.list_tasks(conn, runtime(), who, status, page, per_page, current_lang()))


@bp.get("/workflows/tasks/<int:task_id>")
def get_task(task_id: int):
    """One task: its request, the record as the reader may see it and the plugins' review panels."""
    with runtime().engine.connect() as conn:
        return json_response(queries.task_view(conn, runtime(), task_id, actor(), current_lang()))


def _route_action(kind: str, action: str, extra: tuple[str, ...]) -> None:
    """POST /workflows/{kind}s/<id>/{action}: the engine function of that name, in one transaction,
    with the body's comment and the action's own required keys (`extra`)."""
    def view(target_id: int):
        data = _body(("comment", *extra), extra)
        who = actor()
        with runtime().engine.begin() as conn:
            result = getattr(engine, action)(conn, runtime(), target_id, who, *(data[k] for k in extra),
                                             comment=data.get("comment"))
        return json_response(result)

    view.__name__ = f"{kind}_{action}"
    summary, body = ACTION_DOCS[action]
    body_lines = "".join(f"    {line}\n" for line in (body, "comment (string): a comment kept with the decision") if line)
    view.__doc__ = (f"{summary}\n\nBody:\n{body_lines}Responses:\n"
                    "    403: the caller may not do this to this task or request\n"
                    "    409: the task or request is no longer open for this\n")
    bp.add_url_rule(f"/workflows/{kind}s/<int:target_id>/{action}", view_func=view, methods=["POST"])


for _action, _extra in TASK_ACTIONS.items():
    _route_action("task", _action, _extra)
for _action in INSTANCE_ACTIONS:
    _route_action("instance", _action, ())


@bp.post("/workflows/tasks/bulk_approve")
def bulk_approve():
    """Approve many tasks at once; above the queue threshold the approval runs as a job.

    Steps must allow bulk approval. Every task is decided in the caller's name.

    Body:
        task_ids (array, required): ids of the tasks
        comment (string): a comment on every decision
    Responses:
        200: approved at once: `approved`, `results` per task
        202: queued as job run `run_id` (`sent` false: recorded, sent when the queue is back)
    """
    from keel.jobs import EXTENSION

    data = _body(("task_ids", "comment"), ("task_ids",))
    ids = bulk.task_ids_of(data["task_ids"])
    outcome = bulk.approve_many(runtime(), ids, actor(), engine.comment_of(data.get("comment")),
                                current_app.extensions.get(EXTENSION))
    if outcome.queued:
        body = {"queued": True, "run_id": outcome.run_id, "count": outcome.count, "sent": outcome.sent}
        if not outcome.sent:
            body["message"] = translate("The job queue is unavailable: the approval of %(n)s tasks is recorded "
                                        "as job run #%(run)s and starts as soon as the queue is back.",
                                        n=outcome.count, run=outcome.run_id)
        return json_response(body, 202)
    return json_response({"queued": False, "count": outcome.count, "threshold": outcome.threshold,
                          "approved": outcome.approved, "results": list(outcome.results)})


@bp.get("/workflows/instances/<int:instance_id>")
def get_instance(instance_id: int):
    """One workflow instance with its steps, tasks and timeline (for its submitter, approvers and admins).

    Responses:
        403: the caller takes no part in this request
    """
    with runtime().engine.connect() as conn:
        return json_response(queries.instance_view(conn, runtime(), instance_id, actor(), current_lang()))


@bp.put("/workflows/delegation")
def set_delegation():
    """Delegate my approval tasks to another user (until a time, or until cleared).

    Body:
        to_user (integer, required): the user who decides instead of me
        until (string): ISO 8601 date-time the delegation ends
    """
    data = _body(("to_user", "until"), ("to_user",))
    until = data.get("until")
    if until is not None:
        try:
            until = dt.datetime.fromisoformat(until) if isinstance(until, str) else None
        except ValueError:
            until = None
        if until is None:
            errors = FieldErrors()
            errors.add("until", "Give a date and time such as 2025-10-31T18:00:00+08:00.")
            raise errors
        until = until if until.tzinfo else until.replace(tzinfo=dt.UTC)
    with runtime().engine.begin() as conn:
        return json_response(delegation.set_delegation(conn, actor(), data["to_user"], until))


@bp.delete("/workflows/delegation")
def clear_delegation():
    """End my delegation."""
    with runtime().engine.begin() as conn:
        delegation.clear_delegation(conn, actor())
    return json_response({"to_user": None})


@bp.record_once
def _create_tables(state) -> None:
    # create_app made the system tables before this module was imported; make ours too (a no-op once
    # storage.db imports workflow_tables itself).
    from keel.workflow import ensure_tables

    ensure_tables(state.app.extensions["keel"].engine)


@bp.after_app_request
def _record_unresolved(response):
    """A request nobody could approve was refused (422) and its transaction rolled back; the event that
    tells the administrators is written now, in a transaction of its own."""
    pending = g.pop("keel_workflow_unresolved", None)
    if pending:
        from keel.actor import SYSTEM
        from keel.storage.audit import record_event

        with runtime().engine.begin() as conn:
            for item in pending:
                record_event(conn, g.get("actor") or SYSTEM, "workflow.unresolved", app=item["app"], detail=item)
    return response
