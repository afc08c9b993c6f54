"""Administering the org without the HR plugin: `keel dept add/set-head/move/list`, `keel user passwd`
and the REST routes behind them. Admins only; bad input is a clear message and moves nobody."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import make_app
from test_cli import keel, run

API = "/api/v1"


@pytest.fixture
def env(tmp_path):
    return {"KEEL_INSTANCE_PATH": str(tmp_path / "inst"), "KEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
            "KEEL_ENV": "development", "KEEL_APPS_PATH": str(tmp_path / "no-apps")}


def _rows(env, sql):
    engine = sa.create_engine(env["KEEL_DATABASE_URL"])
    try:
        with engine.connect() as c:
            return c.exec_driver_sql(sql).all()
    finally:
        engine.dispose()


def test_cli_builds_a_department_tree_sets_heads_and_moves_people(env):
    assert run(env, "user", "add", "boss", "--no-password").exit_code == 0
    assert run(env, "user", "add", "emp", "--no-password").exit_code == 0
    r = run(env, "dept", "add", "company", "公司", "--name-en", "Company")
    assert r.exit_code == 0, r.output
    r = run(env, "dept", "add", "sales", "销售部", "--parent", "company")
    assert r.exit_code == 0, r.output
    assert run(env, "dept", "set-head", "sales", "boss").exit_code == 0
    r = run(env, "dept", "move", "boss", "emp", "--to", "sales")
    assert r.exit_code == 0 and "moved 2" in r.output
    listing = run(env, "dept", "list").output
    assert "company" in listing and "  sales" in listing and "head: boss" in listing and "members: 2" in listing
    # the issue's reproduction: a user added into a department made from the CLI
    r = run(env, "user", "add", "emp2", "--no-password", "--department", "sales")
    assert r.exit_code == 0, r.output
    rows = dict(_rows(env, "SELECT u.username, d.code FROM keel_users u JOIN keel_departments d "
                           "ON d.id = u.department_id"))
    assert rows == {"boss": "sales", "emp": "sales", "emp2": "sales"}
    events = [a for (a,) in _rows(env, "SELECT action FROM keel_audit_events ORDER BY id")]
    assert events.count("user.move") == 2 and "department.head" in events
    # the reporting line follows: emp reports to the head of sales
    from keel.auth.directory import find_user, manager_of

    engine = sa.create_engine(env["KEEL_DATABASE_URL"])
    with engine.connect() as c:
        assert manager_of(c, find_user(c, "emp").id) == find_user(c, "boss").id
    engine.dispose()


def test_cli_move_is_all_or_nothing_with_every_problem_named(env):
    run(env, "user", "add", "emp", "--no-password")
    run(env, "dept", "add", "sales", "销售部")
    p = keel(env, "dept", "move", "emp", "ghost", "--to", "nowhere")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "ghost" in p.stderr and "nowhere" in p.stderr
    assert _rows(env, "SELECT department_id FROM keel_users WHERE username='emp'") == [(None,)]
    p = keel(env, "dept", "add", "sales", "again")
    assert p.returncode == 1 and "sales" in p.stderr
    p = keel(env, "dept", "set-head", "sales")
    assert p.returncode != 0 and "--none" in p.stderr


def test_user_passwd_sets_a_password_for_a_synced_user(env):
    run(env, "user", "add", "synced", "--no-password")
    r = run(env, "user", "passwd", "synced", input="a-new-long-password\na-new-long-password\n")
    assert r.exit_code == 0, r.output
    from keel.auth.passwords import verify_password

    (stored,) = _rows(env, "SELECT password_hash FROM keel_users WHERE username='synced'")[0]
    assert verify_password(stored, "a-new-long-password")
    short = keel(env, "user", "passwd", "synced", "--password", "short")
    assert short.returncode == 1 and "password" in short.stderr.lower()
    assert keel(env, "user", "passwd", "ghost", "--password", "a-new-long-password").returncode == 1
    assert _rows(env, "SELECT count(*) FROM keel_audit_events WHERE action='user.password'") == [(1,)]


# ---- REST ----------------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user
    from keel.auth.tokens import issue_token

    app = make_app(tmp_path, sqlite_url)
    engine = app.extensions["keel"].engine
    with engine.begin() as conn:
        admin = add_user(conn, "root", "Root", SYSTEM, is_admin=True)
        plain = add_user(conn, "pat", "Pat", SYSTEM)
        for name in ("ann", "bob"):
            add_user(conn, name, name.title(), SYSTEM)
        tokens = {"admin": issue_token(conn, admin), "plain": issue_token(conn, plain)}
    client = app.test_client()

    def call(method, url, body=None, who="admin"):
        return client.open(f"{API}{url}", method=method, json=body,
                           headers={"Authorization": f"Bearer {tokens[who]}"})

    call.engine = engine
    yield call
    engine.dispose()


def test_api_creates_departments_sets_the_head_and_moves_people(api):
    r = api("POST", "/departments", {"code": "hq", "name": "总部"})
    assert r.status_code == 201, r.get_json()
    r = api("POST", "/departments", {"code": "ops", "name": "运营部", "name_en": "Operations", "parent": "hq"})
    assert r.status_code == 201 and r.headers["Location"].endswith("/api/v1/departments/ops")
    assert r.get_json()["parent"] == "hq"
    r = api("PUT", "/departments/ops/head", {"head": "ann"})
    assert r.status_code == 200 and r.get_json()["head"] == "ann"
    r = api("POST", "/departments/ops/members", {"users": ["ann", "bob"]})
    assert r.status_code == 200 and r.get_json()["department"]["members"] == 2
    people = api("GET", "/departments/ops").get_json()["people"]
    assert [p["username"] for p in people] == ["ann", "bob"]
    tree = api("GET", "/departments").get_json()["items"]
    assert [(d["code"], d["depth"]) for d in tree] == [("hq", 0), ("ops", 1)]
    users = api("GET", "/users?department=ops").get_json()["items"]
    assert [u["username"] for u in users] == ["ann", "bob"] and users[0]["has_password"] is False
    r = api("PUT", "/departments/ops/head", {"head": None})
    assert r.get_json()["head"] is None


def test_api_refuses_bad_input_and_writes_nothing(api):
    def state():
        with api.engine.connect() as c:
            return (c.exec_driver_sql("SELECT count(*) FROM keel_departments").scalar(),
                    c.exec_driver_sql("SELECT count(*) FROM keel_audit_events").scalar(),
                    c.exec_driver_sql("SELECT department_id FROM keel_users ORDER BY id").all())

    api("POST", "/departments", {"code": "hq", "name": "总部"})
    before = state()
    r = api("POST", "/departments", {"code": "bad code", "name": "", "parent": "ghost", "extra": 1})
    assert r.status_code == 422
    assert set(r.get_json()["errors"]) == {"extra"}  # an unknown key is refused before anything else
    r = api("POST", "/departments", {"code": "bad code", "name": "", "parent": "ghost"})
    assert r.status_code == 422 and set(r.get_json()["errors"]) == {"code", "name", "parent_code"}
    r = api("POST", "/departments/hq/members", {"users": ["ann", "ghost"]})
    assert r.status_code == 422 and "ghost" in str(r.get_json()["errors"]["users"])
    assert api("POST", "/departments/nowhere/members", {"users": ["ann"]}).status_code == 404
    assert api("PUT", "/departments/hq/head", {"head": "ghost"}).status_code == 422
    assert state() == before


def test_api_is_for_admins_only(api):
    for method, url, body in [("GET", "/departments", None), ("POST", "/departments", {"code": "x", "name": "x"}),
                              ("PUT", "/departments/x/head", {"head": None}), ("GET", "/users", None),
                              ("POST", "/users/ann/password", {"password": "a-new-long-password"})]:
        r = api(method, url, body, who="plain")
        assert r.status_code == 403, (method, url)


def test_api_password_reset_ends_sessions_and_checks_the_policy(api):
    r = api("POST", "/users/ann/password", {"password": "short"})
    assert r.status_code == 422 and "password" in r.get_json()["errors"]
    r = api("POST", "/users/ann/password", {"password": "a-new-long-password"})
    assert r.status_code == 204
    assert api("POST", "/users/ghost/password", {"password": "a-new-long-password"}).status_code == 404
