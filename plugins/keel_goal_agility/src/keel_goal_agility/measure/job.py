"""The `goal_agility.snapshot` job type: plan = check the period, import the month's CRM actuals and finance
forecasts, store the month's signals, cut the active goals into id ranges; each chunk = snapshot.take for
one range, in the chunk's transaction (so a killed worker's chunk leaves nothing and is simply run again)."""
from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from keel.errors import KeelError
from keel.jobs.types import JobContext, JobFailed, JobType
from keel_goal_agility.measure import inputs, signals, snapshot
from keel_goal_agility.measure.periods import PeriodError, check_finished, parse_period, previous_period
from keel_goal_agility.measure.tables import ensure_tables

DEFAULT_CHUNK = 5000


def _audit(conn, actor, app_id: str, detail: dict[str, Any]) -> None:
    from keel.storage.audit import record_event

    record_event(conn, actor, "goal_snapshot.flag", app=app_id, entity="goal", detail=detail)


class GoalSnapshot(JobType):
    name = "goal_agility.snapshot"
    label = "Goal Agility: monthly goal snapshot and red flags"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "period": {"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])$",
                       "description": "YYYY-MM; default: the month before the run's scheduled time"},
            "actuals_connector": {"type": "string", "minLength": 1, "maxLength": 64},
            "forecast_connector": {"type": "string", "minLength": 1, "maxLength": 64},
            "allow_no_actuals": {"type": "boolean",
                                 "description": "take the snapshot even when the CRM has no actual at all for the "
                                                "month (every goal then reads 'no data')"},
            # A lost-worker drill: one chunk waits on its first attempt, before it writes anything, so
            # a test (or an operator checking a deployment) can kill the worker at a known point of the
            # run rather than racing it. The retry of that chunk does not wait.
            "pause_chunk": {"type": "integer", "minimum": 0,
                            "description": "drill: the chunk (0-based) that waits pause_seconds on its first "
                                           "attempt, before writing anything"},
            "pause_seconds": {"type": "number", "minimum": 0, "maximum": 3600,
                              "description": "drill: how long pause_chunk waits"},
        },
        "dependentRequired": {"pause_chunk": ["pause_seconds"], "pause_seconds": ["pause_chunk"]},
    }

    def definition_errors(self, app_def, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        out = []
        for key in ("actuals_connector", "forecast_connector"):
            if key in params and not app_def.known("connector", params[key]):
                out.append((f"/{key}", f"no connector '{params[key]}' in app '{app_def.id}'"))
        if not app_def.known("entity", "goal"):
            out.append(("", f"app '{app_def.id}' has no entity 'goal'"))
        return out

    def params_problems(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Refused before a run is recorded (API 422, CLI error): a malformed or unfinished period."""
        if "period" not in params:
            return []
        try:
            check_finished(params["period"])
        except PeriodError as exc:
            return [("/period", str(exc))]
        return []

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        if not ctx.actor.is_admin:
            return f"user '{ctx.actor.username}' may not take goal snapshots (admins and the system only)"
        return None

    def period(self, ctx: JobContext, params: Mapping[str, Any]) -> str:
        period = params.get("period") or previous_period(ctx.scheduled_for or dt.datetime.now(dt.UTC))
        try:
            parse_period(period)
            check_finished(period)
        except PeriodError as exc:
            raise JobFailed(str(exc)) from None
        return period

    def plan(self, ctx: JobContext, params: Mapping[str, Any]) -> list[Any]:
        from keel.connectors.sync import SyncError

        period = self.period(ctx, params)
        ensure_tables(ctx.conn)
        try:
            ranges = prepare(ctx.conn, ctx.built, period, params, os.environ, ctx.chunk_size or DEFAULT_CHUNK,
                             ctx.log)
        except (SyncError, NoActuals) as exc:
            raise JobFailed(str(exc)) from None
        return [{"period": period, "lo": lo, "hi": hi} for lo, hi in ranges]

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        if ctx.attempt == 1 and ctx.chunk_index == params.get("pause_chunk"):
            # Before the chunk's first statement: its transaction has not begun, so the pause holds no
            # lock (on SQLite, the write lock) and the heartbeat keeps renewing the chunk's lease.
            ctx.log.info("pausing %s s before this chunk (pause_chunk drill)", params["pause_seconds"])
            time.sleep(params["pause_seconds"])
        built = ctx.built
        counts = snapshot.take(ctx.conn, built, chunk["period"], built.definition.settings,
                               (chunk["lo"], chunk["hi"]), run_id=ctx.run_id)
        _audit(ctx.conn, ctx.actor, ctx.app_id, {"period": chunk["period"], "run": ctx.run_id,
                                                 "goals": [chunk["lo"], chunk["hi"]], **counts})
        return counts


def prepare(conn, built, period: str, params: Mapping[str, Any], environ: Mapping[str, str], size: int,
            log=None) -> list[tuple[int, int]]:
    """What a run does before its chunks: import the month's CRM actuals and finance forecasts (rows that
    match no goal are reported in the period's import report and the log, never imported), store the
    month's signals, and cut the active goals into id ranges of `size`."""
    settings = built.definition.settings
    now = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {}
    for key, kind in (("actuals_connector", "actual"), ("forecast_connector", "forecast")):
        if params.get(key):
            report[kind] = inputs.import_connector(conn, built, params[key], kind, period, now, environ=environ)
            for p in report[kind]["problems"][:20] if log is not None else ():
                log.warning("%s: %s", params[key], p)
    if params.get("actuals_connector") and not params.get("allow_no_actuals") and not _has_actuals(conn, period):
        # A snapshot is immutable: taken before the CRM export arrived it would say "no data" for good.
        raise NoActuals(f"no CRM actual for {period} from connector '{params['actuals_connector']}' (is the "
                        "month's export in the import folder?); nothing was snapshotted. Run again once it is, "
                        "or with allow_no_actuals")
    signals.store(conn, period, signals.month_signals(conn, built, period, settings), report, now)
    return snapshot.id_ranges(conn, built, period, size)


class NoActuals(KeelError):
    """The month has no CRM actual at all: refuse to take an immutable snapshot of nothing."""


def _has_actuals(conn, period: str) -> bool:
    import sqlalchemy as sa

    from keel_goal_agility.measure.tables import metric_inputs

    t = metric_inputs.c
    return conn.execute(sa.select(t.goal_id).where(t.period == period, t.kind == "actual").limit(1)).first() is not None


def snapshot_now(engine, built, period: str, params: Mapping[str, Any], environ: Mapping[str, str],
                 size: int = DEFAULT_CHUNK, actor=None) -> dict[str, int]:
    """The whole snapshot of a period here and now, without the job queue (the demo and tests use it;
    the scheduled job runs the same steps as plan + chunks). Each range commits on its own."""
    from keel.actor import SYSTEM

    actor = actor or SYSTEM
    check_finished(period)
    ensure_tables(engine)
    with engine.begin() as conn:
        ranges = prepare(conn, built, period, params, environ, size)
    total: dict[str, int] = {}
    for lo, hi in ranges:
        with engine.begin() as conn:
            counts = snapshot.take(conn, built, period, built.definition.settings, (lo, hi))
            _audit(conn, actor, built.definition.id, {"period": period, "goals": [lo, hi], **counts})
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    return total
