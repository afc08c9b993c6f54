"""The case's history for `keel demo`: Q3/Q4 2025 meeting notes, customer feedback, market signals, IM
collaboration requests and CRM deals from the sample connector files (plugins/keel_goal_agility/sample/,
read through the app's connector definitions), personal tasks and pulse-survey answers before and after
the CRO's change of 2025-10-18, and the snapshot of 2025-10 — which flags the sales goals red.

Goals are found by query (owner and metric), never by id: the goal plugin seeds them first (this hook
runs trylast). Tasks keep the dates they had in the history: they are created through the write path
and their `created_at` is then set to the day they were made (an import of history, not a user's edit)."""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger("keel_goal_agility.demo")
APP = "goal_agility"
SAMPLE = Path(__file__).resolve().parents[3] / "sample"
CHANGE = dt.date(2025, 10, 18)
SYNCS = [("market_signals", "market_signal"), ("customer_feedback", "customer_feedback"),
         ("meeting_notes", "meeting_note"), ("im_collaboration", "collaboration_request"), ("crm_deals", "crm_deal")]
SNAPSHOT_PERIODS = ["2025-10"]
CARD_ANSWERS = ["高客单价客户深耕", "产品化交付提效", "Q4 营收 1,200 万"]
WRONG_ANSWERS = ["新增客户数", "线索转化率", "降低成本"]


def environ_for(app) -> dict[str, str]:
    """The environment connectors read the import folder from, for this instance."""
    env = {**os.environ, "KEEL_INSTANCE_PATH": app.config["KEEL_INSTANCE_PATH"]}
    env.pop("KEEL_IMPORT_PATH", None)
    return env


def stage_samples(app) -> Path:
    from keel.connectors.sync import import_root

    root = import_root(environ_for(app))
    root.mkdir(parents=True, exist_ok=True)
    for f in SAMPLE.glob("*.csv"):
        if not (root / f.name).exists():
            shutil.copyfile(f, root / f.name)
    return root


def seed_history(app) -> None:
    runtime = app.extensions["keel"]
    if APP not in {a.id for a in runtime.apps()}:
        return
    built = runtime.get(APP)
    if "meeting_note" not in built.definition.entities:
        return
    stage_samples(app)
    env = environ_for(app)
    try:
        _load(runtime, built, env)
    except Exception:  # the demo must come up even if the history cannot be loaded; say why
        log.exception("Goal Agility demo: loading the measures' history failed")


def _load(runtime, built, env) -> None:
    from keel.actor import SYSTEM
    from keel.connectors.sync import EntitySync, fetch_items, sync_entity
    from keel.definitions.model import thaw
    from keel_goal_agility.measure.job import snapshot_now

    engine = runtime.engine
    with engine.connect() as c:
        note = built.table("meeting_note")
        if c.execute(sa.select(note.c.id).limit(1)).first() is not None:
            return  # loaded before
    for connector, entity in SYNCS:
        mapping = thaw(built.definition.definitions_of("connector")[connector].data)["config"]["mapping"]
        items = fetch_items(built.definition, connector, environ=env)
        with engine.begin() as conn:
            sync_entity(conn, built, EntitySync(entity, "external_id", mapping), items, SYSTEM)
    with engine.begin() as conn:
        _tasks(conn, built)
        _pulse(conn, built)
    spec = thaw(built.definition.definitions_of("job")["goal_snapshot"].data)
    for period in SNAPSHOT_PERIODS:
        snapshot_now(engine, built, period, spec.get("params") or {}, env)


def _users(conn) -> list[tuple[int, str]]:
    from keel.storage.system import users

    return [(r.id, r.username) for r in conn.execute(sa.select(users.c.id, users.c.username)
                                                     .where(users.c.active).order_by(users.c.id))]


def _tasks(conn, built) -> None:
    """20 personal tasks in the 60 days before the change (12 linked to a goal), 20 after (16 linked)."""
    from keel.actor import SYSTEM
    from keel.storage import records

    goal, task = built.table("goal"), built.table("task")
    goals = conn.execute(sa.select(goal.c.id).where(goal.c.deleted_at.is_(None)).order_by(goal.c.id)).scalars().all()
    people = [u for u, name in _users(conn) if name.startswith(("rep_", "staff", "east_", "north_", "cs_"))]
    if not goals or not people:
        return
    n = 0
    for start, linked in ((CHANGE - dt.timedelta(days=60), 12), (CHANGE, 16)):
        for i in range(20):
            n += 1
            link = (i + 1) * linked // 20 > i * linked // 20  # spread evenly over the window
            rec = records.create(conn, built, "task", {
                "title": f"{'回访存量客户，推进增购' if link else '整理周报与拜访记录'}（{n}）",
                "owner": people[n % len(people)], "goal": goals[n % len(goals)] if link else None,
                "status": "done"}, SYSTEM)
            made = dt.datetime.combine(start + dt.timedelta(days=i * 3), dt.time(10, 0), dt.UTC)
            conn.execute(task.update().where(task.c.id == rec["id"]).values(created_at=made, updated_at=made))


def _pulse(conn, built) -> None:
    """Two pulse surveys: 2025-09-20 (70 answers: 30 agree, 26 name the top goals) and 2025-12-10 (72
    answers: 57 agree, 50 name them)."""
    from keel.actor import SYSTEM
    from keel.storage import records

    people = [u for u, _ in _users(conn)]
    for day, total, agree, named in ((dt.date(2025, 9, 20), 70, 30, 26), (dt.date(2025, 12, 10), 72, 57, 50)):
        for i in range(total):
            answers = CARD_ANSWERS if i < named else [CARD_ANSWERS[0], *WRONG_ANSWERS[:2]] if i % 2 else WRONG_ANSWERS
            records.create(conn, built, "pulse_response", {
                "respondent": people[i % len(people)], "answered_on": day.isoformat(),
                "top_goal_1": answers[0], "top_goal_2": answers[1], "top_goal_3": answers[2],
                "agreement": "5" if i < agree // 2 else "4" if i < agree else "3" if i % 2 else "2"}, SYSTEM)
