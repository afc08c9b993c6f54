"""The worked example of docs/plugins.md, "A job that reads a connector and writes records": the
`crm.actuals` job type of tests/fixtures/plugins/crm_actuals, run end to end against a CRM scripted on
127.0.0.1, with nothing but keel.testing for set-up (as a plugin's own tests would be)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keel.testing import Instance, LoopbackServer, Reply

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "plugins" / "crm_actuals"

GOAL = {"id": "goal", "label": {"zh": "目标", "en": "Goal"}, "title_field": "title",
        "fields": [{"id": "code", "type": "text", "label": "Code", "unique": True, "max_length": 40},
                   {"id": "title", "type": "text", "label": "Title", "required": True, "max_length": 200},
                   {"id": "target", "type": "money", "label": "Target", "currency": "CNY"},
                   {"id": "actual", "type": "money", "label": "Actual", "currency": "CNY", "read_only": True}]}


def app_files(crm: LoopbackServer) -> dict:
    deals = {"id": "crm_deals", "type": "http_json", "allowlist": [crm.allow], "secrets": {"token": "CRM_TOKEN"},
             "config": {"url": crm.url("/api/deals"), "items": "deals",
                        "headers": {"Authorization": "Bearer {{ secrets.token }}"},
                        "pagination": {"type": "cursor", "next": "next", "cursor_param": "after"},
                        "retries": {"max": 0}}}  # each request once: the job's retries are tested here
    job = {"id": "crm_actuals", "type": "crm.actuals", "cron": "0 3 * * *", "timezone": "Asia/Shanghai",
           "retries": {"max": 2, "backoff_seconds": [300]}, "params": {"connector": "crm_deals"}}
    return {"app.json": {"id": "sales", "version": "1", "label": {"zh": "销售", "en": "Sales"}},
            "entities/goal.json": GOAL, "connectors/crm_deals.json": deals, "jobs/crm_actuals.json": job}


@pytest.fixture
def crm(monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "t0ken")
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def keel(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "plugins" / "crm_actuals")  # a plugins folder with only the example
    with Instance(tmp_path, plugins=tmp_path / "plugins") as instance:
        yield instance


def test_the_crm_actuals_job_fills_goals_from_two_pages_of_deals(crm, keel):
    crm.handle("/api/deals", lambda req: Reply(json={
        "deals": [{"goal": "G1", "amount": "300000"}, {"goal": "G2", "amount": "4"}], "next": "p2"})
        if "after" not in req.query else Reply(json={
            "deals": [{"goal": "G1", "amount": "500000"}, {"goal": "G9", "amount": "1"}, {"goal": "G2"}],
            "next": None}))
    keel.apply(app_files(crm))
    g1 = keel.create_record("sales", "goal", {"code": "G1", "title": "Upsell revenue", "target": "800000"})
    keel.create_record("sales", "goal", {"code": "G2", "title": "New customers", "target": "14"})

    run = keel.run_job("crm_actuals")
    assert run["status"] == "succeeded", run["error"]
    assert run["counts"] == {"deals": 5, "updated": 2, "unchanged": 0, "skipped": 1}
    assert run["problems"] == ["deal 4: needs `goal` and a numeric `amount`; skipped",
                               "goal 'G9': no such goal; its deals are skipped"]
    assert [g["actual"] for g in keel.records("sales", "goal")] == ["800000.00", "4.00"]
    assert keel.history("sales", "goal", g1["id"])[-1]["via"] == f"job:sales/crm_actuals#{run['id']}"
    assert crm.seen("/api/deals")[0].headers["authorization"] == "Bearer t0ken"

    again = keel.run_job("crm_actuals", force=True)  # the same period again, on purpose
    assert again["counts"]["unchanged"] == 2 and len(keel.history("sales", "goal", g1["id"])) == 2


def test_the_crm_actuals_job_retries_only_what_a_retry_can_help(crm, keel):
    keel.apply(app_files(crm))
    crm.reply("/api/deals", Reply(503), Reply(json={"deals": [], "next": None}))
    assert keel.run_job("crm_actuals")["status"] == "succeeded" and keel.waits == [300]
    crm.reply("/api/deals", Reply(401, body="token expired"))
    run = keel.run_job("crm_actuals", force=True)
    assert run["status"] == "failed" and "HTTP 401: token expired" in run["error"]
    assert keel.waits == [300]  # no second wait: a retry cannot fix a token


def test_a_job_definition_the_type_cannot_run_is_refused_with_its_place(crm, keel):
    from keel.definitions.errors import DefinitionErrors

    files = app_files(crm)
    files["jobs/crm_actuals.json"]["params"] = {"connector": "crm_dealz", "entity": "goal"}
    with pytest.raises(DefinitionErrors) as e:
        keel.apply(files)
    assert "jobs/crm_actuals.json: /params/connector: no connector 'crm_dealz' in app 'sales'" in str(e.value)
