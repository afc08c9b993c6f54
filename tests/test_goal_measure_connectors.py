"""The measures' connectors (issue 11 item 10): definitions on the generic file connector, sample files that
make the demo and these tests run offline, loaded by the generic `connector_sync` jobs — a second run
changes nothing (upsert by the source's id)."""
from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from helpers_goal_measure import REPO, World

SAMPLE = REPO / "plugins" / "keel_goal_agility" / "sample"
JOBS = {"sync_meeting_notes": ("meeting_note", 40), "sync_customer_feedback": ("customer_feedback", 12),
        "sync_market_signals": ("market_signal", 5), "sync_im_collaboration": ("collaboration_request", 124),
        "sync_crm_deals": ("crm_deal", 69)}


@pytest.fixture
def world(tmp_path, sqlite_url, monkeypatch):
    w = World(tmp_path, sqlite_url, monkeypatch)
    for f in SAMPLE.glob("*.csv"):
        shutil.copyfile(f, w.imports / f.name)
    yield w
    w.close()


def _run(world, job: str) -> dict:
    from keel.jobs import jobs_env
    from keel.jobs.catalog import ask, find_spec, run_in_foreground

    env = jobs_env(world.app)
    spec = find_spec(env, job, "goal_agility")
    return run_in_foreground(env, ask(env, spec, dict(spec.params), trigger="cli", user_id=None).run_id,
                             sleep=lambda s: None)


def test_every_sample_file_loads_through_its_connector_and_a_second_run_changes_nothing(world):
    for job, (entity, count) in JOBS.items():
        first = _run(world, job)
        assert first["status"] == "succeeded", (job, first["error"])
        assert (first["counts"]["created"], first["counts"]["invalid"]) == (count, 0), job
        again = _run(world, job)
        assert (again["counts"]["created"], again["counts"]["unchanged"]) == (0, count), job
        with world.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(world.built.table(entity))).scalar() == count


def test_mixed_chinese_and_english_feedback_is_stored_as_written(world):
    _run(world, "sync_customer_feedback")
    fb = world.built.table("customer_feedback")
    with world.engine.connect() as conn:
        text = conn.execute(sa.select(fb.c.text).where(fb.c.external_id == "F002")).scalar()
    assert text == "Renewal price is OK but we need more API quota, 扩容报价什么时候给？"


def test_a_bad_row_is_reported_and_the_rest_is_loaded(world):
    lines = (world.imports / "market_signals.csv").read_text("utf-8").splitlines()
    lines.append("S099,not-a-date,competitor_action,x,坏数据,upsell")
    (world.imports / "market_signals.csv").write_text("\n".join(lines) + "\n", "utf-8")
    run = _run(world, "sync_market_signals")
    assert run["status"] == "succeeded"
    assert (run["counts"]["created"], run["counts"]["invalid"]) == (5, 1)
