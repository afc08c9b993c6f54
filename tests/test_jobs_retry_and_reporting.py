"""What a connector job's run says and does when something goes wrong: only errors a retry can help are
retried (in the foreground and on workers), why an item was skipped reaches the run's record, a run's
attempts count its chunks' retries, a refused duplicate does not hide the last success, and the record
versions a job writes name the job and its run. Set up with keel.testing, as a plugin's tests would be."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from keel.testing import Instance, LoopbackServer, Reply
from test_jobs_helpers import redis_queue_fixture, rq_dispatcher, work_until  # noqa: F401 - the `redis_queue` fixture

ACTUAL = {"id": "actual", "label": {"zh": "实际", "en": "Actual"}, "title_field": "code",
          "fields": [{"id": "code", "type": "text", "label": "Code", "unique": True, "max_length": 40},
                     {"id": "amount", "type": "money", "label": "Amount", "currency": "CNY", "min": 0}],
          "permissions": []}
BACKOFF = 300  # a job's back-off: waited for (here: recorded in Instance.waits) only before a real retry


def app_files(server: LoopbackServer, *, connector: dict | None = None, job: dict | None = None) -> dict:
    conn = {"id": "crm", "type": "http_json", "allowlist": [server.allow], "secrets": {"token": "CRM_TOKEN"},
            "config": {"url": server.url("/api/actuals"), "items": "items",
                       "headers": {"Authorization": "Bearer {{ secrets.token }}"},
                       "pagination": {"type": "cursor", "next": "next", "cursor_param": "after"},
                       "retries": {"max": 0}, **(connector or {})}}
    sync = {"id": "crm_actuals", "type": "connector_sync", "cron": "0 3 * * *", "timezone": "Asia/Shanghai",
            "retries": {"max": 2, "backoff_seconds": [BACKOFF]},
            "params": {"connector": "crm", "entity": "actual", "key": "code",
                       "mapping": {"code": "code", "amount": "amount"}}, **(job or {})}
    return {"app.json": {"id": "sales", "version": "1", "label": {"zh": "销售", "en": "Sales"}},
            "entities/actual.json": ACTUAL, "connectors/crm.json": conn, "jobs/crm_actuals.json": sync}


@pytest.fixture
def crm(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "t0ken")
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def keel(tmp_path):
    with Instance(tmp_path) as inst:
        yield inst


ITEMS = {"items": [{"code": "A1", "amount": "4"}, {"code": "A2", "amount": "14"}], "next": None}


@pytest.mark.parametrize(("reply", "says"), [
    (Reply(401, body="bad token"), "HTTP 401: bad token"),
    (Reply(403, body="no"), "HTTP 403: no"),
    (Reply(404, body="gone"), "HTTP 404: gone"),
    (Reply(body=b'{"items": [ '), "malformed JSON in the response"),
    (Reply(json={"items": [{"code": "A1", "amount": "1"}], "next": "same"}), "returned cursor 'same' twice"),
])
def test_an_error_no_retry_can_help_fails_the_run_at_once(crm, keel, reply, says):
    crm.reply("/api/actuals", reply)
    keel.apply(app_files(crm))
    run = keel.run_job("crm_actuals")
    assert run["status"] == "failed" and says in run["error"], run["error"]
    assert "not retried: trying again cannot help" in run["error"]
    assert keel.waits == [] and run["attempts"] == 1  # no 300 s back-off for a wrong token
    assert [a["outcome"] for a in run["chunks"][0]["history"]] == ["failed"]
    assert keel.records("sales", "actual") == []


def test_a_missing_secret_is_not_retried_either(crm, keel, monkeypatch):
    monkeypatch.delenv("CRM_TOKEN")
    keel.apply(app_files(crm))
    run = keel.run_job("crm_actuals")
    assert run["status"] == "failed" and "environment variable not set: CRM_TOKEN" in run["error"]
    assert keel.waits == [] and crm.requests == []


@pytest.mark.parametrize("first", [Reply(503, body="busy"), Reply(429, headers={"Retry-After": "0"}),
                                   Reply(delay=60)])
def test_an_error_a_retry_can_help_is_retried_after_the_back_off_and_counted(crm, keel, first):
    crm.reply("/api/actuals", first, Reply(json=ITEMS))
    connector = {"timeout": 2, "rate_limit": {"max_waits": 0}}  # the prompt reply's margin on a busy machine
    keel.apply(app_files(crm, connector=connector))
    run = keel.run_job("crm_actuals")
    assert run["status"] == "succeeded", run["error"]
    assert keel.waits == [BACKOFF] and run["attempts"] == 2
    assert [a["outcome"] for a in run["chunks"][0]["history"]] == ["error", "done"]
    assert [r["code"] for r in keel.records("sales", "actual")] == ["A1", "A2"]


def test_on_a_worker_too_only_retryable_errors_are_retried(crm, tmp_path, redis_queue):
    with Instance(tmp_path) as keel:
        dispatcher = rq_dispatcher(keel.env, redis_queue)
        crm.reply("/api/actuals", Reply(401, body="bad token"))
        keel.apply(app_files(crm, job={"retries": {"max": 2, "backoff_seconds": [0]}}))
        first = keel.api("POST", "/jobs/crm_actuals/run").get_json()["run_id"]

        def status(run_id):
            return keel.api("GET", f"/jobs/runs/{run_id}").get_json()

        work_until(keel.env, lambda: status(first)["status"] == "failed")
        assert status(first)["attempts"] == 1 and len(crm.seen("/api/actuals")) == 1

        crm.reply("/api/actuals", Reply(502), Reply(json=ITEMS))
        second = keel.api("POST", "/jobs/crm_actuals/run").get_json()["run_id"]
        work_until(keel.env, lambda: status(second)["status"] == "succeeded")
        assert status(second)["attempts"] == 2
        assert dispatcher.queue_name == redis_queue[1]


def test_why_an_item_was_skipped_is_in_the_runs_record_api_and_page(crm, keel):
    crm.reply("/api/actuals", Reply(json={"items": [{"code": "A1", "amount": "4"}, {"code": "A2", "amount": "-1"},
                                                    {"amount": "3"}], "next": None}))
    keel.apply(app_files(crm))
    run = keel.run_job("crm_actuals")
    assert run["status"] == "succeeded" and run["counts"]["invalid"] == 2
    assert len(run["problems"]) == 2
    assert "item 2: field 'code' (path 'code'): value is missing" in run["problems"][0]
    assert "item 1 (key 'A2')" in run["problems"][1] and "amount" in run["problems"][1]
    assert keel.api("GET", f"/jobs/runs/{run['id']}").get_json()["problems"] == run["problems"]
    page = keel.browser().get(f"/admin/jobs/runs/{run['id']}").get_data(as_text=True)
    assert "item 2: field &#39;code&#39; (path &#39;code&#39;): value is missing" in page


def test_versions_written_by_a_job_name_the_job_and_run(crm, keel):
    crm.reply("/api/actuals", Reply(json=ITEMS))
    keel.apply(app_files(crm))
    run = keel.run_job("crm_actuals")
    a1 = keel.records("sales", "actual")[0]
    (version,) = keel.history("sales", "actual", a1["id"])
    assert version["via"] == f"job:sales/crm_actuals#{run['id']}" and version["user_id"] is None
    body = keel.api("GET", f"/apps/sales/actual/{a1['id']}/history").get_json()
    assert body["items"][0]["via"] == f"job:sales/crm_actuals#{run['id']}"
    from keel.storage.system import audit_events

    with keel.engine.connect() as conn:
        detail = conn.execute(sa.select(audit_events.c.detail).where(
            audit_events.c.action == "record.create", audit_events.c.record_id == a1["id"])).scalar()
    assert detail["via"] == f"job:sales/crm_actuals#{run['id']}"
    page = keel.browser().get(f"/apps/sales/actual/{a1['id']}").get_data(as_text=True)
    assert f"via job sales/crm_actuals run #{run['id']}" in page
    page = keel.browser(lang="zh").get(f"/apps/sales/actual/{a1['id']}").get_data(as_text=True)
    assert f"经由作业 sales/crm_actuals 运行 #{run['id']}" in page


def test_jobs_list_shows_the_failure_and_a_refused_duplicate_does_not_hide_the_last_success(crm, keel):
    from keel.cli.jobs import jobs_group

    crm.reply("/api/actuals", Reply(json=ITEMS))
    keel.apply(app_files(crm))
    ok = keel.run_job("crm_actuals")
    refused = keel.run_job("crm_actuals")
    assert refused["status"] == "skipped"
    jobs = keel.api("GET", "/jobs").get_json()["jobs"]
    assert jobs[0]["last_run"]["id"] == ok["id"] and jobs[0]["last_success"]["id"] == ok["id"]

    crm.reply("/api/actuals", Reply(401, body="token expired"))
    failed = keel.run_job("crm_actuals", force=True)
    out = CliRunner().invoke(jobs_group, ["list"], obj={"app": keel.app}).output
    line = next(x for x in out.splitlines() if "crm_actuals" in x)
    assert f"failed #{failed['id']} (succeeded #{ok['id']}): chunk 0 failed (attempt 1 of 3): " \
           "ConnectorError: HTTP 401: token expired" in line


def test_a_chunk_keeps_the_first_hundred_problems_and_counts_the_rest(crm, keel):
    crm.reply("/api/actuals", Reply(json={"items": [{"amount": str(i)} for i in range(250)], "next": None}))
    keel.apply(app_files(crm, job={"params": {"connector": "crm", "entity": "actual", "key": "code",
                                              "mapping": {"code": "code", "amount": "amount"},
                                              "allow_empty": True}}))
    run = keel.run_job("crm_actuals")
    assert run["status"] == "succeeded" and run["counts"]["invalid"] == 250
    assert len(run["problems"]) == 101 and run["problems"][-1] == "... and 150 more problem(s) like these"
