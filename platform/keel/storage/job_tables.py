"""The tables of background jobs: every run (queued, running, finished or skipped), the chunks a run is
split into, every attempt at a chunk, and the last time the scheduler fired each job. They live on the system metadata, so
`create_system_tables` creates them with the rest of Keel's own tables.

Times are stored in UTC. SQLite keeps no time zone with a value, so every writer converts to UTC first
(`keel.jobs.clock.utc`) and every reader reads values back as UTC (`keel.jobs.clock.aware`)."""
from __future__ import annotations

import sqlalchemy as sa

from keel.storage.system import metadata

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


# Run statuses, in the order a run moves through them; `skipped` runs never start. `interrupted`: the
# process running it in the foreground (`keel jobs run`) was stopped (Ctrl+C, SIGTERM); `cancelled`: an
# admin stopped it. Both give up the run's idempotency key, so the period can run again.
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "skipped", "interrupted", "cancelled")
CHUNK_STATUSES = ("queued", "running", "done", "failed", "cancelled")
# How an attempt at a chunk ended: still `running`; `done` (committed); `error` (raised, tried again);
# `failed` (raised, no attempt left, or a failure no retry fixes); `lost` (its worker stopped
# heartbeating); `timed_out` (still running past timeout + grace); `discarded` (finished after it had
# been taken back: its writes were rolled back); `interrupted` / `cancelled` (its run was, while it ran:
# its writes were rolled back).
ATTEMPT_OUTCOMES = ("running", "done", "error", "failed", "lost", "timed_out", "discarded", "interrupted",
                    "cancelled")

job_runs = sa.Table(
    "keel_job_runs", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    # The key that makes a period run once: UNIQUE with app and job, so two schedulers (or a scheduler
    # and an admin) asking for the same period collide here and only one of them enqueues. NULL for a
    # skipped request that lost to an existing run (NULLs never collide), which keeps it on record.
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("period_key", sa.String(200), nullable=False),  # the key asked for, kept for every row
    _ts("scheduled_for"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(500)),        # why a run was skipped
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("params", sa.JSON(), nullable=False),
    # What the definition said when the run was asked for (timeout, retries, chunk size, run_as), so a
    # definition changed mid-run does not change a run already under way.
    sa.Column("options", sa.JSON(), nullable=False),
    sa.Column("run_as", sa.String(150)),
    sa.Column("triggered_by", sa.String(64), nullable=False),  # "scheduler", "cli", "user:<id>"
    sa.Column("triggered_by_user", sa.BigInteger()),
    _ts("created_at", nullable=False),
    # Last handed to the queue; NULL: recorded, but the queue refused it (sent as soon as it is back).
    # The reaper re-sends a run stuck in `queued`.
    _ts("enqueued_at"),
    _ts("started_at"),
    _ts("finished_at"),
    sa.Column("counts", sa.JSON()),
    sa.Column("error", sa.Text()),
    sa.Column("progress_done", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("progress_total", sa.Integer()),
    sa.UniqueConstraint("app", "job", "idempotency_key", name="uq_keel_job_runs_key"),
    sa.Index("ix_keel_job_runs_job", "app", "job", "id"),
    sa.Index("ix_keel_job_runs_status", "status"),
)

job_chunks = sa.Table(
    "keel_job_chunks", metadata,
    sa.Column("run_id", sa.ForeignKey("keel_job_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("idx", sa.Integer(), primary_key=True),
    sa.Column("descriptor", sa.JSON(), nullable=False),  # what the job type's plan() returned
    sa.Column("status", sa.String(16), nullable=False),
    # Incremented by every claim; a worker's "done" mark only lands when attempts still equals its own
    # claim, so a worker presumed dead (lease expired, chunk re-claimed) cannot commit a second time.
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    # A running chunk past this is a lost worker's: the reaper takes it back. Short, and renewed by the
    # heartbeat of the process running the chunk, up to the hard limit of timeout + grace.
    _ts("lease_until"),
    _ts("available_at"),  # a retried chunk waits for its back-off until then
    _ts("enqueued_at"),   # as for runs: NULL when the queue refused it
    _ts("started_at"),
    _ts("finished_at"),
    sa.Column("counts", sa.JSON()),
    sa.Column("error", sa.Text()),
    # What the chunk's job reported about the items it skipped or could not write (`JobContext.report`),
    # committed with its done mark: the run's record says why, not only the worker's log.
    sa.Column("problems", sa.JSON()),
    sa.Index("ix_keel_job_chunks_status", "status"),
)

job_attempts = sa.Table(
    "keel_job_attempts", metadata,
    sa.Column("run_id", sa.ForeignKey("keel_job_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("idx", sa.Integer(), primary_key=True),
    sa.Column("attempt", sa.Integer(), primary_key=True),  # the chunk's `attempts` after this claim
    sa.Column("worker", sa.String(200)),                   # which worker (process) ran it
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    sa.Column("outcome", sa.String(16), nullable=False),   # ATTEMPT_OUTCOMES
    sa.Column("error", sa.Text()),                          # the exception, or why it was taken back
)

job_schedules = sa.Table(
    "keel_job_schedules", metadata,
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(64), primary_key=True),
    # The last due time handled (run, or recorded as skipped); catch-up starts after it.
    _ts("last_fired_at", nullable=False),
    _ts("updated_at", nullable=False),
)
