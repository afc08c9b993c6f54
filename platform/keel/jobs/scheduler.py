"""`keel scheduler`: every tick, for each job with a cron schedule, find the fire times since the last
one handled (in the definition's time zone), record a run for each per the catch-up policy, and only
after that transaction commits hand the new runs to the queue. Then take back lost work (`reap`).

Two schedulers at once are safe: the last fired time per job is moved forward with a compare-and-set
(only one scheduler's UPDATE matches the value both read), and the run's idempotency key is UNIQUE, so
a period gets one run whichever scheduler wins. RQ's own cron scheduler has neither lock nor catch-up
(see LIBRARY-NOTES), which is why Keel keeps this state in its database.

Catch-up, for fire times missed while no scheduler ran (older than `on_time_grace`):
- `latest` (default): run only the most recent; the others are recorded as skipped;
- `all`: run each of them (at most `catch_up_cap`, the most recent; older ones are logged);
- `none`: record them as skipped; only a fire time that is due now runs.
A job seen for the first time starts from that tick: nothing before it is caught up."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

from keel.jobs import schedule
from keel.jobs.clock import Clock, aware, utc
from keel.jobs.definition import JobSpec, app_job_specs
from keel.jobs.execute import Dispatch, JobEnv
from keel.jobs.queue import deliver
from keel.jobs.reaper import reap
from keel.jobs.runs import record_skipped, request_run
from keel.storage.job_tables import job_schedules

log = logging.getLogger("keel.jobs.scheduler")

DEFAULT_INTERVAL = 15.0
CATCH_UP_CAP = 100


@dataclass
class TickReport:
    queued: list[int] = field(default_factory=list)     # new run ids
    skipped: list[int] = field(default_factory=list)    # skipped run ids (catch-up policy)
    resent: int = 0                                      # dispatches from the reaper
    errors: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, env: JobEnv, dispatcher, *, clock: Clock | None = None,
                 interval: float = DEFAULT_INTERVAL, catch_up_cap: int = CATCH_UP_CAP,
                 on_time_grace: float | None = None):
        self.env, self.dispatcher = env, dispatcher
        self.clock = clock or env.clock
        self.interval = interval
        self.catch_up_cap = catch_up_cap
        # A fire time this recent is "on time", not a catch-up (a tick may come late by an interval).
        self.on_time_grace = dt.timedelta(seconds=on_time_grace if on_time_grace is not None
                                          else max(2 * interval, 60.0))

    def specs(self) -> list[JobSpec]:
        self.env.runtime.refresh()
        out = []
        for built in self.env.runtime.apps():
            try:
                out.extend(s for s in app_job_specs(built.definition).values() if s.cron and s.enabled)
            except Exception as e:  # one broken app must not stop the others' schedules
                log.error("app %s: job definitions unusable: %s", built.id, e)
        return out

    def tick(self, now: dt.datetime | None = None) -> TickReport:
        now = utc(now or self.clock())
        report = TickReport()
        dispatches: list[Dispatch] = []
        for spec in self.specs():
            try:
                dispatches.extend(self._fire(spec, now, report))
            except Exception as e:  # runs stay queued in the database; the reaper re-sends
                log.exception("job %s/%s: scheduling failed", spec.app_id, spec.id)
                report.errors.append(f"{spec.app_id}/{spec.id}: {e}")
        resent = reap(self.env, now)
        report.resent = len(resent)
        # What the queue refuses stays queued, marked unsent: the next tick (or a worker) sends it.
        error = deliver(self.env, dispatches + resent, self.dispatcher)
        if error is not None:
            report.errors.append(str(error))
        return report

    def _fire(self, spec: JobSpec, now: dt.datetime, report: TickReport) -> list[Dispatch]:
        key = (job_schedules.c.app == spec.app_id, job_schedules.c.job == spec.id)
        with self.env.engine.begin() as conn:
            stored = conn.execute(sa.select(job_schedules.c.last_fired_at).where(*key)).scalar()
            if stored is None:
                _insert_schedule(conn, spec, now)
                return []
            times, truncated = schedule.due_times(spec.cron, spec.timezone, aware(stored), now, self.catch_up_cap)
            if not times:
                return []
            moved = conn.execute(job_schedules.update().where(*key, job_schedules.c.last_fired_at == stored)
                                 .values(last_fired_at=times[-1], updated_at=now))
            if moved.rowcount != 1:
                return []  # another scheduler handled these fire times
            if truncated:
                log.warning("job %s/%s: more than %s fire times were missed; only the most recent %s are "
                            "considered", spec.app_id, spec.id, self.catch_up_cap, self.catch_up_cap)
            missed = [t for t in times if now - t > self.on_time_grace]
            if spec.catch_up == "all":
                run, skip = times, []
            elif spec.catch_up == "latest":
                run, skip = times[-1:], times[:-1]
            else:
                run, skip = [t for t in times if t not in missed], missed
            out = []
            for t in run:
                asked = request_run(conn, spec, trigger="scheduler", now=now, scheduled_for=t)
                if asked.outcome == "queued":
                    report.queued.append(asked.run_id)
                    out.append(Dispatch(asked.run_id, timeout=spec.timeout_seconds))
                    log.info("job %s/%s: run #%s queued for %s", spec.app_id, spec.id, asked.run_id, t.isoformat())
            for t in skip:
                reason = (f"missed while no scheduler was running (catch_up: {spec.catch_up}"
                          + (", only the most recent missed run is caught up)" if spec.catch_up == "latest" else ")"))
                skipped = record_skipped(conn, spec, t, reason, now)
                if skipped is not None:
                    report.skipped.append(skipped)
        return out

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("scheduler started (every %ss)", self.interval)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # the database may be down for a moment: keep ticking
                log.exception("scheduler tick failed")
            stop.wait(self.interval)


def _insert_schedule(conn: sa.Connection, spec: JobSpec, now: dt.datetime) -> None:
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(job_schedules).values(app=spec.app_id, job=spec.id, last_fired_at=now, updated_at=now)
                 .on_conflict_do_nothing(index_elements=["app", "job"]))
    log.info("job %s/%s: scheduled '%s' in %s; next run %s", spec.app_id, spec.id, spec.cron, spec.timezone,
             schedule.next_fire(spec.cron, spec.timezone, now).isoformat())
