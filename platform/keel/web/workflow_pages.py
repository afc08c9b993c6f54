"""The workflow pages: my tasks (/workflows/tasks) with every action a step allows and bulk approval, one
request's timeline (/workflows/instances/<id>) with the submitter's buttons, and approval metrics
(/workflows/metrics) for administrators and the roles in KEEL_WORKFLOW_METRICS_ROLES.

Plain forms posted with the CSRF token (checked for every page POST by keel.auth), no script. Every action
is one call into `keel.workflow.engine` in one transaction, the same calls the REST API makes
(keel.api.workflows): a refusal rolls it back, and the page says why in the reader's language with the
status of the refusal (403 / 404 / 409 / 422). A success redirects (post/redirect/get) with a notice."""
from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from keel import formats
from keel.api.workflows import INSTANCE_ACTIONS, TASK_ACTIONS
from keel.errors import Conflict, FieldErrors, KeelError, NotFound, PermissionDenied
from keel.i18n import current_lang, translate
from keel.web import workflow_view as view
from keel.web.pages import N_, actor, error_page, runtime
from keel.workflow import bulk, engine, queries

bp = Blueprint("workflow_pages", __name__)
PER_PAGE = 30
TABS = {"pending": "pending", "done": "all"}  # tab -> list_tasks status ("done" drops the open ones)
DONE_MESSAGES = {
    "approve": N_("Approved."), "reject": N_("Rejected."), "send_back": N_("Sent back."),
    "transfer": N_("Transferred."), "add_approvers": N_("Approvers added."), "cc": N_("Copied."),
    "withdraw": N_("The request was withdrawn."), "remind": N_("The approvers were reminded."),
    "resubmit": N_("The request was resubmitted.")}
STATUS_BY_ERROR = ((FieldErrors, 422), (PermissionDenied, 403), (NotFound, 404))
DEFAULT_METRICS_ROLES = ("strategy",)
RECENT = 20
BULK_REASONS = 5


def _status_of(error: KeelError) -> int:
    return next((code for cls, code in STATUS_BY_ERROR if isinstance(error, cls)), 409)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _page_arg() -> int:
    try:
        return max(1, int(request.args.get("page") or 1))
    except ValueError:
        return 1


# ---- my tasks ------------------------------------------------------------------------------------------

def _render_tasks(tab: str = "pending", errors: list[str] | None = None, status: int = 200):
    who, lang, page = actor(), current_lang(), _page_arg()
    tab = tab if tab in TABS else "pending"
    with runtime().engine.connect() as conn:
        data = queries.list_tasks(conn, runtime(), who, TABS[tab], page, PER_PAGE, lang)
        items = data["items"] if tab == "pending" else [t for t in data["items"]
                                                        if t["status"] not in ("pending", "waiting")]
        rows = view.task_rows(conn, who, items, lang, _now())
    pages = max(1, -(-data["total"] // PER_PAGE))
    return render_template("tasks.html", title=translate("My tasks"), tab=tab, rows=rows, total=data["total"],
                           page=page, pages=pages, errors=errors or [],
                           any_bulk=any(r["bulk"] for r in rows), tz=formats.zone_label()), status


@bp.get("/workflows/tasks")
def tasks_page():
    return _render_tasks(request.args.get("tab", "pending"))


def _people(raw: str) -> list[str]:
    """Usernames typed into one box, separated by commas (either width), 、 or spaces."""
    return [p for p in re.split(r"[\s,，、;；]+", raw or "") if p][:engine.MAX_USERS + 1]


def _task_arguments(action: str) -> list:
    """What the engine call takes besides the comment, from the posted form; a missing one is a 422."""
    form = request.form
    args = {"to_step": form.get("to_step", "").strip(), "to_user": form.get("to_user", "").strip(),
            "users": _people(form.get("users", ""))}
    needed = TASK_ACTIONS[action]
    errors = FieldErrors()
    for key in needed:
        if not args[key]:
            errors.add(key, "This field is required.")
    if errors:
        raise errors
    return [args[key] for key in needed]


def _back_to_instance(task_id: int) -> int | None:
    """The instance of the task whose page a form came from (`back=instance`), else None."""
    if request.form.get("back") != "instance":
        return None
    import sqlalchemy as sa

    from keel.storage.workflow_tables import wf_tasks

    with runtime().engine.connect() as conn:
        return conn.execute(sa.select(wf_tasks.c.instance_id).where(wf_tasks.c.id == task_id)).scalar()


@bp.post("/workflows/tasks/<int:task_id>")
def task_action(task_id: int):
    """One task action; `action` names it (approve, reject, send_back, transfer, add_approvers, cc)."""
    who, action = actor(), request.form.get("action", "")
    try:
        if action not in TASK_ACTIONS:
            errors = FieldErrors()
            errors.add("action", "Unknown action.")
            raise errors
        extra = _task_arguments(action)
        with runtime().engine.begin() as conn:
            result = getattr(engine, action)(conn, runtime(), task_id, who, *extra, comment=request.form.get("comment"))
    except KeelError as e:
        with runtime().engine.connect() as conn:
            message = view.explain_task_refusal(conn, e, task_id, who)
        instance_id = _back_to_instance(task_id)
        if instance_id is not None:
            return _render_instance(instance_id, [message], _status_of(e))
        return _render_tasks(request.form.get("tab", "pending"), [message], _status_of(e))
    flash(translate(DONE_MESSAGES[action]), "success")
    if request.form.get("back") == "instance":
        return redirect(url_for("workflow_pages.instance_page", instance_id=result["instance"]))
    return redirect(url_for("workflow_pages.tasks_page"))


@bp.post("/workflows/tasks/bulk_approve")
def bulk_approve():
    """Approve the checked tasks, each its own transition; above the workflows' threshold as a job when
    there is a queue (as the API does)."""
    who = actor()
    try:
        raw = request.form.getlist("task_ids")
        numbers = [int(v) for v in raw] if raw and all(re.fullmatch(r"[0-9]{1,18}", v) for v in raw) else None
        ids = bulk.task_ids_of(numbers)
        comment = engine.comment_of(request.form.get("comment"))
    except FieldErrors as e:
        return _render_tasks("pending", [view.field_errors_text(e)], 422)
    from keel.jobs import EXTENSION

    eng = runtime().engine
    outcome = bulk.approve_many(runtime(), ids, who, comment, current_app.extensions.get(EXTENSION))
    if outcome.queued and not outcome.sent:
        flash(translate("The job queue is unavailable: the approval of %(n)s tasks is recorded as job run "
                        "#%(run)s and starts as soon as the queue is back.", n=outcome.count, run=outcome.run_id),
              "info")
        return redirect(url_for("workflow_pages.tasks_page"))
    if outcome.queued:
        flash(translate("%(n)s tasks are being approved in the background (job run #%(run)s).",
                        n=outcome.count, run=outcome.run_id), "success")
        return redirect(url_for("workflow_pages.tasks_page"))
    results = outcome.results
    flash(translate("Approved %(n)s of %(total)s tasks.", n=outcome.approved, total=outcome.count),
          "success" if outcome.approved == outcome.count else "error")
    refused = [r for r in results if r["status"] != 200]
    with eng.connect() as conn:
        # Flashed messages live in the session cookie: name the first few, count the rest.
        for r in refused[:BULK_REASONS]:
            if r["status"] == 422:
                text = "; ".join(m for ms in r.get("errors", {}).values() for m in ms)
            else:
                error = {403: PermissionDenied(), 404: NotFound()}.get(r["status"], Conflict())
                text = view.explain_task_refusal(conn, error, r["task"], who)
            flash(translate("Task #%(id)s: %(reason)s", id=r["task"], reason=text), "error")
    if len(refused) > BULK_REASONS:
        flash(translate("…and %(n)s more tasks were not approved.", n=len(refused) - BULK_REASONS), "error")
    return redirect(url_for("workflow_pages.tasks_page"))


# ---- one request -----------------------------------------------------------------------------------------

def _render_instance(instance_id: int, errors: list[str] | None = None, status: int = 200):
    who, lang = actor(), current_lang()
    with runtime().engine.connect() as conn:
        data = queries.instance_view(conn, runtime(), instance_id, who, lang)  # NotFound (404) unless a participant
        page = view.instance_page_data(conn, data, who, lang, _now())
        mine = view.task_rows(conn, who, _my_pending(conn, who, page["my_task_ids"], lang), lang, _now())
        panels = _panels(conn, page, who, lang)
    return render_template("instance.html", title=f"{page['workflow_label']} #{instance_id}", inst=page,
                           my_tasks=mine, panels=panels, errors=errors or [], tz=formats.zone_label()), status


def _panels(conn, page: dict, who, lang: str) -> list[dict]:
    """The plugins' review panels for the reader's own pending task, else for the request's latest task."""
    task_ids = page["my_task_ids"] or page["latest_task_ids"]
    if not task_ids:
        return []
    return queries.task_view(conn, runtime(), task_ids[0], who, lang)["panels"]


@bp.get("/workflows/tasks/<int:task_id>")
def task_page(task_id: int):
    """A task is decided on its request's page (the record, the panels, the timeline)."""
    with runtime().engine.connect() as conn:
        data = queries.task_view(conn, runtime(), task_id, actor(), current_lang())  # 404 unless a participant
    return redirect(url_for("workflow_pages.instance_page", instance_id=data["instance"]["id"]) + "#decision")


def _my_pending(conn, who, task_ids: list[int], lang: str) -> list[dict]:
    if not task_ids:
        return []
    found = queries.list_tasks(conn, runtime(), who, "pending", 1, queries.MAX_PER_PAGE, lang)["items"]
    return [t for t in found if t["id"] in task_ids]


@bp.get("/workflows/instances/<int:instance_id>")
def instance_page(instance_id: int):
    return _render_instance(instance_id)


@bp.post("/workflows/instances/<int:instance_id>/<action>")
def instance_action(instance_id: int, action: str):
    """The submitter's withdraw, remind and resubmit."""
    if action not in INSTANCE_ACTIONS:
        abort(404)
    who = actor()
    try:
        with runtime().engine.begin() as conn:
            getattr(engine, action)(conn, runtime(), instance_id, who, comment=request.form.get("comment"))
    except KeelError as e:
        with runtime().engine.connect() as conn:
            message = view.explain_instance_refusal(conn, e, instance_id, action, who)
            inst = _readable(conn, instance_id, who)
        if inst:
            return _render_instance(instance_id, [message], _status_of(e))
        return error_page(404)  # not a participant: the request does not exist for them (as on GET)
    flash(translate(DONE_MESSAGES[action]), "success")
    return redirect(url_for("workflow_pages.instance_page", instance_id=instance_id))


def _readable(conn, instance_id: int, who) -> bool:
    import sqlalchemy as sa

    from keel.storage.workflow_tables import wf_instances

    row = conn.execute(sa.select(wf_instances).where(wf_instances.c.id == instance_id)).first()
    return row is not None and queries.can_read(conn, row, who)


# ---- metrics ---------------------------------------------------------------------------------------------

def may_see_metrics(who) -> bool:
    roles = current_app.config.get("KEEL_WORKFLOW_METRICS_ROLES", DEFAULT_METRICS_ROLES)
    return who.is_admin or bool(set(roles) & set(who.roles))


@bp.get("/workflows/metrics")
def metrics_page():
    """Per workflow: how many requests finished, and avg / p50 / p90 of approval and lead time; then the
    latest requests with their own durations (all from the audit trail, keel.workflow.metrics)."""
    import sqlalchemy as sa

    from keel.storage.workflow_tables import wf_instances
    from keel.workflow import metrics
    from keel.workflow.definition import workflows_of

    who, lang = actor(), current_lang()
    if not may_see_metrics(who):
        raise PermissionDenied("workflow metrics are for administrators and the strategy role")
    now = _now()
    flows, recent = [], []
    with runtime().engine.connect() as conn:
        labels = {}
        for built in sorted(runtime().apps(), key=lambda b: b.id):
            for wf in workflows_of(built.definition).values():
                labels[(built.id, wf.id)] = wf.label.get(lang)
                flows.append({"app": built.definition.label.get(lang), "label": wf.label.get(lang),
                              **metrics.workflow_metrics(conn, built.id, wf.id, now=now)})
        rows = conn.execute(sa.select(wf_instances).order_by(wf_instances.c.id.desc()).limit(RECENT)).all()
        for r in rows:
            try:
                m = metrics.instance_metrics(conn, r.id, now=now)
            except NotFound:
                continue
            recent.append({"id": r.id, "label": labels.get((r.app, r.workflow), r.workflow),
                           "status_label": view.status_label(r.status, True), "started_at": view.local_time(r.started_at),
                           **{k: m[k] for k in ("time_to_first_action_hours", "approval_hours",
                                                 "lead_time_hours")}})
    return render_template("workflow_metrics.html", title=translate("Approval metrics"), flows=flows,
                           recent=recent, tz=formats.zone_label())


# ---- on every page: the pending count and a record's workflows -----------------------------------------

@bp.app_context_processor
def _pending_tasks() -> dict:
    from keel.web.context import signed_in_actor

    who = signed_in_actor()
    if who is None:
        return {}
    with runtime().engine.connect() as conn:
        return {"pending_task_count": view.pending_count(conn, who.user_id),
                "may_see_workflow_metrics": may_see_metrics(who)}


@bp.app_template_global()
def workflow_panel(app_id: str, entity_id: str, record_id: int) -> dict:
    """For record.html: the record's requests and the forms that start a workflow about it."""
    who = actor()
    with runtime().engine.connect() as conn:
        return view.record_panel(conn, runtime().get(app_id), entity_id, record_id, who, current_lang())


@bp.app_template_filter("hours")
def hours_filter(value) -> str:
    """Hours as the metrics show them: one decimal, or a dash for none."""
    return "—" if value is None else f"{value:.1f}"
