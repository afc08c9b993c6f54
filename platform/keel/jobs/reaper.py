"""Taking back what lost workers held and re-sending what the queue never got. `reap` runs on every tick
of `keel scheduler`, every heartbeat of every `keel worker` (so no scheduler is needed for it) and on the
in-process runner's schedule; any number of them at once is safe, because every change is a
compare-and-set on what was read.

- A running chunk whose lease ran out goes back to queued (or fails its run when it has no attempt left):
  its worker stopped heartbeating (killed, crashed, its machine gone), or it ran past timeout + grace.
  The attempt is kept with the reason.
- A queued run or chunk the queue refused (`enqueued_at` NULL, see `queue.deliver`) is sent as soon as
  the queue takes it again; one nobody picked up within `stale_after_seconds` is sent again (claims are
  idempotent, so a duplicate message does nothing).

It reads first and writes only when there is something to take back: on SQLite a read takes no lock, so
the common "nothing to do" costs other writers nothing."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa

from keel.jobs import attempts
from keel.jobs.clock import aware
from keel.jobs.execute import Dispatch, JobEnv
from keel.storage.job_tables import job_chunks, job_runs

log = logging.getLogger("keel.jobs")


def reap(env: JobEnv, now: dt.datetime | None = None) -> list[Dispatch]:
    """Take back lost chunks and find what must be sent (again); returns the dispatches to deliver."""
    now = now or env.clock()
    stale = now - dt.timedelta(seconds=env.stale_after_seconds)
    c, r = job_chunks.c, job_runs.c
    unsent_or_stale = sa.or_(r.enqueued_at.is_(None), r.enqueued_at < stale)
    with env.engine.connect() as conn:
        lost = conn.execute(sa.select(c.run_id, c.idx, c.attempts, c.lease_until, c.started_at, r.options,
                                      r.app, r.job)
                            .select_from(job_chunks.join(job_runs, r.id == c.run_id))
                            .where(c.status == "running", c.lease_until < now, r.status == "running")).all()
        runs = conn.execute(sa.select(r.id).where(r.status == "queued", unsent_or_stale)).scalars().all()
        chunks = conn.execute(sa.select(c.run_id, c.idx, r.options)
                              .select_from(job_chunks.join(job_runs, r.id == c.run_id))
                              .where(c.status == "queued", r.status == "running",
                                     sa.or_(c.available_at.is_(None), c.available_at < now),
                                     sa.or_(c.enqueued_at.is_(None), c.enqueued_at < stale))).all()
    if not (lost or runs or chunks):
        return []
    out: list[Dispatch] = []
    with env.engine.begin() as conn:
        for ch in lost:
            out.extend(_take_back(env, conn, ch, now))
        for run_id in runs:
            if _mark_sent(conn, job_runs, sa.and_(r.id == run_id, r.status == "queued", unsent_or_stale), now):
                out.append(Dispatch(run_id))
        for ch in chunks:
            where = sa.and_(c.run_id == ch.run_id, c.idx == ch.idx, c.status == "queued",
                            sa.or_(c.enqueued_at.is_(None), c.enqueued_at < stale))
            if _mark_sent(conn, job_chunks, where, now):
                out.append(Dispatch(ch.run_id, ch.idx, 0.0, int(ch.options.get("timeout_seconds", 600))))
    return out


def _mark_sent(conn: sa.Connection, table: sa.Table, where, now: dt.datetime) -> bool:
    """Claim the re-sending of one run or chunk: only one reaper's UPDATE matches what all of them read."""
    return conn.execute(table.update().where(where).values(enqueued_at=now)).rowcount == 1


def _why_lost(env: JobEnv, conn: sa.Connection, ch: Any, timeout: int) -> tuple[str, str]:
    """(attempt outcome, message) for a chunk whose lease ran out."""
    lease_until = aware(ch.lease_until)
    started = aware(ch.started_at)
    if started is not None and lease_until >= started + dt.timedelta(seconds=timeout + env.lease_grace_seconds):
        return "timed_out", (f"timed out: attempt {ch.attempts} was still running after its timeout of {timeout} s "
                             f"(no result by {lease_until.isoformat()})")
    worker = attempts.worker_of(conn, ch.run_id, ch.idx, ch.attempts) or "its worker"
    last_beat = lease_until - dt.timedelta(seconds=env.lease_seconds)
    return "lost", (f"worker lost while running attempt {ch.attempts}: no heartbeat from {worker} since "
                    f"{last_beat.isoformat()} (killed, crashed or cut off)")


def _take_back(env: JobEnv, conn: sa.Connection, ch: Any, now: dt.datetime) -> list[Dispatch]:
    c, r = job_chunks.c, job_runs.c
    max_attempts = int(ch.options.get("max_attempts", 1))
    timeout = int(ch.options.get("timeout_seconds", 600))
    outcome, message = _why_lost(env, conn, ch, timeout)
    exhausted = ch.attempts >= max_attempts
    # The lease is checked again: a heartbeat may have renewed it since it was read.
    where = sa.and_(c.run_id == ch.run_id, c.idx == ch.idx, c.status == "running", c.attempts == ch.attempts,
                    c.lease_until < now)
    if exhausted:
        values = {"status": "failed", "error": message, "lease_until": None, "finished_at": now}
    else:
        values = {"status": "queued", "error": message, "lease_until": None, "enqueued_at": now,
                  "available_at": now}
    if conn.execute(job_chunks.update().where(where).values(**values)).rowcount != 1:
        return []
    attempts.ended(conn, ch.run_id, ch.idx, ch.attempts, outcome, now, message)
    if exhausted:
        conn.execute(job_runs.update().where(r.id == ch.run_id, r.status == "running").values(
            status="failed", finished_at=now,
            error=f"chunk {ch.idx} failed (attempt {ch.attempts} of {max_attempts}): {message}"))
        log.error("job run #%s (%s/%s): chunk %s: %s; no attempts left", ch.run_id, ch.app, ch.job, ch.idx, message)
        return []
    log.warning("job run #%s (%s/%s): chunk %s: %s; queued again", ch.run_id, ch.app, ch.job, ch.idx, message)
    return [Dispatch(ch.run_id, ch.idx, 0.0, timeout)]
