"""Running a run: start it (check who it acts for, plan the chunks), run one chunk, and take back the
work of lost workers. The same functions serve an RQ worker, the in-process runner and `keel jobs run`;
they never enqueue anything themselves but return what should be dispatched after their transaction
committed (`Dispatch`), so the caller does that.

A chunk's life: queued -> running (a claim: attempts + 1, a lease of timeout + grace) -> done, in ONE
transaction with the chunk's own writes; or, on an error, back to queued with a back-off (failed when
its attempts are used up, which fails the run). The run succeeds when its last chunk is done: a counter
incremented in each chunk's transaction, so exactly one of them sees the total."""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.auth.actor import SYSTEM, Actor
from keel.jobs.clock import Clock, aware
from keel.jobs.clock import now as system_now
from keel.jobs.types import JobContext, JobFailed, JobType, JobTypeRegistry
from keel.storage.db import writes_later
from keel.storage.job_tables import job_chunks, job_runs

log = logging.getLogger("keel.jobs")
MAX_ERROR = 4000
MAX_CHUNKS = 100_000


@dataclass
class JobEnv:
    """What running jobs needs: the database, the built apps, the job types, and a clock."""

    engine: sa.Engine
    runtime: Any
    types: JobTypeRegistry
    clock: Clock = system_now
    lease_grace_seconds: float = 30.0   # beyond the chunk timeout before a running chunk counts as lost
    stale_after_seconds: float = 300.0  # a queued run/chunk not picked up by then is sent again
    dispatcher: Any = None              # keel.jobs.queue.Dispatcher, when there is a queue


@dataclass(frozen=True)
class Dispatch:
    """Something to hand to the queue after commit: start a run, or run one chunk (after `delay`)."""

    run_id: int
    chunk: int | None = None
    delay: float = 0.0
    timeout: int = 600


@dataclass
class ChunkOutcome:
    status: str                     # done | retry | failed | skip
    attempt: int = 0
    error: str | None = None
    follow_up: list[Dispatch] = field(default_factory=list)
    run_status: str | None = None   # the run's status when this chunk finished it


class LeaseLost(Exception):
    """The chunk was taken back (its lease expired) while this worker ran it; its work is discarded."""


def _describe(e: BaseException) -> str:
    text = str(e) if isinstance(e, JobFailed) else f"{type(e).__name__}: {e}"
    return text[:MAX_ERROR]


def resolve_actor(conn: sa.Connection, run_as: str | None) -> Actor:
    """Who a run acts for, read fresh from the directory at the moment it runs."""
    if not run_as:
        return SYSTEM
    from keel.auth.directory import find_user, get_actor

    row = find_user(conn, run_as)
    actor = get_actor(conn, row.id) if row is not None else None
    if actor is None:
        raise JobFailed(f"run_as user '{run_as}' does not exist or is inactive; the job acts for that user "
                        f"and cannot run")
    return actor


def _job_type(env: JobEnv, run: Any) -> JobType:
    job_type = env.types.get(run.type)
    if job_type is None:
        raise JobFailed(f"unknown job type '{run.type}' (is the plugin that provides it installed on this "
                        f"worker?)")
    return job_type


def _context(env: JobEnv, conn: sa.Connection, run: Any, attempt: int, chunk_index: int | None,
             on_progress=None) -> tuple[JobType, JobContext]:
    env.runtime.refresh(conn)
    job_type = _job_type(env, run)
    actor = resolve_actor(conn, run.run_as)
    ctx = JobContext(conn=conn, engine=env.engine, runtime=env.runtime, actor=actor, app_id=run.app,
                     job_id=run.job, run_id=run.id, attempt=attempt, options=run.options,
                     scheduled_for=aware(run.scheduled_for), chunk_index=chunk_index, on_progress=on_progress)
    why_not = job_type.authorize(ctx, run.params)
    if why_not:
        raise JobFailed(f"permission check failed for {actor.username}: {why_not}")
    return job_type, ctx


def _timeout(run: Any) -> int:
    return int(run.options.get("timeout_seconds", 600))


def fail_run(env: JobEnv, run_id: int, error: str) -> None:
    with env.engine.begin() as conn:
        conn.execute(job_runs.update().where(job_runs.c.id == run_id, job_runs.c.status.in_(("queued", "running")))
                     .values(status="failed", error=error[:MAX_ERROR], finished_at=env.clock()))
    log.error("job run #%s failed: %s", run_id, error)


def start_run(env: JobEnv, run_id: int) -> list[Dispatch]:
    """Claim a queued run, check who it acts for, plan its chunks. Returns the chunks to dispatch."""
    now = env.clock()
    try:
        with env.engine.begin() as conn:
            claimed = conn.execute(job_runs.update().where(job_runs.c.id == run_id, job_runs.c.status == "queued")
                                   .values(status="running", started_at=now, attempts=job_runs.c.attempts + 1))
            if claimed.rowcount != 1:
                return []  # started by another worker, or no longer queued
            run = conn.execute(sa.select(job_runs).where(job_runs.c.id == run_id)).one()
            job_type, ctx = _context(env, conn, run, run.attempts, None)
            chunks = list(job_type.plan(ctx, run.params))
            if len(chunks) > MAX_CHUNKS:
                raise JobFailed(f"the job planned {len(chunks)} chunks; at most {MAX_CHUNKS} are allowed "
                                f"(raise chunk_size)")
            for c in chunks:
                json.dumps(c)  # a descriptor must survive the database and the queue
            if chunks:
                conn.execute(job_chunks.insert(), [
                    {"run_id": run_id, "idx": i, "descriptor": c, "status": "queued", "attempts": 0,
                     "enqueued_at": now, "available_at": now} for i, c in enumerate(chunks)])
            values: dict[str, Any] = {"progress_total": len(chunks)}
            if not chunks:
                values.update(status="succeeded", finished_at=now, counts={})
            conn.execute(job_runs.update().where(job_runs.c.id == run_id).values(**values))
            log.info("job run #%s (%s/%s) started as %s: %s chunk(s)", run_id, run.app, run.job,
                     ctx.actor.username, len(chunks))
            return [Dispatch(run_id, i, 0.0, _timeout(run)) for i in range(len(chunks))]
    except Exception as e:  # every failure to start is recorded on the run
        fail_run(env, run_id, f"could not start: {_describe(e)}")
        return []


def _backoff(options: dict[str, Any], attempt: int) -> float:
    delays = options.get("backoff_seconds") or [0]
    return float(delays[min(attempt - 1, len(delays) - 1)])


def _claim(env: JobEnv, run_id: int, idx: int, now: dt.datetime) -> tuple[Any, Any, int] | None:
    with env.engine.begin() as conn:
        run = conn.execute(sa.select(job_runs).where(job_runs.c.id == run_id)).first()
        if run is None or run.status != "running":
            return None
        lease = now + dt.timedelta(seconds=_timeout(run) + env.lease_grace_seconds)
        c = job_chunks.c
        # Queued and due (a second's tolerance for clocks of different machines), or running on a
        # lost worker's expired lease; never beyond the attempts the definition allows.
        claimable = sa.or_(
            sa.and_(c.status == "queued",
                    sa.or_(c.available_at.is_(None), c.available_at <= now + dt.timedelta(seconds=1))),
            sa.and_(c.status == "running", c.lease_until < now))
        res = conn.execute(job_chunks.update()
                           .where(c.run_id == run_id, c.idx == idx, claimable,
                                  c.attempts < int(run.options.get("max_attempts", 1)))
                           .values(status="running", attempts=c.attempts + 1, lease_until=lease, started_at=now))
        if res.rowcount != 1:
            return None
        chunk = conn.execute(sa.select(job_chunks).where(c.run_id == run_id, c.idx == idx)).one()
        return run, chunk, chunk.attempts


def _check_counts(counts: Any) -> dict[str, int | float]:
    if counts is None:
        return {}
    if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in counts.items()):
        raise TypeError(f"run_chunk must return a dict of name -> number, not {counts!r:.200}")
    return counts


def _sum_counts(conn: sa.Connection, run_id: int) -> dict[str, int | float]:
    total: dict[str, int | float] = {}
    for counts in conn.execute(sa.select(job_chunks.c.counts).where(job_chunks.c.run_id == run_id)).scalars():
        for k, v in (counts or {}).items():
            total[k] = total.get(k, 0) + v
    return total


def run_chunk(env: JobEnv, run_id: int, idx: int, on_progress=None) -> ChunkOutcome:
    """Claim chunk `idx` of a run and run it. Its writes and its "done" mark commit together."""
    now = env.clock()
    claimed = _claim(env, run_id, idx, now)
    if claimed is None:
        return ChunkOutcome("skip")
    run, chunk, attempt = claimed
    c = job_chunks.c
    try:
        # Who the run acts for is checked in a short transaction of its own. The chunk's transaction
        # then begins with its first statement (SQLAlchemy's autobegin), not before: on SQLite every
        # transaction holds the database's write lock, and work a job does before touching the
        # database (a slow upstream call) must not hold it.
        with env.engine.connect() as check:
            job_type, ctx = _context(env, check, run, attempt, idx, on_progress)
        with env.engine.connect() as conn:
            ctx.conn = writes_later(conn)
            counts = _check_counts(job_type.run_chunk(ctx, run.params, chunk.descriptor))
            done = conn.execute(job_chunks.update()
                                .where(c.run_id == run_id, c.idx == idx, c.status == "running", c.attempts == attempt)
                                .values(status="done", counts=counts, finished_at=env.clock(), lease_until=None,
                                        error=None))
            if done.rowcount != 1:
                raise LeaseLost(f"chunk {idx} of run #{run_id} was taken back while attempt {attempt} ran")
            conn.execute(job_runs.update().where(job_runs.c.id == run_id)
                         .values(progress_done=job_runs.c.progress_done + 1))
            progress = conn.execute(sa.select(job_runs.c.progress_done, job_runs.c.progress_total)
                                    .where(job_runs.c.id == run_id)).one()
            run_status = None
            if progress.progress_done >= (progress.progress_total or 0):
                finished = conn.execute(job_runs.update()
                                        .where(job_runs.c.id == run_id, job_runs.c.status == "running")
                                        .values(status="succeeded", finished_at=env.clock(),
                                                counts=_sum_counts(conn, run_id)))
                run_status = "succeeded" if finished.rowcount == 1 else None
            conn.commit()  # the chunk's writes, its done mark and the run's progress, together
        if run_status:
            log.info("job run #%s (%s/%s) succeeded", run_id, run.app, run.job)
        return ChunkOutcome("done", attempt, run_status=run_status)
    except LeaseLost as e:
        log.warning("%s", e)
        return ChunkOutcome("skip", attempt)
    except Exception as e:  # recorded on the chunk; retried or fails the run
        return _chunk_failed(env, run, idx, attempt, e)


def _chunk_failed(env: JobEnv, run: Any, idx: int, attempt: int, e: Exception) -> ChunkOutcome:
    now, message = env.clock(), _describe(e)
    max_attempts = int(run.options.get("max_attempts", 1))
    final = isinstance(e, JobFailed) or attempt >= max_attempts
    delay = 0.0 if final else _backoff(run.options, attempt)
    c = job_chunks.c
    with env.engine.begin() as conn:
        res = conn.execute(job_chunks.update()
                           .where(c.run_id == run.id, c.idx == idx, c.status == "running", c.attempts == attempt)
                           .values(status="failed" if final else "queued", error=message, lease_until=None,
                                   finished_at=now if final else None,
                                   enqueued_at=now, available_at=now + dt.timedelta(seconds=delay)))
        if res.rowcount != 1:
            return ChunkOutcome("skip", attempt, message)
        if final:
            conn.execute(job_runs.update().where(job_runs.c.id == run.id, job_runs.c.status == "running")
                         .values(status="failed", finished_at=now,
                                 error=f"chunk {idx} failed (attempt {attempt} of {max_attempts}): {message}"))
    if final:
        log.error("job run #%s (%s/%s): chunk %s failed for good on attempt %s: %s", run.id, run.app, run.job,
                  idx, attempt, message)
        return ChunkOutcome("failed", attempt, message, run_status="failed")
    log.warning("job run #%s (%s/%s): chunk %s attempt %s failed, retry in %ss: %s", run.id, run.app, run.job,
                idx, attempt, delay, message)
    return ChunkOutcome("retry", attempt, message, [Dispatch(run.id, idx, delay, _timeout(run))])


def reap(env: JobEnv, now: dt.datetime | None = None) -> list[Dispatch]:
    """Take back what lost workers held and re-send what the queue lost:
    - a running chunk past its lease (its worker was killed, or its machine died) goes back to queued,
      or fails the run when it has used all its attempts;
    - a queued run or chunk nobody picked up within `stale_after_seconds` is sent again (claims are
      idempotent, so a duplicate message does nothing)."""
    now = now or env.clock()
    stale = now - dt.timedelta(seconds=env.stale_after_seconds)
    out: list[Dispatch] = []
    c, r = job_chunks.c, job_runs.c
    with env.engine.begin() as conn:
        lost = conn.execute(sa.select(c.run_id, c.idx, c.attempts, c.lease_until, r.options, r.app, r.job)
                            .select_from(job_chunks.join(job_runs, r.id == c.run_id))
                            .where(c.status == "running", c.lease_until < now, r.status == "running")).all()
        for ch in lost:
            max_attempts = int(ch.options.get("max_attempts", 1))
            message = (f"worker lost while running attempt {ch.attempts} (no result by "
                       f"{aware(ch.lease_until).isoformat()}: killed, crashed or timed out)")
            exhausted = ch.attempts >= max_attempts
            where = sa.and_(c.run_id == ch.run_id, c.idx == ch.idx, c.status == "running", c.attempts == ch.attempts)
            if exhausted:
                conn.execute(job_chunks.update().where(where).values(
                    status="failed", error=message, lease_until=None, finished_at=now))
                conn.execute(job_runs.update().where(r.id == ch.run_id, r.status == "running").values(
                    status="failed", finished_at=now,
                    error=f"chunk {ch.idx} failed (attempt {ch.attempts} of {max_attempts}): {message}"))
                log.error("job run #%s (%s/%s): chunk %s: %s; no attempts left", ch.run_id, ch.app, ch.job,
                          ch.idx, message)
            else:
                conn.execute(job_chunks.update().where(where).values(
                    status="queued", error=message, lease_until=None, enqueued_at=now, available_at=now))
                out.append(Dispatch(ch.run_id, ch.idx, 0.0, int(ch.options.get("timeout_seconds", 600))))
                log.warning("job run #%s (%s/%s): chunk %s: %s; queued again", ch.run_id, ch.app, ch.job,
                            ch.idx, message)
        for run in conn.execute(sa.select(r.id).where(r.status == "queued", sa.func.coalesce(
                r.enqueued_at, r.created_at) < stale)).all():
            conn.execute(job_runs.update().where(r.id == run.id).values(enqueued_at=now))
            out.append(Dispatch(run.id))
        for ch in conn.execute(sa.select(c.run_id, c.idx, r.options)
                               .select_from(job_chunks.join(job_runs, r.id == c.run_id))
                               .where(c.status == "queued", r.status == "running",
                                      sa.func.coalesce(c.enqueued_at, c.available_at) < stale,
                                      c.available_at < now)).all():
            conn.execute(job_chunks.update().where(c.run_id == ch.run_id, c.idx == ch.idx).values(enqueued_at=now))
            out.append(Dispatch(ch.run_id, ch.idx, 0.0, int(ch.options.get("timeout_seconds", 600))))
    return out
