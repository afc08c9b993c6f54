"""Shared set-up for the Goal Agility measure tests (no tests here): an app with goal_agility applied on a
real database, a small org, goals created through the record write path, CRM/finance CSVs in an import
folder of the test's own (KEEL_IMPORT_PATH), and the snapshot job run through the jobs engine."""
from __future__ import annotations

import csv
import sys
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from conftest import APPS, REPO, make_app

# The plugin is a folder the plugin host puts on sys.path when an app loads; tests import its modules
# before any app exists.
PLUGIN_SRC = str(REPO / "plugins" / "keel_goal_agility" / "src")
if PLUGIN_SRC not in sys.path:
    sys.path.append(PLUGIN_SRC)

APP = "goal_agility"
Q4 = {"period_start": "2025-10-01", "period_end": "2025-12-31"}
OCTOBER = {"period_start": "2025-10-01", "period_end": "2025-10-31"}


class World:
    def __init__(self, tmp_path: Path, db_url: str, monkeypatch, apps: Path = APPS):
        from keel.actor import SYSTEM
        from keel.apply import apply_app
        from keel.auth.directory import add_department, add_user
        from keel.definitions.loader import load_app_dir

        self.imports = tmp_path / "imports"
        self.imports.mkdir()
        monkeypatch.setenv("KEEL_IMPORT_PATH", str(self.imports))
        self.app = make_app(tmp_path, db_url)
        self.runtime = self.app.extensions["keel"]
        self.engine = self.runtime.engine
        apply_app(self.engine, load_app_dir(apps / APP, self.app.extensions["keel_plugins"].registries()), SYSTEM)
        self.runtime.refresh()
        self.actuals([])  # the snapshot refuses to run without its inputs; empty exports are inputs
        self.forecasts([])
        self.users: dict[str, int] = {}
        with self.engine.begin() as conn:
            add_department(conn, "hq", "总部", SYSTEM)
            add_department(conn, "sales", "销售部", SYSTEM, parent_code="hq")
            for name, roles, dept, admin in (("admin", (), "hq", True), ("cro", ("executive", "manager"), "sales", False),
                                             ("rep_a", ("employee",), "sales", False),
                                             ("rep_b", ("employee",), "sales", False)):
                self.users[name] = add_user(conn, name, name, SYSTEM, password="pw-123456789", roles=roles,
                                            department_code=dept, is_admin=admin)

    @property
    def built(self):
        return self.runtime.get(APP)

    def goal(self, owner: str, metric: str, target, unit: str = "count", **extra) -> int:
        from keel.actor import SYSTEM
        from keel.storage import records

        values = {"title": f"{owner} {metric}", "owner": self.users[owner], "level": "personal",
                  "category": "new_business", "metric": metric, "unit": unit, "target": Decimal(str(target)),
                  **OCTOBER, **extra}
        with self.engine.begin() as conn:
            return records.create(conn, self.built, "goal", values, SYSTEM)["id"]

    def write_csv(self, name: str, header: list[str], rows: list[list]) -> None:
        with open(self.imports / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    def actuals(self, rows: list[list]) -> None:
        self.write_csv("crm_actuals.csv", ["period", "owner", "metric", "value"], rows)

    def forecasts(self, rows: list[list]) -> None:
        self.write_csv("finance_forecast.csv", ["period", "owner", "metric", "forecast"], rows)

    def run_snapshot(self, period: str, **params) -> dict:
        from keel.jobs import jobs_env
        from keel.jobs.catalog import ask, find_spec, merged_params, run_in_foreground

        env = jobs_env(self.app)
        spec = find_spec(env, "goal_snapshot", APP)
        asked = ask(env, spec, merged_params(env, spec, {"period": period, **params}), trigger="cli", user_id=None)
        return run_in_foreground(env, asked.run_id, sleep=lambda s: None)

    def snapshots(self, period: str | None = None) -> dict[int, sa.Row]:
        from keel_goal_agility.measure.tables import ensure_tables, snapshots

        ensure_tables(self.engine)  # a failed first run created nothing
        q = sa.select(snapshots)
        if period:
            q = q.where(snapshots.c.period == period)
        with self.engine.connect() as conn:
            return {r.goal_id: r for r in conn.execute(q)}

    def goal_row(self, goal_id: int) -> sa.Row:
        g = self.built.table("goal")
        with self.engine.connect() as conn:
            return conn.execute(sa.select(g).where(g.c.id == goal_id)).one()

    def token(self, who: str) -> dict[str, str]:
        from keel.auth.tokens import issue_token

        with self.engine.begin() as conn:
            return {"Authorization": f"Bearer {issue_token(conn, self.users[who])}"}

    def close(self) -> None:
        self.engine.dispose()


PACING_FIELDS = [
    {"id": "pacing", "type": "select", "label": {"zh": "进度节奏", "en": "Pacing"}, "default": "linear",
     "options": [{"id": "linear", "zh": "线性", "en": "Linear"}, {"id": "monthly", "zh": "按月权重", "en": "Monthly"}]},
    {"id": "monthly_weights", "type": "json", "label": {"zh": "月度权重", "en": "Monthly weights"}}]


def apps_with_pacing(tmp_path: Path) -> Path:
    """The apps folder, with the goal's pacing fields added when the definition does not have them yet (the
    goal tree work adds them; the snapshot reads them when they exist)."""
    import json
    import shutil

    folder = tmp_path / "apps"
    shutil.copytree(APPS, folder)
    goal_file = folder / APP / "entities" / "goal.json"
    goal = json.loads(goal_file.read_text("utf-8"))
    have = {f["id"] for f in goal["fields"]}
    goal["fields"] += [f for f in PACING_FIELDS if f["id"] not in have]
    goal_file.write_text(json.dumps(goal, ensure_ascii=False), "utf-8")
    return folder
