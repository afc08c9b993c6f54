"""The monthly goal snapshot (issue 11 item 3): actual from the CRM connector, expected to date from the
target and the pacing, deviation, finance forecast deviation, red flags strictly above the threshold,
"no data" instead of 0%, immutable rows, reruns that change nothing, and the periods it refuses."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from helpers_goal_measure import Q4, World, apps_with_pacing


@pytest.fixture
def world(tmp_path, db_url, monkeypatch):
    w = World(tmp_path, db_url, monkeypatch)
    yield w
    w.close()


def test_deviation_above_the_threshold_is_red_and_exactly_15_percent_is_not(world):
    exact_below = world.goal("rep_a", "新增客户数", 100)
    just_below = world.goal("rep_b", "新增客户数", 100)
    exact_above = world.goal("rep_a", "续约客户数", 100)
    just_above = world.goal("rep_b", "续约客户数", 100)
    no_data = world.goal("cro", "新增客户数", 40)
    rate = world.goal("cro", "续约率", 90, unit="percent")
    world.actuals([["2025-10", "rep_a", "新增客户数", "85"], ["2025-10", "rep_b", "新增客户数", "84.99"],
                   ["2025-10", "rep_a", "续约客户数", "115"], ["2025-10", "rep_b", "续约客户数", "115.01"],
                   ["2025-10", "cro", "续约率", "93"]])
    world.forecasts([["2025-10", "rep_a", "新增客户数", "80"]])

    run = world.run_snapshot("2025-10")

    assert run["status"] == "succeeded", run["error"]
    assert run["counts"] == {"snapshotted": 6, "red": 2, "no_data": 1, "ok": 3}
    snaps = world.snapshots("2025-10")
    assert {g: snaps[g].status for g in snaps} == {exact_below: "ok", just_below: "red", exact_above: "ok",
                                                   just_above: "red", no_data: "no_data", rate: "ok"}
    assert snaps[exact_below].deviation == Decimal("-0.15")
    assert snaps[exact_below].forecast_deviation == Decimal("-0.2")
    assert snaps[rate].expected == Decimal("90") and snaps[rate].actual == Decimal("93")
    # "no data", not 0%: actual and deviation stay empty on the snapshot and on the goal.
    assert snaps[no_data].actual is None and snaps[no_data].deviation is None
    goal = world.goal_row(no_data)
    assert (goal.deviation, goal.flag, goal.last_snapshot) == (None, "none", "2025-10")
    goal = world.goal_row(just_below)
    assert (goal.deviation, goal.flag, goal.last_snapshot) == (Decimal("-0.1501"), "red", "2025-10")
    assert world.goal_row(exact_below).flag == "none"


def test_expected_to_date_follows_linear_pacing_over_the_goals_period(world):
    quarter = world.goal("rep_a", "新增客户数", 92, **Q4)  # 92 days: one a day
    world.actuals([["2025-10", "rep_a", "新增客户数", "31"]])
    world.run_snapshot("2025-10")
    snap = world.snapshots("2025-10")[quarter]
    assert (snap.expected, snap.actual, snap.deviation, snap.status) == (Decimal("31"), Decimal("31"), Decimal("0"), "ok")


def test_monthly_weights_decide_what_is_due(tmp_path, db_url, monkeypatch):
    world = World(tmp_path, db_url, monkeypatch, apps=apps_with_pacing(tmp_path))
    weighted = world.goal("rep_a", "新增客户数", 100, pacing="monthly",
                          monthly_weights={"2025-10": 1, "2025-11": 1, "2025-12": 2}, **Q4)
    by_list = world.goal("rep_b", "新增客户数", 120, pacing="monthly", monthly_weights=[0] * 9 + [1, 1, 1], **Q4)
    unusable = world.goal("rep_a", "续约客户数", 92, pacing="monthly", monthly_weights={"2026-01": 1}, **Q4)
    linear = world.goal("rep_b", "续约客户数", 92, pacing="linear", **Q4)
    world.actuals([["2025-10", "rep_a", "新增客户数", "25"], ["2025-10", "rep_b", "新增客户数", "30"],
                   ["2025-10", "rep_a", "续约客户数", "31"], ["2025-10", "rep_b", "续约客户数", "31"]])
    world.run_snapshot("2025-10")
    snaps = world.snapshots("2025-10")
    assert (snaps[weighted].expected, snaps[weighted].deviation, snaps[weighted].status) == (Decimal("25"), Decimal("0"), "ok")
    assert (snaps[by_list].expected, snaps[by_list].status) == (Decimal("40"), "red")  # 30 of 40: -25%
    assert snaps[unusable].expected == Decimal("31")  # weights outside the period: paced linearly
    assert snaps[linear].expected == Decimal("31")
    world.close()


def test_monthly_fraction_reads_lists_and_maps_and_falls_back_when_unusable():
    from keel_goal_agility.measure.periods import linear_fraction, monthly_fraction

    start, end = dt.date(2025, 10, 1), dt.date(2025, 12, 31)
    twelve = [0] * 9 + [1, 1, 2]
    assert monthly_fraction(twelve, start, end, "2025-11") == Decimal("0.5")
    assert monthly_fraction({"10": 3, "11": 1, "12": 0}, start, end, "2025-10") == Decimal("0.75")
    assert monthly_fraction("[1, 2]", start, end, "2025-10") is None  # not 12 months: no usable weights
    assert linear_fraction(start, end, "2025-10") == Decimal(31) / Decimal(92)


def test_rerunning_a_period_changes_nothing_even_after_the_crm_changed(world):
    goal = world.goal("rep_a", "新增客户数", 100)
    world.actuals([["2025-10", "rep_a", "新增客户数", "50"]])
    world.run_snapshot("2025-10")
    first = world.snapshots()
    world.actuals([["2025-10", "rep_a", "新增客户数", "99"]])  # a corrected export after the fact

    again = world.run_snapshot("2025-10")

    assert again["status"] == "succeeded"
    assert again["counts"]["snapshotted"] == 0
    assert world.snapshots() == first  # every column, taken_at included
    assert world.goal_row(goal).deviation == Decimal("-0.5")


def test_snapshot_rows_refuse_updates_and_deletes_in_the_database(world):
    from keel_goal_agility.measure.tables import snapshots

    world.goal("rep_a", "新增客户数", 100)
    world.actuals([["2025-10", "rep_a", "新增客户数", "50"]])
    world.run_snapshot("2025-10")
    for stmt in (snapshots.update().values(status="ok"), snapshots.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="immutable"):
            with world.engine.begin() as conn:
                conn.execute(stmt)
    assert [r.status for r in world.snapshots().values()] == ["red"]


def test_actuals_for_unknown_goals_are_reported_not_imported(world):
    from keel_goal_agility.measure.tables import metric_inputs

    known = world.goal("rep_a", "新增客户数", 100)
    world.actuals([["2025-10", "rep_a", "新增客户数", "90"],
                   ["2025-10", "nobody", "新增客户数", "7"],
                   ["2025-10", "rep_a", "不存在的指标", "7"],
                   ["2025-10", "rep_b", "新增客户数", "abc"],
                   ["2025-13", "rep_a", "新增客户数", "1"]])

    run = world.run_snapshot("2025-10")

    assert run["status"] == "succeeded"
    with world.engine.connect() as conn:
        staged = conn.execute(sa.select(metric_inputs.c.goal_id, metric_inputs.c.value)).all()
    assert staged == [(known, Decimal("90"))]
    client = world.app.test_client()
    (period,) = client.get("/api/v1/apps/goal_agility/measures/snapshots/periods", headers=world.token("admin")).json
    report = period["import_report"]["actual"]
    assert (report["imported"], report["rejected"]) == (1, 4)
    assert report["problems"] == [
        "row 3: no active goal of owner 'nobody' with core metric '新增客户数' in 2025-10; not imported",
        "row 4: no active goal of owner 'rep_a' with core metric '不存在的指标' in 2025-10; not imported",
        "row 5: value 'abc' is not a number",
        "row 6: period must be YYYY-MM (e.g. 2025-10), not '2025-13'"]


def test_a_future_or_unfinished_or_malformed_period_is_refused_and_no_run_is_recorded(world):
    from keel.storage.job_tables import job_runs

    client = world.app.test_client()
    headers = world.token("admin")
    this_month = dt.date.today().strftime("%Y-%m")
    for period, message in (("2099-01", "has not ended yet"), (this_month, "has not ended yet"),
                            ("2025-1", "does not match"), ("2025-00", "does not match")):
        r = client.post("/api/v1/jobs/goal_snapshot/run", json={"params": {"period": period}}, headers=headers)
        assert r.status_code == 422, r.json
        assert message in " ".join(r.json["errors"]["params/period"])
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() == 0


def test_half_a_pause_drill_or_a_negative_pause_is_refused_and_no_run_is_recorded(world):
    """The `pause_chunk` drill (tests/test_goal_measure_worker_kill.py) needs both its values."""
    from keel.storage.job_tables import job_runs

    client = world.app.test_client()
    for params, key, words in (({"pause_chunk": 1}, "params", "'pause_seconds' is a dependency"),
                               ({"pause_seconds": 5}, "params", "'pause_chunk' is a dependency"),
                               ({"pause_chunk": 1, "pause_seconds": -1}, "params/pause_seconds", "minimum"),
                               ({"pause_chunk": 1, "pause_seconds": 3601}, "params/pause_seconds", "maximum")):
        r = client.post("/api/v1/jobs/goal_snapshot/run", json={"params": {"period": "2025-10", **params}},
                        headers=world.token("admin"))
        assert r.status_code == 422 and words in " ".join(r.json["errors"][key]), (params, r.json)
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar() == 0


def test_snapshots_api_lists_red_goals_with_their_signals_and_history(world):
    red = world.goal("rep_a", "新增客户数", 100)
    world.goal("rep_b", "新增客户数", 100)
    world.actuals([["2025-10", "rep_a", "新增客户数", "10"], ["2025-10", "rep_b", "新增客户数", "100"]])
    world.run_snapshot("2025-10")
    client = world.app.test_client()

    r = client.get("/api/v1/apps/goal_agility/measures/snapshots?period=2025-10&flag=red", headers=world.token("cro"))

    assert r.status_code == 200
    assert [(i["goal_id"], i["status"], i["deviation"]) for i in r.json["items"]] == [(red, "red", "-0.9")]
    assert r.json["items"][0]["signals"] == {"hot_words": [], "competitor_actions": [], "feedback_count": 0}
    history = client.get(f"/api/v1/apps/goal_agility/measures/goals/{red}/snapshots", headers=world.token("cro"))
    assert [i["period"] for i in history.json["items"]] == ["2025-10"]
    bad = client.get("/api/v1/apps/goal_agility/measures/snapshots?period=2025-1", headers=world.token("cro"))
    assert bad.status_code == 422 and "YYYY-MM" in bad.json["errors"]["period"][0]
    assert client.get("/api/v1/apps/goal_agility/measures/snapshots").status_code == 401


def test_the_schedule_runs_before_the_5th_and_takes_the_previous_month_in_beijing_time():
    import json

    from croniter import croniter
    from keel_goal_agility.measure.periods import PeriodError, check_finished, previous_period

    from helpers_goal_measure import APPS

    job = json.loads((APPS / "goal_agility" / "jobs" / "goal_snapshot.json").read_text("utf-8"))
    assert job["timezone"] == "Asia/Shanghai"
    fire = croniter(job["cron"], dt.datetime(2025, 10, 20, 12, 0)).get_next(dt.datetime)
    assert fire.day < 5
    # 02:00 on 1 November in Beijing is still 31 October in UTC: the month before is October either way.
    assert previous_period(dt.datetime(2025, 10, 31, 18, 0, tzinfo=dt.UTC)) == "2025-10"
    assert previous_period(dt.date(2026, 1, 3)) == "2025-12"
    check_finished("2025-10", now=dt.date(2025, 11, 1))
    with pytest.raises(PeriodError, match="has not ended yet"):
        check_finished("2025-10", now=dt.date(2025, 10, 31))


def test_a_month_without_any_crm_actual_is_not_snapshotted_unless_asked(world):
    world.goal("rep_a", "新增客户数", 100)

    run = world.run_snapshot("2025-10")  # the export is not there yet

    assert run["status"] == "failed"
    assert "no CRM actual for 2025-10" in run["error"] and "nothing was snapshotted" in run["error"]
    assert world.snapshots() == {}
    forced = world.run_snapshot("2025-10", allow_no_actuals=True)
    assert forced["status"] == "succeeded" and forced["counts"]["no_data"] == 1


def test_the_snapshot_is_set_based_the_statements_do_not_grow_with_the_goals(world):
    from keel_goal_agility.measure import snapshot
    from keel_goal_agility.measure.generate import company
    from keel_goal_agility.measure.tables import ensure_tables

    ensure_tables(world.engine)
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def take(n: int, period: str) -> int:
        first = company(world.engine, world.built, n)["first_id"]
        statements.clear()
        sa.event.listen(world.engine, "before_cursor_execute", count)
        try:
            with world.engine.begin() as conn:
                counts = snapshot.take(conn, world.built, period, world.built.definition.settings,
                                       (first, first + n - 1))
        finally:
            sa.event.remove(world.engine, "before_cursor_execute", count)
        assert counts["snapshotted"] == n
        return len(statements)

    assert take(20, "2025-10") == take(2000, "2025-11") <= 6


def test_the_first_snapshot_adds_up_the_months_since_the_goal_started(world):
    quarter = world.goal("rep_a", "新增客户数", 92, **Q4)
    world.actuals([["2025-10", "rep_a", "新增客户数", "20"], ["2025-11", "rep_a", "新增客户数", "10"],
                   ["2025-12", "rep_a", "新增客户数", "99"]])
    world.run_snapshot("2025-11")  # no snapshot of October was ever taken
    snap = world.snapshots("2025-11")[quarter]
    assert (snap.actual, snap.expected, snap.status) == (Decimal("30"), Decimal("61"), "red")  # December not yet
