"""Recording runs: asking for one (once per idempotency key), recording a skipped one, reading them.

Every function takes the caller's connection and never enqueues anything: the caller commits first and
only then hands the new run ids to a dispatcher, so a worker never sees a run that was rolled back."""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.jobs import schedule
from keel.jobs.clock import aware, utc
from keel.jobs.definition import JobSpec
from keel.storage.job_tables import job_chunks, job_runs

log = logging.getLogger("keel.jobs")

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Requested:
    """What became of a request for a run.

    outcome: `queued` (a new run, `run_id`; enqueue it after commit), `active` (a run with this key is
    already queued or running: `existing`), `skipped` (the key already succeeded; the skipped request
    is recorded as `run_id`), `exists` (the scheduler lost a race or the period already has a run)."""

    outcome: str
    run_id: int | None
    key: str
    existing: dict[str, Any] | None = None
    message: str = ""


def _insert_unless_key_taken(conn: sa.Connection, values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING on (app, job, idempotency_key): the id, or None when another
    run holds the key. Unlike catching IntegrityError, this leaves a PostgreSQL transaction usable."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - Keel supports these two
        raise RuntimeError(f"unsupported database {name}")
    stmt = (insert(job_runs).values(**values)
            .on_conflict_do_nothing(index_elements=["app", "job", "idempotency_key"])
            .returning(job_runs.c.id))
    return conn.execute(stmt).scalar()


def _values(spec: JobSpec, key: str | None, period_key: str, status: str, trigger: str,
            user_id: int | None, now: dt.datetime, scheduled_for: dt.datetime | None,
            params: dict[str, Any] | None, reason: str | None = None) -> dict[str, Any]:
    return {"app": spec.app_id, "job": spec.id, "type": spec.type, "idempotency_key": key,
            "period_key": period_key, "scheduled_for": utc(scheduled_for) if scheduled_for else None,
            "status": status, "reason": reason,
            "params": params if params is not None else dict(spec.params), "options": spec.options(),
            "run_as": spec.run_as, "triggered_by": trigger, "triggered_by_user": user_id,
            "created_at": utc(now), "enqueued_at": utc(now) if status == "queued" else None,
            "finished_at": utc(now) if status == "skipped" else None}


def request_run(conn: sa.Connection, spec: JobSpec, *, trigger: str, now: dt.datetime,
                scheduled_for: dt.datetime | None = None, user_id: int | None = None,
                params: dict[str, Any] | None = None, force: bool = False) -> Requested:
    """Ask for a run of `spec`. `scheduled_for` is the fire time for the scheduler; None means "now"
    (CLI, API), which for a `period` job means the period of its latest fire time.

    `force` (manual runs only) runs the period again although it already succeeded: the new run gets a
    key of its own (its `idempotency_key` as shown stays the period's), so the earlier run keeps its
    record. A run of the period still queued or running is never doubled, forced or not."""
    manual = scheduled_for is None
    if manual and spec.idempotency == "period":
        scheduled_for = schedule.latest_fire(spec.cron, spec.timezone, now)
    elif manual and spec.idempotency != "run":
        scheduled_for = now
    key = schedule.idempotency_key(spec.idempotency, spec.timezone, scheduled_for, manual)
    if force and manual:
        return _forced(conn, spec, key, trigger, user_id, now, scheduled_for, params)
    values = _values(spec, key, key, "queued", trigger, user_id, now, scheduled_for, params)
    for _ in range(2):
        run_id = _insert_unless_key_taken(conn, values)
        if run_id is not None:
            return Requested("queued", run_id, key)
        existing = conn.execute(sa.select(job_runs).where(
            job_runs.c.app == spec.app_id, job_runs.c.job == spec.id, job_runs.c.idempotency_key == key)).first()
        if existing is None:  # the holder freed the key between our two statements: try once more
            continue
        if existing.status in ACTIVE:
            return Requested("active", None, key, run_json(existing),
                             f"run #{existing.id} of {spec.app_id}/{spec.id} is already {existing.status} "
                             f"for key {key}")
        if not manual:
            log.info("job %s/%s: %s already has run #%s (%s); not enqueued again",
                     spec.app_id, spec.id, key, existing.id, existing.status)
            return Requested("exists", None, key, run_json(existing))
        if existing.status == "failed":
            # Asking again for a failed period is a re-run: the failed run keeps its record but gives
            # up the key. Guarded by status, so two admins re-running at once still collide on insert.
            conn.execute(job_runs.update().where(job_runs.c.id == existing.id, job_runs.c.status == "failed")
                         .values(idempotency_key=None))
            continue
        reason = (f"key {key} already {existing.status} in run #{existing.id}; "
                  f"the idempotency policy '{spec.idempotency}' runs it once")
        skipped = conn.execute(job_runs.insert().values(
            **_values(spec, None, key, "skipped", trigger, user_id, now, scheduled_for, params, reason))
            .returning(job_runs.c.id)).scalar()
        log.info("job %s/%s: run #%s skipped: %s", spec.app_id, spec.id, skipped, reason)
        return Requested("skipped", skipped, key, run_json(existing), reason)
    return Requested("active", None, key, None, f"key {key} is contended; try again")


def _forced(conn: sa.Connection, spec: JobSpec, key: str, trigger: str, user_id: int | None,
            now: dt.datetime, scheduled_for: dt.datetime | None, params: dict[str, Any] | None) -> Requested:
    r = job_runs.c
    active = conn.execute(sa.select(job_runs).where(r.app == spec.app_id, r.job == spec.id, r.period_key == key,
                                                    r.status.in_(ACTIVE)).limit(1)).first()
    if active is not None:
        return Requested("active", None, key, run_json(active),
                         f"run #{active.id} of {spec.app_id}/{spec.id} is already {active.status} for key {key}; "
                         f"a forced run waits until it has ended (or cancel it)")
    own_key = f"forced:{uuid.uuid4().hex}"
    run_id = conn.execute(job_runs.insert().values(
        **_values(spec, own_key, key, "queued", trigger, user_id, now, scheduled_for, params,
                  "forced: run again on purpose although the idempotency key may have run already"))
        .returning(r.id)).scalar()
    log.info("job %s/%s: run #%s forced for key %s", spec.app_id, spec.id, run_id, key)
    return Requested("queued", run_id, key)


def stop_run(conn: sa.Connection, run_id: int, status: str, why: str, now: dt.datetime) -> bool:
    """End a queued or running run as `interrupted` or `cancelled`, with `why` as its error: its unfinished
    chunks are cancelled and their running attempts end with the same outcome. The run gives up its
    idempotency key, so the period can run again (the scheduler, `keel jobs run`, the API). A worker
    still running one of its chunks finds the chunk no longer its own when it commits, and its writes are
    rolled back. False when the run was not queued or running (it had ended meanwhile)."""
    from keel.storage.job_tables import job_attempts

    assert status in ("interrupted", "cancelled")
    r, c, a = job_runs.c, job_chunks.c, job_attempts.c
    ended = conn.execute(job_runs.update().where(r.id == run_id, r.status.in_(ACTIVE))
                         .values(status=status, error=why[:4000], finished_at=utc(now), idempotency_key=None))
    if ended.rowcount != 1:
        return False
    conn.execute(job_chunks.update().where(c.run_id == run_id, c.status.in_(("queued", "running")))
                 .values(status="cancelled", lease_until=None, finished_at=utc(now), error=why[:4000]))
    conn.execute(job_attempts.update().where(a.run_id == run_id, a.outcome == "running")
                 .values(outcome=status, finished_at=utc(now), error=why[:4000]))
    log.warning("job run #%s %s: %s", run_id, status, why)
    return True


def record_skipped(conn: sa.Connection, spec: JobSpec, scheduled_for: dt.datetime, reason: str,
                   now: dt.datetime) -> int | None:
    """A fire time the scheduler decided not to run (catch-up policy), recorded under its own key so
    nothing runs it later and two schedulers record it once."""
    key = schedule.idempotency_key(spec.idempotency, spec.timezone, scheduled_for, manual=False)
    run_id = _insert_unless_key_taken(conn, _values(spec, key, key, "skipped", "scheduler", None, now,
                                                    scheduled_for, None, reason))
    if run_id is not None:
        log.warning("job %s/%s: run for %s skipped (run #%s): %s", spec.app_id, spec.id,
                    scheduled_for.isoformat(), run_id, reason)
    return run_id


# ---- reading -------------------------------------------------------------------------------------

def _iso(value: dt.datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat() if value else None


def run_json(row: Any) -> dict[str, Any]:
    started, finished = aware(row.started_at), aware(row.finished_at)
    return {
        "id": row.id, "app": row.app, "job": row.job, "type": row.type, "status": row.status,
        "idempotency_key": row.period_key, "scheduled_for": _iso(row.scheduled_for),
        "triggered_by": row.triggered_by, "run_as": row.run_as, "attempts": row.attempts,
        "created_at": _iso(row.created_at), "started_at": _iso(started), "finished_at": _iso(finished),
        "duration_seconds": round((finished - started).total_seconds(), 3) if started and finished else None,
        "progress": {"done": row.progress_done, "total": row.progress_total},
        "counts": row.counts, "error": row.error, "reason": row.reason, "params": row.params,
    }


def get_run(conn: sa.Connection, run_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(job_runs).where(job_runs.c.id == run_id)).first()
    return run_json(row) if row is not None else None


def list_runs(conn: sa.Connection, *, app: str | None = None, job: str | None = None,
              status: str | None = None, limit: int = 50, apps: list[str] | None = None) -> list[dict[str, Any]]:
    stmt = sa.select(job_runs).order_by(job_runs.c.id.desc()).limit(limit)
    if app is not None:
        stmt = stmt.where(job_runs.c.app == app)
    if apps is not None:
        stmt = stmt.where(job_runs.c.app.in_(apps))
    if job is not None:
        stmt = stmt.where(job_runs.c.job == job)
    if status is not None:
        stmt = stmt.where(job_runs.c.status == status)
    return [run_json(r) for r in conn.execute(stmt)]


def last_runs(conn: sa.Connection, statuses: tuple[str, ...] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest run of every job, by (app, job); only runs of `statuses` when given."""
    r = job_runs.c
    newest = sa.select(sa.func.max(r.id)).group_by(r.app, r.job)
    if statuses is not None:
        newest = newest.where(r.status.in_(statuses))
    rows = conn.execute(sa.select(job_runs).where(r.id.in_(newest)))
    return {(row.app, row.job): run_json(row) for row in rows}


# What "last run" shows: a refused duplicate (skipped) never hides the run that did the work.
SHOWN_AS_LAST = ("queued", "running", "succeeded", "failed", "interrupted", "cancelled")


def chunks_of(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    """A run's chunks, each with `history`: every attempt, who ran it, how it ended and why."""
    from keel.jobs.attempts import history

    tried = history(conn, run_id)
    rows = conn.execute(sa.select(job_chunks).where(job_chunks.c.run_id == run_id).order_by(job_chunks.c.idx))
    return [{"index": r.idx, "status": r.status, "attempts": r.attempts, "counts": r.counts, "error": r.error,
             "problems": r.problems or [], "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
             "history": tried.get(r.idx, [])}
            for r in rows]


def run_with_chunks(conn: sa.Connection, run_id: int) -> dict[str, Any] | None:
    """A run with its chunks and every attempt at them, and `problems`: what its chunks reported about
    items they skipped (the run's API answer and page); None if unknown."""
    run = get_run(conn, run_id)
    if run is not None:
        run["chunks"] = chunks_of(conn, run_id)
        run["problems"] = [p for c in run["chunks"] for p in c["problems"]]
    return run
