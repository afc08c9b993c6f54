"""`keel worker`, `keel scheduler` and `keel jobs list|run`, attached to the `keel` group by keel.cli.

Each command builds the app from the environment (KEEL_DATABASE_URL, KEEL_REDIS_URL ...), or uses the
Flask app in `ctx.obj["app"]` when one is given (tests, embedding). `python -m keel.cli worker` works as
well (the embedded set-up starts its worker that way)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import signal
import sys

import click

from keel.errors import FieldErrors, KeelError


def _flask_app():
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(dict) if ctx is not None else None
    if obj and obj.get("app") is not None:
        return obj["app"]
    from keel import create_app

    return create_app()


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("keel").setLevel(logging.INFO)


def _redis_dispatcher(app, for_worker: bool = False):
    from keel.jobs.queue import QueueUnavailable, RQDispatcher, redis_connection

    url = app.config.get("KEEL_REDIS_URL")
    if not url:
        raise click.ClickException("KEEL_REDIS_URL is not set: workers and the scheduler share jobs through "
                                   "Redis (`keel serve` runs jobs without it; `keel jobs run` needs none)")
    conn = redis_connection(url, timeout=None if for_worker else 5.0)
    dispatcher = RQDispatcher(url, app.config.get("KEEL_JOB_QUEUE", "keel"), connection=conn)
    try:
        dispatcher.require()
    except QueueUnavailable as e:
        raise click.ClickException(str(e)) from None
    return dispatcher


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--name", default=None,
              help="Worker name prefix (default: host and pid); a random suffix makes each start's name unique.")
@click.option("--no-scheduler", is_flag=True,
              help="Do not move delayed retries to the queue in this worker (another worker must).")
@click.option("--quiet", is_flag=True, help="Log warnings and errors only (each run is still recorded).")
def worker(burst: bool, name: str | None, no_scheduler: bool, quiet: bool) -> None:
    """Run an RQ worker on the "keel" queue: takes job runs and their chunks, and takes back lost work."""
    from keel.jobs import jobs_env
    from keel.jobs.tasks import set_worker_env
    from keel.jobs.worker import work

    _logging()
    app = _flask_app()
    dispatcher = _redis_dispatcher(app, for_worker=True)
    env = jobs_env(app)
    env.dispatcher = dispatcher
    set_worker_env(env)
    if quiet:
        logging.getLogger("keel").setLevel(logging.WARNING)
    work(env, dispatcher, name, burst=burst, with_scheduler=not no_scheduler,
         logging_level="WARNING" if quiet else "INFO")


def _parse_now(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    if t.tzinfo is None:
        raise click.BadParameter("give the time zone, e.g. 2025-11-01T02:00+08:00")
    return t


@click.command("scheduler")
@click.option("--once", is_flag=True, help="One tick, then exit.")
@click.option("--interval", default=15.0, show_default=True, type=float, help="Seconds between ticks.")
@click.option("--now", "now_text", default=None, help="With --once: the time to act at (ISO 8601 with zone).")
def scheduler(once: bool, interval: float, now_text: str | None) -> None:
    """Enqueue due job runs (cron in each job's time zone); catch up missed ones; reap lost work."""
    from keel.jobs import jobs_env
    from keel.jobs.scheduler import Scheduler

    _logging()
    now = _parse_now(now_text)
    if now is not None and not once:
        raise click.UsageError("--now only goes with --once")
    app = _flask_app()
    env = jobs_env(app)
    env.dispatcher = _redis_dispatcher(app)
    sched = Scheduler(env, env.dispatcher, interval=interval, clock=(lambda: now) if now else None)
    if once:
        report = sched.tick(now)
        click.echo(f"queued {len(report.queued)} run(s), skipped {len(report.skipped)}, re-sent {report.resent}")
        for e in report.errors:
            click.echo(f"error: {e}", err=True)
        if report.errors:
            sys.exit(1)
        return
    sched.run_forever()


@click.group("jobs")
def jobs_group() -> None:
    """List job definitions and run one now."""


@jobs_group.command("list")
def jobs_list() -> None:
    """Every job: app, job, type, cron, time zone, next run, last status."""
    from keel.jobs import jobs_env
    from keel.jobs.catalog import job_rows

    env = jobs_env(_flask_app())
    rows = job_rows(env, env.clock())
    header = ("APP", "JOB", "TYPE", "CRON", "TZ", "NEXT RUN", "LAST")
    table = [header] + [(r["app"], r["job"], r["type"], r["cron"] or "-", r["timezone"] if r["cron"] else "-",
                         r["next_run_local"] or "-", _last(r)) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
    if not rows:
        click.echo("(no app defines a job)")


LIST_MESSAGE = 100  # characters of a last run's error `keel jobs list` shows (the run has it whole)


def _last(row: dict) -> str:
    """The last run, with why it did not succeed, and the last success when that is an older run."""
    last, ok = row["last_run"], row["last_success"]
    if last is None:
        return "-"
    text = f"{last['status']} #{last['id']}"
    if last["status"] != "succeeded" and ok is not None:
        text += f" (succeeded #{ok['id']})"
    message = " ".join((last["error"] or "").split())
    if message and last["status"] not in ("queued", "running", "succeeded"):
        text += ": " + (message if len(message) <= LIST_MESSAGE else message[:LIST_MESSAGE - 1] + "…")
    return text


def _param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)  # numbers, true/false, lists and objects; anything else is text
    except ValueError:
        return key, raw


def _operator():
    """Who acts at the command line: the system, named after the operating-system user (audit trail)."""
    import getpass

    from keel.actor import SYSTEM

    try:
        who = getpass.getuser()
    except (OSError, KeyError):
        who = "unknown"
    return SYSTEM.acting_via(f"cli:{who}")


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP (what `timeout`, `kill` and a closed terminal send) stop a foreground run the way
    Ctrl+C does: its run is recorded as interrupted instead of staying "running" for ever."""
    from keel.jobs.catalog import Interrupted

    def stop(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@jobs_group.command("run")
@click.argument("name")
@click.option("--app", "app_id", default=None, help="The app, when several define NAME.")
@click.option("--param", "params", multiple=True, help="KEY=VALUE (JSON or text); repeat for several.")
@click.option("--force", is_flag=True,
              help="Run the period again although it already ran (idempotency); audited.")
def jobs_run(name: str, app_id: str | None, params: tuple[str, ...], force: bool) -> None:
    """Run job NAME now, here, in the foreground (no Redis needed); recorded like any run.

    Stopped with Ctrl+C, SIGTERM or SIGHUP, the run is recorded as interrupted (exit code 130)."""
    from keel.jobs import jobs_env
    from keel.jobs.catalog import Interrupted, ask, find_spec, merged_params, run_in_foreground

    override = dict(_param(p) for p in params)
    env = jobs_env(_flask_app())
    try:
        spec = find_spec(env, name, app_id)
        merged = merged_params(env, spec, override)
    except FieldErrors as e:
        raise click.ClickException("; ".join(f"{k}: {' '.join(v)}" for k, v in e.rendered().items())) from None
    except KeelError as e:
        raise click.ClickException(str(e)) from None
    asked = ask(env, spec, merged, trigger="cli", user_id=None, force=force, actor=_operator())
    if asked.outcome != "queued":
        hint = " (--force runs it again on purpose)" if asked.outcome == "skipped" else ""
        raise click.ClickException((asked.message or f"{spec.app_id}/{spec.id} already has a run for {asked.key}")
                                   + hint)
    click.echo(f"run #{asked.run_id}: {spec.app_id}/{spec.id} ({spec.type})" + (" forced" if force else ""))
    try:
        with _stop_signals_interrupt(), click.progressbar(length=1, label="chunks", show_pos=True) as bar:
            def on_chunk(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            run = run_in_foreground(env, asked.run_id, on_chunk)
    except (KeyboardInterrupt, Interrupted):
        click.echo(f"\nrun #{asked.run_id} interrupted; recorded as such, the period can run again", err=True)
        sys.exit(130)
    counts = ", ".join(f"{k}: {v}" for k, v in (run["counts"] or {}).items()) or "-"
    click.echo(f"run #{run['id']} {run['status']} in {run['duration_seconds']} s; counts: {counts}")
    if run["status"] != "succeeded":
        raise click.ClickException(run["error"] or f"run ended {run['status']}")


@jobs_group.command("cancel")
@click.argument("run_id", type=int)
@click.option("--reason", default=None, help="Why, kept with the run and in the audit trail.")
def jobs_cancel(run_id: int, reason: str | None) -> None:
    """Cancel queued or running run RUN_ID (e.g. one whose process is gone); audited.

    Its unfinished chunks are cancelled (a worker still running one has its writes rolled back) and the
    period can run again."""
    from keel.errors import Conflict, NotFound
    from keel.jobs import jobs_env
    from keel.jobs.catalog import cancel_run

    env = jobs_env(_flask_app())
    try:
        run = cancel_run(env, run_id, _operator(), reason)
    except (NotFound, Conflict) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"run #{run['id']} ({run['app']}/{run['job']}) {run['status']}: {run['error']}")
