"""Running a run: start it (check who it acts for, plan the chunks) and run one chunk. The same
functions serve an RQ worker, the in-process runner and `keel jobs run`; they never enqueue anything
themselves but return what should be dispatched after their transaction committed (`Dispatch`), so the
caller does that (`keel.jobs.queue.deliver`). Taking back lost work is `keel.jobs.reaper`.

A chunk's life: queued -> running (a claim: attempts + 1, a short lease renewed by a heartbeat, see
`leases`) -> done, in ONE transaction with the chunk's own writes; or, on an error, back to queued with a
back-off (failed when its attempts are used up, which fails the run). Every attempt is kept with how it
ended (`attempts`). The run succeeds when its last chunk is done: a counter incremented in each chunk's
transaction, so exactly one of them sees the total."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from keel.actor import SYSTEM, Actor, job_via
from keel.jobs import attempts, leases
from keel.jobs.clock import Clock, aware
from keel.jobs.clock import now as system_now
from keel.jobs.types import JobContext, JobFailed, JobType, retry_can_help
from keel.storage.db import writes_later
from keel.storage.job_tables import job_chunks, job_runs

log = logging.getLogger("keel.jobs")
MAX_ERROR = 4000
MAX_CHUNKS = 100_000
SQLITE_HANDOVER_SECONDS = 0.1


@dataclass
class JobEnv:
    """What running jobs needs: the database, the built apps, the job types, and a clock."""

    engine: sa.Engine
    runtime: Any
    types: Mapping[str, JobType]  # by name: the registries the app was built with
    clock: Clock = system_now
    lease_grace_seconds: float = 30.0   # beyond the chunk timeout before a running chunk counts as lost
    stale_after_seconds: float = 300.0  # a queued run/chunk not picked up by then is sent again
    dispatcher: Any = None              # keel.jobs.queue.Dispatcher, when there is a queue
    # The process running a chunk renews its lease this often; a chunk whose lease (3 beats) ran out is
    # a lost worker's. Workers also take back lost work this often. (KEEL_JOB_HEARTBEAT_SECONDS)
    heartbeat_seconds: float = 10.0
    worker_name: str | None = None      # who runs chunks here (an RQ worker's name), for the history
    checkpoint_seconds: float = 0.5     # `JobContext.checkpoint` commits a transaction older than this

    @property
    def lease_seconds(self) -> float:
        return 3 * self.heartbeat_seconds


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
    # The run's writes name it (record versions, audit events): "job:APP/JOB#RUN" beside the user.
    actor = resolve_actor(conn, run.run_as).acting_via(job_via(run.app, run.job, run.id))
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
            if _superseded(conn, run, now):
                return []
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


def _superseded(conn: sa.Connection, run: Any, now: dt.datetime) -> bool:
    """A scheduled run that waited (the queue was down or busy) while a later fire time of its job was
    recorded: under catch_up `latest` (or `none`) only the most recent of them runs; this one is skipped."""
    if run.triggered_by != "scheduler" or run.options.get("catch_up", "all") == "all" or run.scheduled_for is None:
        return False
    r = job_runs.c
    newer = conn.execute(sa.select(r.id, r.scheduled_for).where(
        r.app == run.app, r.job == run.job, r.triggered_by == "scheduler", r.status != "skipped",
        r.scheduled_for > run.scheduled_for).order_by(r.scheduled_for.desc()).limit(1)).first()
    if newer is None:
        return False
    reason = (f"superseded by run #{newer.id} for {aware(newer.scheduled_for).isoformat()}: catch_up "
              f"'{run.options['catch_up']}' runs only the most recent of the scheduled runs that waited")
    conn.execute(job_runs.update().where(r.id == run.id).values(status="skipped", reason=reason[:500],
                                                                 finished_at=now))
    log.warning("job run #%s (%s/%s) skipped: %s", run.id, run.app, run.job, reason)
    return True


def _backoff(options: dict[str, Any], attempt: int) -> float:
    delays = options.get("backoff_seconds") or [0]
    return float(delays[min(attempt - 1, len(delays) - 1)])


def _claim(env: JobEnv, run_id: int, idx: int, now: dt.datetime) -> tuple[Any, Any, int] | None:
    with env.engine.begin() as conn:
        run = conn.execute(sa.select(job_runs).where(job_runs.c.id == run_id)).first()
        if run is None or run.status != "running":
            return None
        lease = leases.lease_until(env, now, leases.hard_limit(env, now, _timeout(run)))
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
        # The run's `attempts` is its most tried chunk's (or its start's): a retried chunk shows there.
        conn.execute(job_runs.update().where(job_runs.c.id == run_id, job_runs.c.attempts < chunk.attempts)
                     .values(attempts=chunk.attempts))
        attempts.started(conn, run_id, idx, chunk.attempts, env.worker_name or attempts.this_process(), now)
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
    limit = leases.hard_limit(env, now, _timeout(run))
    try:
        with leases.Heartbeat(env, run_id, idx, attempt, limit):
            return _run_claimed(env, run, chunk, attempt, limit, on_progress)
    except LeaseLost as e:
        log.warning("%s", e)
        with env.engine.begin() as conn:
            status = conn.execute(sa.select(job_chunks.c.status).where(
                job_chunks.c.run_id == run_id, job_chunks.c.idx == idx)).scalar()
            if status != "cancelled":  # a cancelled run's attempt keeps "cancelled" and who did it
                attempts.ended(conn, run_id, idx, attempt, "discarded", env.clock(),
                               f"{e}; this attempt's writes were rolled back")
        return ChunkOutcome("skip", attempt)
    except Exception as e:  # recorded on the chunk; retried or fails the run
        return _chunk_failed(env, run, idx, attempt, e)


def _run_claimed(env: JobEnv, run: Any, chunk: Any, attempt: int, limit: dt.datetime,
                 on_progress) -> ChunkOutcome:
    run_id, idx, c = run.id, chunk.idx, job_chunks.c
    # Who the run acts for is checked in a short transaction of its own. The chunk's transaction
    # then begins with its first statement (SQLAlchemy's autobegin), not before: on SQLite every
    # transaction holds the database's write lock, and work a job does before touching the
    # database (a slow upstream call) must not hold it.
    with env.engine.connect() as check:
        job_type, ctx = _context(env, check, run, attempt, idx, on_progress)
    with env.engine.connect() as conn:
        ctx.conn = writes_later(conn)
        ctx.on_checkpoint = _checkpointer(env, conn, run_id, idx, attempt, limit)
        counts = _check_counts(job_type.run_chunk(ctx, run.params, chunk.descriptor))
        finished = env.clock()
        done = conn.execute(job_chunks.update()
                            .where(c.run_id == run_id, c.idx == idx, c.status == "running", c.attempts == attempt)
                            .values(status="done", counts=counts, finished_at=finished, lease_until=None,
                                    error=None, problems=_kept_problems(ctx)))
        if done.rowcount != 1:
            raise LeaseLost(f"chunk {idx} of run #{run_id} was taken back while attempt {attempt} ran")
        attempts.ended(conn, run_id, idx, attempt, "done", finished)
        conn.execute(job_runs.update().where(job_runs.c.id == run_id)
                     .values(progress_done=job_runs.c.progress_done + 1))
        progress = conn.execute(sa.select(job_runs.c.progress_done, job_runs.c.progress_total)
                                .where(job_runs.c.id == run_id)).one()
        run_status = None
        if progress.progress_done >= (progress.progress_total or 0):
            ended = conn.execute(job_runs.update()
                                 .where(job_runs.c.id == run_id, job_runs.c.status == "running")
                                 .values(status="succeeded", finished_at=finished,
                                         counts=_sum_counts(conn, run_id)))
            run_status = "succeeded" if ended.rowcount == 1 else None
        conn.commit()  # the chunk's writes, its done mark and the run's progress, together
    if run_status:
        log.info("job run #%s (%s/%s) succeeded", run_id, run.app, run.job)
    return ChunkOutcome("done", attempt, run_status=run_status)


def _kept_problems(ctx: JobContext) -> list[str] | None:
    """A chunk's reported problems as stored: the first MAX_PROBLEMS, then a line counting the rest."""
    if not ctx.problems:
        return None
    more = ctx.problems_total - len(ctx.problems)
    return ctx.problems + ([f"... and {more} more problem(s) like these"] if more > 0 else [])


def _checkpointer(env: JobEnv, conn: sa.Connection, run_id: int, idx: int, attempt: int, limit: dt.datetime):
    """`JobContext.checkpoint` for this claim: commit what the chunk wrote so far once its transaction
    has been open `checkpoint_seconds`, renewing the lease in the same commit (so a chunk that was
    taken back meanwhile commits nothing more)."""
    opened = time.monotonic()

    def checkpoint() -> None:
        nonlocal opened
        if not conn.in_transaction():
            opened = time.monotonic()
            return
        if time.monotonic() - opened < env.checkpoint_seconds:
            return
        if not leases.renew(conn, env, run_id, idx, attempt, limit):
            raise LeaseLost(f"chunk {idx} of run #{run_id} was taken back while attempt {attempt} ran")
        conn.commit()
        if conn.dialect.name == "sqlite":
            # SQLite's lock is not handed over: a writer waiting for it polls, every 100 ms once it has
            # waited a while. Without a pause the next statement here takes the lock back first, always.
            time.sleep(SQLITE_HANDOVER_SECONDS)
        opened = time.monotonic()

    return checkpoint


def _chunk_failed(env: JobEnv, run: Any, idx: int, attempt: int, e: Exception) -> ChunkOutcome:
    now, message = env.clock(), _describe(e)
    max_attempts = int(run.options.get("max_attempts", 1))
    retryable = retry_can_help(e)
    final = not retryable or attempt >= max_attempts
    if not retryable and attempt < max_attempts and not isinstance(e, JobFailed):  # JobFailed says why itself
        message = f"{message} [not retried: trying again cannot help]"[:MAX_ERROR]
    delay = 0.0 if final else _backoff(run.options, attempt)
    c = job_chunks.c
    with env.engine.begin() as conn:
        res = conn.execute(job_chunks.update()
                           .where(c.run_id == run.id, c.idx == idx, c.status == "running", c.attempts == attempt)
                           .values(status="failed" if final else "queued", error=message, lease_until=None,
                                   finished_at=now if final else None,
                                   enqueued_at=now, available_at=now + dt.timedelta(seconds=delay)))
        if res.rowcount != 1:
            attempts.ended(conn, run.id, idx, attempt, "discarded", now,
                           f"{message} (raised after the chunk had been taken back)")
            return ChunkOutcome("skip", attempt, message)
        attempts.ended(conn, run.id, idx, attempt, "failed" if final else "error", now, message)
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
