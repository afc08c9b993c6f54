"""Shared set-up of the workflow tests (no tests here): the wf_app fixture app applied to a real database,
an org chart, a token per person and helpers that speak to the REST API.

    company (head ceo)
      sales (head sam)          sam -> ceo;  alice -> sam;  bob (no manager: the department head decides)
        sales_east (no head)    erin (no manager, no head: walks up to sales' head, sam)
      finance (head fiona)      fiona -> ceo;  fred, fay (finance role)
    island (no head, no parent) otto: nobody above him
    root: an administrator
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from conftest import make_app
from helpers_registries import REGISTRIES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "wf_app"
API = "/api/v1"
PEOPLE = (  # username, department, manager, roles, admin
    ("ceo", "company", None, ("executive",), False),
    ("sam", "sales", "ceo", ("manager",), False),
    ("alice", "sales", "sam", ("employee",), False),
    ("bob", "sales", None, ("employee",), False),
    ("erin", "sales_east", None, ("employee",), False),
    ("fiona", "finance", "ceo", ("finance",), False),
    ("fred", "finance", "fiona", ("finance",), False),
    ("fay", "finance", "fiona", ("finance",), False),
    ("otto", "island", None, ("employee",), False),
    ("root", None, None, (), True),
)


@dataclass
class World:
    app: object
    client: object
    engine: sa.Engine
    ids: dict[str, int]
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, url: str, who: str):
        return self.client.get(API + url, headers=self.headers(who))

    def post(self, url: str, who: str, body=None):
        return self.client.post(API + url, json=body if body is not None else {}, headers=self.headers(who))

    def submit(self, form: str, who: str, **values):
        body = {"title": "Laptop", "amount": "1200", **values}
        return self.post(f"/apps/wfapp/forms/{form}", who, body)

    def start(self, form: str, who: str = "alice", **values) -> int:
        """Submit the form; the id of the instance it started."""
        r = self.submit(form, who, **values)
        assert r.status_code == 201, r.get_json()
        return self.instance_of(r.get_json()["id"])

    def instance_of(self, record_id: int) -> int:
        from keel.storage.workflow_tables import wf_instances

        with self.engine.connect() as conn:
            return conn.execute(sa.select(wf_instances.c.id).where(wf_instances.c.record_id == record_id)
                                .order_by(wf_instances.c.id.desc())).scalars().first()

    def instance(self, instance_id: int, who: str = "root") -> dict:
        r = self.get(f"/workflows/instances/{instance_id}", who)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def task_of(self, instance_id: int, who: str, status: str = "pending") -> int:
        tasks = [t for t in self.instance(instance_id)["tasks"]
                 if t["assignee"]["username"] == who and t["status"] == status]
        assert len(tasks) == 1, (who, self.instance(instance_id)["tasks"])
        return tasks[0]["id"]

    def act(self, instance_id: int, who: str, action: str = "approve", **body):
        return self.post(f"/workflows/tasks/{self.task_of(instance_id, who)}/{action}", who, body)

    def record(self, record_id: int) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT * FROM wfapp__expense WHERE id = :i"), {"i": record_id})
                        .one()._mapping)

    def snapshot(self) -> tuple:
        """Every table a transition writes, for "a refused action changes nothing"."""
        out = []
        with self.engine.connect() as conn:
            for table in ("keel_wf_instances", "keel_wf_tasks", "keel_audit_events", "keel_record_versions",
                          "wfapp__expense", "wfapp__followup"):
                out.append(tuple(conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id")).all()))
        return tuple(out)


def apply_fixture(engine: sa.Engine, path: Path = FIXTURE, bundle: dict | None = None) -> None:
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir, load_bundle

    apply_app(engine, load_bundle(bundle, REGISTRIES) if bundle is not None else load_app_dir(path, REGISTRIES), SYSTEM)


def build_org(conn: sa.Connection) -> dict[str, int]:
    from keel.actor import SYSTEM
    from keel.auth.directory import add_department, add_user, set_department_head

    add_department(conn, "company", "公司", SYSTEM)
    add_department(conn, "sales", "销售部", SYSTEM, parent_code="company")
    add_department(conn, "sales_east", "华东", SYSTEM, parent_code="sales")
    add_department(conn, "finance", "财务部", SYSTEM, parent_code="company")
    add_department(conn, "island", "孤岛", SYSTEM)
    ids = {}
    for username, dept, manager, roles, admin in PEOPLE:
        ids[username] = add_user(conn, username, username.title(), SYSTEM, roles=roles, department_code=dept,
                                 manager_username=manager, is_admin=admin)
    for code, head in (("company", "ceo"), ("sales", "sam"), ("finance", "fiona")):
        set_department_head(conn, code, head, SYSTEM)
    return ids


def make_world(tmp_path: Path, db_url: str) -> World:
    from keel.auth.tokens import issue_token

    flask_app = make_app(tmp_path, db_url)
    engine = flask_app.extensions["keel"].engine
    apply_fixture(engine)
    with engine.begin() as conn:
        ids = build_org(conn)
        tokens = {name: issue_token(conn, uid) for name, uid in ids.items()}
    return World(flask_app, flask_app.test_client(), engine, ids, tokens)
