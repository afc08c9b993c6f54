"""Running jobs in the foreground (`keel jobs run`), recording every run, idempotency of a period,
a job acting for a user re-checking that user's permissions, and the jobs API and page."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from keel.cli.jobs import jobs_group
from test_jobs_helpers import make_job_world, redis_queue_fixture, rq_dispatcher, run_status, work_until  # noqa: F401 - redis_queue_fixture is the `redis_queue` fixture

COUNT = {"type": "touch_records", "cron": "0 2 * * *", "timezone": "Asia/Shanghai", "chunk_size": 4,
         "params": {"entity": "project"}}
DIAG = {"type": "diagnostic", "chunk_size": 2, "params": {"items": 5},
        "retries": {"max": 2, "backoff_seconds": [0]}}
JOBS = {"count": COUNT, "diag": DIAG}


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_job_world(tmp_path, sqlite_url, JOBS)
    yield w
    w.engine.dispose()


def cli(world, *args):
    return CliRunner().invoke(jobs_group, list(args), obj={"app": world.app})


def test_jobs_run_in_the_foreground_records_the_run_with_progress_and_counts(tmp_path, db_url):
    world = make_job_world(tmp_path, db_url, JOBS)
    world.add_projects(10)
    r = cli(world, "run", "count")
    assert r.exit_code == 0, r.output
    assert "run #1: tracker/count (touch_records)" in r.output
    assert "chunks" in r.output  # the progress bar's label
    assert re.search(r"run #1 succeeded in [\d.]+ s; counts: records: 10", r.output)
    (run,) = world.runs()
    assert (run.status, run.triggered_by, run.counts, run.progress_done, run.progress_total) == \
        ("succeeded", "cli", {"records": 10}, 3, 3)
    assert run.started_at is not None and run.finished_at is not None
    assert [c.counts["records"] for c in world.chunks(run.id)] == [4, 4, 2]

    # The same period again: refused with the reason, and the refusal is on record as skipped.
    again = cli(world, "run", "count")
    assert again.exit_code == 1 and "already succeeded in run #1" in again.output
    runs = world.runs()
    assert [(r.status, r.idempotency_key) for r in runs] == [("succeeded", runs[0].period_key), ("skipped", None)]
    assert "already succeeded in run #1" in runs[1].reason
    world.engine.dispose()


def test_jobs_list_shows_schedule_zone_next_run_and_last_status(world):
    world.add_projects(1)
    cli(world, "run", "count")
    r = cli(world, "list")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["APP", "JOB", "TYPE", "CRON", "TZ", "NEXT", "RUN", "LAST"]
    count_line = next(line for line in lines if " count " in line)
    assert "0 2 * * *" in count_line and "Asia/Shanghai" in count_line and "T02:00:00+08:00" in count_line
    assert "succeeded #1" in count_line
    assert re.search(r"diag\s+diagnostic\s+-\s+-\s+-\s+-", r.output)


def test_unknown_job_and_bad_params_are_clear_errors_that_write_nothing(world):
    r = cli(world, "run", "nope")
    assert r.exit_code == 1 and "no job 'nope' (jobs: tracker/count, tracker/diag)" in r.output
    r = cli(world, "run", "diag", "--param", "items=-3")
    assert r.exit_code == 1 and "params/items: -3 is less than the minimum of 0" in r.output
    r = cli(world, "run", "diag", "--param", "itemz")
    assert r.exit_code != 0 and "expected KEY=VALUE" in r.output
    assert world.runs() == []


def test_a_chunk_that_fails_is_retried_and_a_chunk_out_of_attempts_fails_the_run(world):
    r = cli(world, "run", "diag", "--param", "fail_attempts=1")
    assert r.exit_code == 0, r.output
    run = world.runs()[-1]
    assert (run.status, run.counts) == ("succeeded", {"items": 5})
    assert [c.attempts for c in world.chunks(run.id)] == [2, 2, 2]

    r = cli(world, "run", "diag", "--param", "fail_attempts=3")
    assert r.exit_code == 1
    run = world.runs()[-1]
    assert run.status == "failed"
    assert run.error == ("chunk 0 failed (attempt 3 of 3): DiagnosticFailure: diagnostic failure on attempt 3 "
                         "(fail_attempts=3)")
    assert "diagnostic failure on attempt 3" in r.output


# ---- a job acting for a user ----------------------------------------------------------------------

def test_a_job_run_as_a_user_rechecks_that_users_permissions_when_it_runs(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.auth.directory import deactivate_user, find_user, set_roles

    jobs = {"as_mia": {**COUNT, "cron": None, "idempotency": "run", "run_as": "mia"},
            "as_ned": {**COUNT, "cron": None, "idempotency": "run", "run_as": "ned"}}
    for body in jobs.values():
        del body["cron"], body["timezone"]
    world = make_job_world(tmp_path, sqlite_url, jobs)
    world.add_projects(3)

    assert cli(world, "run", "as_mia").exit_code == 0  # the manager may read projects
    assert world.runs()[-1].counts == {"records": 3}

    r = cli(world, "run", "as_ned")  # no role that may read projects
    assert r.exit_code == 1
    run = world.runs()[-1]
    assert run.status == "failed" and run.progress_total is None  # stopped before planning anything
    assert run.error == "could not start: permission check failed for ned: user 'ned' may not read tracker/project"

    with world.engine.begin() as conn:  # mia loses the role, then leaves
        set_roles(conn, find_user(conn, "mia").id, [], SYSTEM)
    cli(world, "run", "as_mia")
    assert "user 'mia' may not read tracker/project" in world.runs()[-1].error
    with world.engine.begin() as conn:
        deactivate_user(conn, find_user(conn, "mia").id, SYSTEM)
    cli(world, "run", "as_mia")
    assert world.runs()[-1].error == ("could not start: run_as user 'mia' does not exist or is inactive; "
                                      "the job acts for that user and cannot run")
    world.engine.dispose()


def test_permission_revoked_mid_run_stops_the_next_chunk_without_retrying(world):
    """A run is re-checked before every chunk, not only at its start."""
    from keel.actor import SYSTEM
    from keel.auth.directory import find_user, set_roles
    from keel.jobs.execute import run_chunk, start_run

    world.reapply({"as_mia": {"type": "touch_records", "chunk_size": 2, "run_as": "mia",
                              "params": {"entity": "project"}}})
    world.add_projects(4)
    asked = _ask(world, "as_mia")
    first, second = start_run(world.env, asked)
    assert run_chunk(world.env, asked, first.chunk).status == "done"
    with world.engine.begin() as conn:
        set_roles(conn, find_user(conn, "mia").id, [], SYSTEM)  # no role: may not read projects
    outcome = run_chunk(world.env, asked, second.chunk)
    assert outcome.status == "failed" and outcome.attempt == 1  # no retry for a permission failure
    assert run_status(world, asked) == "failed"


def _ask(world, job: str) -> int:
    from keel.jobs.catalog import ask, find_spec

    spec = find_spec(world.env, job)
    return ask(world.env, spec, dict(spec.params), trigger="cli", user_id=None).run_id


# ---- API and page ---------------------------------------------------------------------------------

def test_api_lists_jobs_and_runs_for_admins_only(world):
    r = world.client.get("/api/v1/jobs", headers=world.headers())
    assert r.status_code == 200
    count = next(j for j in r.get_json()["jobs"] if j["job"] == "count")
    assert (count["cron"], count["timezone"], count["last_run"]) == ("0 2 * * *", "Asia/Shanghai", None)
    assert count["next_run_local"].endswith("T02:00:00+08:00")
    assert world.client.get("/api/v1/jobs", headers=world.headers("manager")).status_code == 403
    assert world.client.get("/api/v1/jobs").status_code == 401
    assert world.client.get("/api/v1/jobs/runs", headers=world.headers("manager")).status_code == 403
    r = world.client.get("/api/v1/jobs/runs?status=done&limit=0", headers=world.headers())
    assert r.status_code == 422 and set(r.get_json()["errors"]) == {"status", "limit"}
    assert world.client.get("/api/v1/jobs/runs/999", headers=world.headers()).status_code == 404


def test_api_run_is_202_for_an_admin_403_otherwise_and_409_while_queued(world, redis_queue):
    rq_dispatcher(world.env, redis_queue)
    world.add_projects(5)
    assert world.client.post("/api/v1/jobs/count/run", headers=world.headers("manager")).status_code == 403
    assert world.runs() == []

    r = world.client.post("/api/v1/jobs/count/run", headers=world.headers())
    assert r.status_code == 202, r.get_json()
    run_id = r.get_json()["run_id"]
    assert r.headers["Location"] == f"/api/v1/jobs/runs/{run_id}"
    assert r.get_json()["run"]["triggered_by"] == f"user:{world.user_ids['admin']}"

    again = world.client.post("/api/v1/jobs/count/run", headers=world.headers())
    assert again.status_code == 409
    assert again.get_json()["run"]["id"] == run_id and "already queued" in again.get_json()["error"]

    work_until(world.env, lambda: run_status(world, run_id) == "succeeded")
    run = world.client.get(f"/api/v1/jobs/runs/{run_id}", headers=world.headers()).get_json()
    assert (run["status"], run["counts"], len(run["chunks"])) == ("succeeded", {"records": 5}, 2)
    listed = world.client.get("/api/v1/jobs/runs?job=count&status=succeeded", headers=world.headers()).get_json()
    assert [x["id"] for x in listed["runs"]] == [run_id]


def test_api_run_refuses_unknown_jobs_and_bad_params_and_writes_nothing(world, redis_queue):
    rq_dispatcher(world.env, redis_queue)
    h = world.headers()
    assert world.client.post("/api/v1/jobs/nope/run", headers=h).status_code == 404
    r = world.client.post("/api/v1/jobs/diag/run", json={"params": {"items": "many"}}, headers=h)
    assert r.status_code == 422 and r.get_json()["errors"] == {"params/items": ["'many' is not of type 'integer'"]}
    r = world.client.post("/api/v1/jobs/diag/run", json={"app": "tracker", "when": "now"}, headers=h)
    assert r.status_code == 422 and list(r.get_json()["errors"]) == ["when"]
    assert world.client.post("/api/v1/jobs/diag/run", json=[1], headers=h).status_code == 400
    assert world.runs() == []
    r = world.client.post("/api/v1/jobs/diag/run", json={"app": "tracker", "params": {"sleep_seconds": 0.5}},
                          headers=h)
    assert r.status_code == 202 and world.runs()[0].params == {"items": 5, "sleep_seconds": 0.5}


def test_jobs_page_shows_jobs_and_runs_to_admins(world):
    import re as _re

    cli(world, "run", "diag", "--param", "fail_attempts=3")
    client = world.client
    with world.engine.begin() as conn:
        from keel.actor import SYSTEM
        from keel.auth.directory import add_user

        add_user(conn, "root", "Root", SYSTEM, password="a-Long-pass-phrase-42", is_admin=True)
        add_user(conn, "rita", "Rita", SYSTEM, password="a-Long-pass-phrase-42")

    def login(username):
        c = world.app.test_client()
        token = _re.search(r'name="csrf_token"[^>]*value="([^"]+)"', c.get("/login").text).group(1)
        c.post("/login", data={"username": username, "password": "a-Long-pass-phrase-42", "csrf_token": token})
        return c

    page = login("root").get("/admin/jobs")
    assert page.status_code == 200
    assert "0 2 * * *" in page.text and "Asia/Shanghai" in page.text
    assert "diagnostic failure on attempt 3" in page.text
    assert '<span class="status status-failed">失败</span>' in page.text  # status words in the reader's language
    assert ">failed<" not in page.text and ">scheduler<" not in page.text
    assert login("rita").get("/admin/jobs").status_code == 403
    assert client.get("/admin/jobs").status_code == 302  # not signed in: to the login page


def test_job_tables_are_part_of_the_system_tables():
    from keel.storage.system import metadata

    assert {"keel_job_runs", "keel_job_chunks", "keel_job_schedules"} <= set(metadata.tables)
    runs = metadata.tables["keel_job_runs"]
    assert any(isinstance(c, sa.UniqueConstraint) and [col.name for col in c.columns] ==
               ["app", "job", "idempotency_key"] for c in runs.constraints)
