"""Bulk approval: many tasks approved with one click. Each task is still its own transition (its own
lock, checks and audit event); one refused task does not stop the others, and the answer says, task by
task, what happened.

Above the smallest `bulk_queue_threshold` of the workflows involved, the work is queued as a background
job run (type `workflow.bulk_approve`, acting as the user who asked, whose permissions the job re-checks)
when the server has a job queue; without one it runs here and says so (`"queued": false`). A run the
queue refused once it was recorded (Redis answering but refusing writes) is not lost and not hidden: the
answer says it is recorded and will run once the queue takes it (`"sent": false`), which the reaper does
as soon as it can — never a failure that then happens anyway."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.model import Label
from keel.errors import FieldErrors, KeelError
from keel.jobs.types import JobContext, JobFailed, JobType
from keel.storage.workflow_tables import wf_instances, wf_tasks
from keel.workflow import steps as machine
from keel.workflow.definition import DEFAULT_BULK_THRESHOLD, workflows_of

log = logging.getLogger("keel.workflow")
MAX_BULK = 5000
CHUNK = 50
JOB_ID = "workflow_bulk_approve"


def task_ids_of(raw: Any) -> list[int]:
    if (not isinstance(raw, list) or not raw or len(raw) > MAX_BULK
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw)):
        errors = FieldErrors()
        errors.add("task_ids", "Give a list of 1 to %(max)s task ids.", max=MAX_BULK)
        raise errors
    return list(dict.fromkeys(raw))


def threshold(conn: sa.Connection, runtime, ids: list[int]) -> int:
    """The smallest bulk_queue_threshold of the workflows these tasks belong to."""
    rows = conn.execute(sa.select(wf_instances.c.app, wf_instances.c.app_version, wf_instances.c.workflow)
                        .select_from(wf_tasks.join(wf_instances, wf_instances.c.id == wf_tasks.c.instance_id))
                        .where(wf_tasks.c.id.in_(ids)).distinct()).all()
    found = []
    for app, version, workflow in rows:
        wf = workflows_of(machine.pinned_app(conn, runtime, app, version)).get(workflow)
        if wf is not None:
            found.append(wf.bulk_queue_threshold)
    return min(found, default=DEFAULT_BULK_THRESHOLD)


def approve_one(conn: sa.Connection, runtime, task_id: int, actor: Actor, comment: str | None) -> dict[str, Any]:
    from keel.workflow.engine import approve

    try:
        with conn.begin_nested():  # a refused task rolls back alone
            approve(conn, runtime, task_id, actor, comment, bulk=True)
        return {"task": task_id, "status": 200, "result": "approved"}
    except KeelError as e:
        if isinstance(e, FieldErrors):
            return {"task": task_id, "status": 422, "errors": e.rendered()}
        return {"task": task_id, "status": e.status, "error": str(e)}


def run_inline(runtime, ids: list[int], actor: Actor, comment: str | None) -> list[dict[str, Any]]:
    out = []
    for task_id in ids:
        with runtime.engine.begin() as conn:
            out.append(approve_one(conn, runtime, task_id, actor, comment))
    return out


@dataclass(frozen=True)
class BulkOutcome:
    """What one bulk approval did: queued as job run `run_id`, or run here with `results` per task."""

    count: int
    threshold: int
    run_id: int | None = None
    results: tuple[dict[str, Any], ...] = ()
    sent: bool = True   # False: the run is recorded but waits for the queue to take it

    @property
    def queued(self) -> bool:
        return self.run_id is not None

    @property
    def approved(self) -> int:
        return sum(r["status"] == 200 for r in self.results)


def approve_many(runtime, ids: list[int], actor: Actor, comment: str | None, jobs_env) -> BulkOutcome:
    """Approve `ids` for `actor`: as a background job run above the workflows' threshold when
    `jobs_env` has a working queue, else here, task by task. The one path for the API and the pages."""
    engine = runtime.engine
    with engine.connect() as conn:
        limit = threshold(conn, runtime, ids)
    if len(ids) > limit and jobs_env is not None:
        queued = queue(jobs_env, app_of(engine, ids), ids, actor, comment)
        if queued is not None:
            return BulkOutcome(len(ids), limit, run_id=queued[0], sent=queued[1])
    return BulkOutcome(len(ids), limit, results=tuple(run_inline(runtime, ids, actor, comment)))


def app_of(engine: sa.Engine, ids: list[int]) -> str:
    """The app of the first of these tasks: the app a queued run is recorded under."""
    with engine.connect() as conn:
        app = conn.execute(sa.select(wf_instances.c.app).select_from(
            wf_tasks.join(wf_instances, wf_instances.c.id == wf_tasks.c.instance_id))
            .where(wf_tasks.c.id.in_(ids)).limit(1)).scalar()
    return app or "keel"


def job_spec(app_id: str, actor: Actor):
    from keel.jobs.definition import JobSpec

    return JobSpec(app_id=app_id, id=JOB_ID, file="", type=BulkApproveJob.name,
                   label=Label("批量审批", "Bulk approval"), cron=None, timezone="UTC", timeout_seconds=600,
                   max_retries=0, backoff_seconds=(0,), idempotency="run", catch_up="none", chunk_size=CHUNK,
                   params={}, run_as=actor.username, enabled=True)


def queue(env, app_id: str, ids: list[int], actor: Actor, comment: str | None) -> tuple[int, bool] | None:
    """Record and dispatch a job run: (its id, whether the queue took it); None when there is no usable
    queue (nothing recorded)."""
    from keel.jobs.catalog import ask
    from keel.jobs.execute import Dispatch
    from keel.jobs.queue import deliver

    dispatcher = getattr(env, "dispatcher", None)
    if dispatcher is None or not dispatcher.status()[0]:
        return None
    asked = ask(env, job_spec(app_id, actor), {"task_ids": ids, "comment": comment},
                trigger=f"user:{actor.user_id}", user_id=actor.user_id)
    if asked.run_id is None:
        return None
    refused = deliver(env, [Dispatch(asked.run_id, timeout=600)], dispatcher)
    return asked.run_id, refused is None


class BulkApproveJob(JobType):
    """Approves a list of tasks as the user who asked; each chunk approves up to 50 of them."""

    name = "workflow.bulk_approve"
    label = "Bulk approval"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "required": ["task_ids"],
                     "properties": {"task_ids": {"type": "array", "items": {"type": "integer"}},
                                    "comment": {"type": ["string", "null"]}}}

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        return "the system cannot approve tasks in bulk" if ctx.actor.is_system else None

    def plan(self, ctx: JobContext, params: Mapping[str, Any]) -> list[Any]:
        ids = list(params["task_ids"])
        return [{"task_ids": ids[i:i + CHUNK]} for i in range(0, len(ids), CHUNK)]

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        if ctx.actor.is_system:
            raise JobFailed("the system cannot approve tasks in bulk")
        results = [approve_one(ctx.conn, ctx.runtime, task_id, ctx.actor, params.get("comment"))
                   for task_id in chunk["task_ids"]]
        return {"approved": sum(r["status"] == 200 for r in results),
                "refused": sum(r["status"] != 200 for r in results)}
