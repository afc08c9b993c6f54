"""A run must never stay "running" for ever: `keel jobs run` stopped by Ctrl+C, SIGTERM (`timeout`) or
SIGHUP records its run as interrupted, and its period can run again (by hand and from the scheduler); an
admin cancels a stuck run from the CLI, the API or the jobs page; a period runs again on purpose with
--force. All of it is audited. The foreground runs here are real `keel jobs run` processes this test
starts and stops itself."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from helpers_timing import PATIENCE
from keel.cli.jobs import jobs_group, scheduler
from test_jobs_helpers import csrf_of, make_job_world, redis_queue_fixture, wait_for  # noqa: F401 - the `redis_queue` fixture

# A daily job keyed by its period (the default for a cron job): a second run of the period is refused.
SLOW = {"type": "diagnostic", "cron": "0 2 * * *", "timezone": "Asia/Shanghai", "chunk_size": 1,
        "retries": {"max": 1, "backoff_seconds": [0]}, "params": {"items": 3, "sleep_seconds": 0}}


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_job_world(tmp_path, sqlite_url, {"slow": SLOW})
    yield w
    w.engine.dispose()


def cli(world, *args, command=jobs_group):
    return CliRunner().invoke(command, list(args), obj={"app": world.app})


def start_foreground_run(world, *args: str) -> subprocess.Popen:
    env = {**os.environ, "KEEL_DATABASE_URL": world.engine.url.render_as_string(hide_password=False),
           "KEEL_INSTANCE_PATH": world.app.config["KEEL_INSTANCE_PATH"], "KEEL_ENV": "development",
           "KEEL_PLUGINS_PATH": ""}
    env.pop("KEEL_REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "keel.cli", "jobs", "run", "slow", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def attempts_of(world, run_id: int) -> list[tuple[int, int, str]]:
    from keel.storage.job_tables import job_attempts

    a = job_attempts.c
    with world.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(a.idx, a.attempt, a.outcome)
                                               .where(a.run_id == run_id).order_by(a.idx, a.attempt))]


def audit(world, action: str) -> list[dict]:
    from keel.storage.system import audit_events

    with world.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(audit_events)
                                                       .where(audit_events.c.action == action))]


@pytest.mark.parametrize(("sig", "named"), [(signal.SIGINT, "Ctrl+C"), (signal.SIGTERM, "SIGTERM"),
                                            (signal.SIGHUP, "SIGHUP")])
def test_a_stopped_foreground_run_is_recorded_as_interrupted_and_its_period_runs_again(world, sig, named):
    proc = start_foreground_run(world, "--param", "sleep_seconds=60")
    try:
        # Chunk 0 is running (its attempt recorded), sleeping in the job: stop the process there.
        wait_for(lambda: any(o == "running" for *_, o in attempts_of(world, 1)) if world.runs() else False,
                 "the foreground run to start its first chunk")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "run #1 interrupted" in err
    (run,) = world.runs()
    assert run.status == "interrupted" and named in run.error and run.finished_at is not None
    assert run.idempotency_key is None  # the period's key is free again
    assert attempts_of(world, 1) == [(0, 1, "interrupted")]
    assert [c.status for c in world.chunks(1)] == ["cancelled"] * 3
    (event,) = audit(world, "job.interrupted")
    assert event["detail"]["run"] == 1 and event["detail"]["signal"] == named

    listed = cli(world, "list").output
    assert f"interrupted #1: interrupted: the process running it in the foreground was stopped ({named})" in listed
    again = cli(world, "run", "slow")  # not "already running"
    assert again.exit_code == 0, again.output
    assert [r.status for r in world.runs()] == ["interrupted", "succeeded"]


def test_the_scheduler_is_not_blocked_by_an_interrupted_run(tmp_path, sqlite_url, redis_queue):
    from keel.jobs import schedule
    from keel.jobs.runs import stop_run
    from keel.storage.job_tables import job_schedules

    url, queue = redis_queue
    world = make_job_world(tmp_path, sqlite_url, {"slow": SLOW}, KEEL_REDIS_URL=url, KEEL_JOB_QUEUE=queue)
    now = dt.datetime.now(dt.UTC)
    period = schedule.latest_fire(SLOW["cron"], SLOW["timezone"], now)
    from keel.jobs.catalog import ask, find_spec

    spec = find_spec(world.env, "slow")
    asked = ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None)
    with world.engine.begin() as conn:  # the scheduler last fired the period before, so this one is due
        conn.execute(job_schedules.insert().values(app="tracker", job="slow", last_fired_at=period - dt.timedelta(days=1),
                                                   updated_at=now))
        stop_run(conn, asked.run_id, "interrupted", "interrupted: test", now)
    r = cli(world, "--once", "--now", (period + dt.timedelta(seconds=30)).isoformat(), command=scheduler)
    assert r.exit_code == 0, r.output
    assert "queued 1 run(s)" in r.output
    runs = world.runs()
    assert [(x.status, x.triggered_by) for x in runs] == [("interrupted", "cli"), ("queued", "scheduler")]
    assert runs[1].period_key == runs[0].period_key
    world.engine.dispose()


def test_an_admin_cancels_a_stuck_run_from_the_cli_api_and_page_and_each_is_audited(world):
    from keel.jobs.catalog import ask, find_spec
    from keel.jobs.execute import start_run

    spec = find_spec(world.env, "slow")

    def stuck() -> int:
        """A run left running by a process that died without a word (SIGKILL): started, never finished."""
        asked = ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None)
        start_run(world.env, asked.run_id)
        return asked.run_id

    first = stuck()
    refused = cli(world, "run", "slow")
    assert refused.exit_code == 1 and f"run #{first} of tracker/slow is already running" in refused.output
    r = cli(world, "cancel", str(first), "--reason", "its process was killed")
    assert r.exit_code == 0, r.output
    assert f"run #{first} (tracker/slow) cancelled: cancelled by system (cli:" in r.output
    assert "its process was killed" in r.output
    again = cli(world, "cancel", str(first))
    assert again.exit_code == 1 and f"run #{first} has already ended (cancelled)" in again.output
    assert cli(world, "cancel", "999").output.strip().endswith("no job run 999")

    second = stuck()
    path = f"/api/v1/jobs/runs/{second}/cancel"
    assert world.client.post(path, headers=world.headers("manager")).status_code == 403
    assert world.client.post(path, json={"reasn": "x"}, headers=world.headers()).status_code == 422
    resp = world.client.post(path, json={"reason": "stuck"}, headers=world.headers())
    assert resp.status_code == 200, resp.text
    assert resp.get_json()["run"]["status"] == "cancelled"
    assert resp.get_json()["run"]["error"] == "cancelled by ada: stuck"
    assert world.client.post(path, headers=world.headers()).status_code == 409
    assert world.client.post("/api/v1/jobs/runs/999/cancel", headers=world.headers()).status_code == 404

    third = stuck()
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user

    with world.engine.begin() as conn:
        root = add_user(conn, "root", "Root", SYSTEM, password="a-Long-pass-phrase-42", is_admin=True)
    browser = world.app.test_client()
    browser.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    browser.post("/login", data={"username": "root", "password": "a-Long-pass-phrase-42",
                                 "csrf_token": csrf_of(browser.get("/login").text)})
    page = browser.get(f"/admin/jobs/runs/{third}").text
    assert "Cancel this run" in page
    assert browser.post(f"/admin/jobs/runs/{third}/cancel").status_code == 400  # no CSRF token: refused
    assert [r.status for r in world.runs()][-1] == "running"
    done = browser.post(f"/admin/jobs/runs/{third}/cancel", data={"csrf_token": csrf_of(page)},
                        follow_redirects=True)
    assert done.status_code == 200 and f"Run #{third} is cancelled." in done.text
    assert "Cancel this run" not in done.text

    events = audit(world, "job.cancelled")
    assert [(e["detail"]["run"], e["user_id"], e["detail"]["was"]) for e in events] == [
        (first, None, "running"), (second, world.user_ids["admin"], "running"),
        (third, root, "running")]
    assert events[0]["detail"]["via"].startswith("cli:")
    # Each cancelled run gave up its period: the next one runs.
    assert cli(world, "run", "slow").exit_code == 0
    assert world.runs()[-1].status == "succeeded"


def test_a_worker_still_running_a_cancelled_chunk_commits_nothing(tmp_path, db_url):
    from keel.jobs.catalog import ask, cancel_run, find_spec
    from keel.jobs.execute import run_chunk, start_run
    from keel.storage.job_tables import job_chunks

    world = make_job_world(tmp_path, db_url, {"slow": SLOW})
    spec = find_spec(world.env, "slow")
    run_id = ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None).run_id
    start_run(world.env, run_id)
    original = world.env.types["diagnostic"]

    class CancelledMidway(type(original)):
        def run_chunk(self, ctx, params, chunk):
            from keel.storage import records

            cancel_run(world.env, run_id, _admin(world), "changed my mind")  # while the chunk runs
            records.create(ctx.conn, ctx.built, "project", {"name": "written after the cancel"}, ctx.actor)
            return super().run_chunk(ctx, params, chunk)

    world.env.types = {**world.env.types, "diagnostic": CancelledMidway()}
    outcome = run_chunk(world.env, run_id, 0)
    assert outcome.status == "skip"
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(job_chunks.c.status).where(job_chunks.c.run_id == run_id)
                            .order_by(job_chunks.c.idx)).scalars().all() == ["cancelled"] * 3
    assert [r.status for r in world.runs()] == ["cancelled"]
    assert attempts_of(world, run_id) == [(0, 1, "cancelled")]
    built = world.env.runtime.get("tracker")
    with world.engine.connect() as conn:  # the chunk's write rolled back with its refused "done" mark
        assert conn.execute(sa.select(sa.func.count()).select_from(built.table("project"))).scalar() == 0
    world.engine.dispose()


def _admin(world):
    from keel.auth.directory import get_actor

    with world.engine.connect() as conn:
        return get_actor(conn, world.user_ids["admin"])


def test_force_runs_a_period_again_on_purpose_and_is_audited(world):
    assert cli(world, "run", "slow").exit_code == 0
    refused = cli(world, "run", "slow")
    assert refused.exit_code == 1 and "already succeeded in run #1" in refused.output
    assert "--force runs it again on purpose" in refused.output
    forced = cli(world, "run", "slow", "--force")
    assert forced.exit_code == 0, forced.output
    assert "run #3: tracker/slow (diagnostic) forced" in forced.output
    runs = world.runs()
    assert [r.status for r in runs] == ["succeeded", "skipped", "succeeded"]
    assert runs[2].period_key == runs[0].period_key and runs[0].idempotency_key == runs[0].period_key

    resp = world.client.post("/api/v1/jobs/slow/run", json={"force": "yes"}, headers=world.headers())
    assert resp.status_code == 422 and resp.get_json()["errors"] == {"force": ["必须是“是”或“否”。"]}  # the user’s language (zh by default)
    resp = world.client.post("/api/v1/jobs/slow/run", headers=world.headers())
    assert resp.status_code == 503  # no queue here: refused before anything is written
    events = audit(world, "job.run_forced")
    assert [(e["detail"]["run"], e["detail"]["job"], e["user_id"]) for e in events] == [(3, "slow", None)]
    assert events[0]["detail"]["via"].startswith("cli:")


def test_force_through_the_api_is_audited_for_the_admin(tmp_path, sqlite_url, redis_queue):
    url, queue = redis_queue
    world = make_job_world(tmp_path, sqlite_url, {"slow": SLOW}, KEEL_REDIS_URL=url, KEEL_JOB_QUEUE=queue)
    assert world.client.post("/api/v1/jobs/slow/run", headers=world.headers()).status_code == 202
    # The first run is still queued: even a forced run does not double it.
    resp = world.client.post("/api/v1/jobs/slow/run", json={"force": True}, headers=world.headers())
    assert resp.status_code == 409 and "a forced run waits until it has ended" in resp.get_json()["error"]
    with world.engine.begin() as conn:
        from keel.storage.job_tables import job_runs

        conn.execute(job_runs.update().values(status="succeeded"))
    assert world.client.post("/api/v1/jobs/slow/run", headers=world.headers()).status_code == 409
    resp = world.client.post("/api/v1/jobs/slow/run", json={"force": True}, headers=world.headers())
    assert resp.status_code == 202, resp.text
    events = audit(world, "job.run_forced")
    assert [(e["user_id"], e["detail"]["run"]) for e in events] == [(world.user_ids["admin"], resp.get_json()["run_id"])]
    world.engine.dispose()
