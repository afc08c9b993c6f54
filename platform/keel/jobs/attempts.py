"""Every attempt at a chunk, kept with the run: who ran it, when, how it ended and why (the exception,
"worker lost", a timeout). The chunk row says only how the latest attempt ended; this history is what the
run's API answer and the jobs page show, so a retry is explained without the worker's log.

Each function takes the caller's connection: an attempt's start is written with its claim and its end with
whatever ended it (the chunk's own commit, its failure, the reaper), so the history never disagrees with
the chunk."""
from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import sqlalchemy as sa

from keel.jobs.clock import aware
from keel.storage.job_tables import job_attempts

MAX_ERROR = 4000


def this_process() -> str:
    """host:pid, for a run executed outside a named worker (in process, `keel jobs run`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def started(conn: sa.Connection, run_id: int, idx: int, attempt: int, worker: str, at: dt.datetime) -> None:
    conn.execute(job_attempts.insert().values(run_id=run_id, idx=idx, attempt=attempt, worker=worker[:200],
                                              started_at=at, outcome="running"))


def ended(conn: sa.Connection, run_id: int, idx: int, attempt: int, outcome: str, at: dt.datetime,
          error: str | None = None) -> None:
    a = job_attempts.c
    conn.execute(job_attempts.update().where(a.run_id == run_id, a.idx == idx, a.attempt == attempt)
                 .values(outcome=outcome, finished_at=at, error=error[:MAX_ERROR] if error else None))


def worker_of(conn: sa.Connection, run_id: int, idx: int, attempt: int) -> str | None:
    a = job_attempts.c
    return conn.execute(sa.select(a.worker).where(a.run_id == run_id, a.idx == idx, a.attempt == attempt)).scalar()


def history(conn: sa.Connection, run_id: int) -> dict[int, list[dict[str, Any]]]:
    """Chunk index -> its attempts, oldest first."""
    out: dict[int, list[dict[str, Any]]] = {}
    a = job_attempts.c
    for r in conn.execute(sa.select(job_attempts).where(a.run_id == run_id).order_by(a.idx, a.attempt)):
        started_at, finished_at = aware(r.started_at), aware(r.finished_at)
        out.setdefault(r.idx, []).append({
            "attempt": r.attempt, "worker": r.worker, "outcome": r.outcome, "error": r.error,
            "started_at": started_at.isoformat(), "finished_at": finished_at.isoformat() if finished_at else None,
            "duration_seconds": round((finished_at - started_at).total_seconds(), 3) if finished_at else None})
    return out
