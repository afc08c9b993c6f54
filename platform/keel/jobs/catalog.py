"""The jobs the running apps define: finding one by name, listing all with their next and last run
(what `keel jobs list`, `GET /api/v1/jobs` and /admin/jobs show), and running one now."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from keel.actor import SYSTEM, Actor
from keel.errors import Conflict, FieldErrors, Message, NotFound
from keel.jobs import schedule
from keel.jobs.definition import JobSpec, app_job_specs, params_errors
from keel.jobs.execute import Dispatch, JobEnv, run_chunk, start_run
from keel.jobs.runs import SHOWN_AS_LAST, Requested, get_run, last_runs, request_run, stop_run
from keel.storage.audit import record_event


def all_specs(env: JobEnv) -> list[JobSpec]:
    env.runtime.refresh()
    out: list[JobSpec] = []
    for built in sorted(env.runtime.apps(), key=lambda b: b.id):
        out.extend(app_job_specs(built.definition).values())
    return out


def find_spec(env: JobEnv, name: str, app: str | None = None) -> JobSpec:
    """The job called `name` (in `app`, when given). NotFound names what exists; a name defined by
    several apps needs `app`."""
    specs = [s for s in all_specs(env) if s.id == name and (app is None or s.app_id == app)]
    if not specs:
        known = ", ".join(f"{s.app_id}/{s.id}" for s in all_specs(env)) or "none"
        where = f" in app '{app}'" if app else ""
        raise NotFound(f"no job '{name}'{where} (jobs: {known})")
    if len(specs) > 1:
        errors = FieldErrors()
        errors.add("app", "Job %(job)s is defined by several apps (%(apps)s): name the app.",
                   job=name, apps=", ".join(s.app_id for s in specs))
        raise errors
    return specs[0]


def next_run(spec: JobSpec, now: dt.datetime) -> dt.datetime | None:
    if not spec.cron or not spec.enabled:
        return None
    return schedule.next_fire(spec.cron, spec.timezone, now)


def job_rows(env: JobEnv, now: dt.datetime) -> list[dict[str, Any]]:
    specs = all_specs(env)
    with env.engine.connect() as conn:
        last = last_runs(conn, SHOWN_AS_LAST)
        succeeded = last_runs(conn, ("succeeded",))
    rows = []
    for s in specs:
        nxt = next_run(s, now)
        rows.append({"app": s.app_id, "job": s.id, "type": s.type, "label": {"zh": s.label.zh, "en": s.label.en},
                     "cron": s.cron, "timezone": s.timezone, "enabled": s.enabled,
                     "next_run": nxt.isoformat() if nxt else None,
                     "next_run_local": nxt.astimezone(schedule.zone(s.timezone)).isoformat() if nxt else None,
                     "idempotency": s.idempotency, "catch_up": s.catch_up, "run_as": s.run_as,
                     "last_run": last.get((s.app_id, s.id)), "last_success": succeeded.get((s.app_id, s.id))})
    return rows


def merged_params(env: JobEnv, spec: JobSpec, override: Mapping[str, Any] | None) -> dict[str, Any]:
    """The definition's params with `override` on top, checked against the type's params schema.
    FieldErrors (keys `params/...`) when they do not fit."""
    params = {**spec.params, **(override or {})}
    job_type = env.types.get(spec.type)
    errors = FieldErrors()
    if job_type is None:
        errors.add("type", "Unknown job type %(type)s.", type=spec.type)
    else:
        for ptr, message in params_errors(job_type, params):
            # The JSON Schema validator's own words (English, like definition errors): a value, not
            # a msgid, so it is shown as it is.
            errors.errors.setdefault("params" + ptr, []).append(Message(message))
        check = getattr(job_type, "params_problems", None)  # optional for job types not built on JobType
        if not errors and check is not None:
            for ptr, message in check(params):
                errors.errors.setdefault("params" + ptr, []).append(Message(message))
    if errors:
        raise errors
    return params


def ask(env: JobEnv, spec: JobSpec, params: dict[str, Any], *, trigger: str, user_id: int | None,
        force: bool = False, actor: Actor | None = None) -> Requested:
    """Record a run of `spec` now, in its own transaction. The caller dispatches after this returns.
    A forced run (`force`: the period again, on purpose) is audited as `job.run_forced` by `actor`."""
    with env.engine.begin() as conn:
        asked = request_run(conn, spec, trigger=trigger, now=env.clock(), user_id=user_id, params=params,
                            force=force)
        if force and asked.outcome == "queued":
            record_event(conn, actor or SYSTEM, "job.run_forced", app=spec.app_id,
                         detail={"job": spec.id, "run": asked.run_id, "key": asked.key, "trigger": trigger})
        return asked


def cancel_run(env: JobEnv, run_id: int, actor: Actor, reason: str | None = None) -> dict[str, Any]:
    """Cancel a queued or running run for `actor` (audited as `job.cancelled`); returns the run.
    NotFound for an unknown run, Conflict for one that has already ended."""
    with env.engine.begin() as conn:
        run = get_run(conn, run_id)
        if run is None:
            raise NotFound(f"no job run {run_id}")
        who = actor.username + (f" ({actor.via})" if actor.via else "")
        why = f"cancelled by {who}" + (f": {reason}" if reason else "")
        if not stop_run(conn, run_id, "cancelled", why, env.clock()):
            raise Conflict(f"run #{run_id} has already ended ({run['status']}); only a queued or running run "
                           f"can be cancelled")
        record_event(conn, actor, "job.cancelled", app=run["app"],
                     detail={"job": run["job"], "run": run_id, "was": run["status"], "reason": reason or ""})
        return get_run(conn, run_id)  # type: ignore[return-value]


class Interrupted(BaseException):
    """The process running a run in the foreground was asked to stop (SIGTERM, SIGHUP): raised in the
    main thread by `keel jobs run`'s signal handler, like KeyboardInterrupt for Ctrl+C."""


def run_in_foreground(env: JobEnv, run_id: int, on_chunk: Callable[[int, int], None] | None = None,
                      sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run a recorded run here and now, chunk after chunk, with retries and their back-off; no queue.
    `on_chunk(done, total)` reports progress. Returns the finished run."""
    import time

    sleep = sleep or time.sleep
    try:
        pending = start_run(env, run_id)
        total = len(pending)
        done = 0
        if on_chunk:
            on_chunk(0, total)
        while pending:
            d: Dispatch = pending.pop(0)
            if d.delay:
                sleep(d.delay)
            outcome = run_chunk(env, d.run_id, d.chunk)  # type: ignore[arg-type]
            if outcome.status == "retry":
                pending.insert(0, outcome.follow_up[0])
                continue
            if outcome.status == "failed":
                break
            if outcome.status == "skip" and _ended(env, run_id):
                break  # cancelled meanwhile
            done += 1
            if on_chunk:
                on_chunk(done, total)
    except (KeyboardInterrupt, Interrupted) as e:
        # The chunk that was running rolled back with its transaction; chunks done before it stay. The
        # run must not stay "running" for ever, holding its period's key: it ends here as interrupted.
        signal_name = "Ctrl+C" if isinstance(e, KeyboardInterrupt) else (str(e) or "a signal")
        with env.engine.begin() as conn:
            if stop_run(conn, run_id, "interrupted", f"interrupted: the process running it in the foreground "
                        f"was stopped ({signal_name}); the unfinished chunk's writes were rolled back", env.clock()):
                record_event(conn, SYSTEM, "job.interrupted", app=_app_of(conn, run_id),
                             detail={"run": run_id, "signal": signal_name})
        raise
    with env.engine.connect() as conn:
        return get_run(conn, run_id)  # type: ignore[return-value]


def _ended(env: JobEnv, run_id: int) -> bool:
    with env.engine.connect() as conn:
        run = get_run(conn, run_id)
    return run is None or run["status"] not in ("queued", "running")


def _app_of(conn, run_id: int) -> str | None:
    run = get_run(conn, run_id)
    return run["app"] if run else None
