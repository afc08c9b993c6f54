"""The HR master-data plugin (plugins/keel_hr): `hr.sync_directory` fills the org directory from a paginated
HR API on 127.0.0.1 or a CSV/GBK file, run through the jobs engine's foreground path. A second sync writes
nothing; a person who left is deactivated (tokens revoked), a manager change upstream moves manager_id,
and bad payloads fail clearly with nothing half-written."""
from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa

from helpers_registries import REGISTRIES
from loopback import LoopbackServer, Reply
from test_connector_sync import make_world, run_beside_web_writes, write_json

PEOPLE_MAPPING = {"external_key": "id", "username": "login", "display_name": "name",
                  "email": {"path": "contact.email", "required": False},
                  "department_code": {"path": "dept", "required": False},
                  "manager_key": {"path": "manager", "required": False},
                  "roles": {"path": "roles", "required": False}}
DEPT_MAPPING = {"external_key": "id", "code": "code", "name": "name",
                "parent_code": {"path": "parent", "required": False},
                "head_key": {"path": "head", "required": False}}
DEPARTMENTS = [{"id": "D1", "code": "hq", "name": "总部", "parent": None, "head": "E1"},
               {"id": "D2", "code": "sales", "name": "销售部", "parent": "hq", "head": "E2"},
               {"id": "D3", "code": "sales_east", "name": "华东大区", "parent": "sales", "head": "E3"}]


def people(n: int = 25) -> list[dict]:
    """E1 heads hq, E2 sales (reports to E1), E3 sales_east (reports to E2); everyone else in sales_east
    reports to E3. The CEO comes last, so managers are resolved after everyone exists."""
    rows = [{"id": f"E{i}", "login": f"emp{i:03d}", "name": f"员工{i}", "contact": {"email": f"emp{i}@example.com"},
             "dept": "sales_east", "manager": "E3", "roles": ["employee"]} for i in range(4, n + 1)]
    rows += [{"id": "E3", "login": "east_mgr", "name": "王磊", "dept": "sales_east", "manager": "E2",
              "roles": "employee, manager"},
             {"id": "E2", "login": "cro", "name": "陈立", "dept": "sales", "manager": "E1", "roles": ["manager"]},
             {"id": "E1", "login": "ceo", "name": "周总", "dept": "hq", "manager": None, "roles": []}]
    return rows


def hr_api(server: LoopbackServer, rows: list[dict], depts: list[dict] = DEPARTMENTS) -> None:
    def page(req):
        offset, limit = int(req.query["offset"]), int(req.query["limit"])
        return Reply(json={"employees": rows[offset:offset + limit], "total": len(rows)})

    server.handle("/hr/employees", page)
    server.handle("/hr/departments", lambda req: Reply(json={"departments": depts}))


def connectors(server: LoopbackServer) -> list[dict]:
    common = {"retries": {"max": 1, "backoff_seconds": [0]}}
    return [{"id": "hr_people", "type": "http_json", "allowlist": [server.allow],
             "config": {"url": server.url("/hr/employees"), "items": "employees",
                        "pagination": {"type": "offset", "page_size": 10}, **common}},
            {"id": "hr_departments", "type": "http_json", "allowlist": [server.allow],
             "config": {"url": server.url("/hr/departments"), "items": "/departments", **common}}]


def hr_job(**params) -> dict:
    return {"id": "hr_sync", "type": "hr.sync_directory", "retries": {"max": 0},
            "params": {"connector": "hr_people", "users": PEOPLE_MAPPING,
                       "departments": {"connector": "hr_departments", "mapping": DEPT_MAPPING}, **params}}


def directory(world) -> dict[str, dict]:
    from keel.storage.system import departments, user_roles, users

    with world.engine.connect() as conn:
        codes = dict(conn.execute(sa.select(departments.c.id, departments.c.code)).all())
        names = dict(conn.execute(sa.select(users.c.id, users.c.external_key)).all())
        roles: dict[int, list[str]] = {}
        for uid, role in conn.execute(sa.select(user_roles).order_by(user_roles.c.role)):
            roles.setdefault(uid, []).append(role)
        return {u.external_key: {"id": u.id, "username": u.username, "name": u.display_name, "email": u.email,
                                 "dept": codes.get(u.department_id), "manager": names.get(u.manager_id),
                                 "active": u.active, "roles": roles.get(u.id, [])}
                for u in conn.execute(sa.select(users).where(users.c.external_key.is_not(None)))}


def dept_rows(world) -> dict[str, dict]:
    from keel.storage.system import departments, users

    with world.engine.connect() as conn:
        codes = dict(conn.execute(sa.select(departments.c.id, departments.c.code)).all())
        keys = dict(conn.execute(sa.select(users.c.id, users.c.external_key)).all())
        return {d.code: {"parent": codes.get(d.parent_id), "head": keys.get(d.head_id), "active": d.active,
                         "name": d.name} for d in conn.execute(sa.select(departments))}


def history(world, entity: str, record_id: int) -> list[tuple[int, str, dict]]:
    from keel.storage.system import record_versions

    rv = record_versions.c
    with world.engine.connect() as conn:
        return [(r.version, r.action, r.changes) for r in conn.execute(
            sa.select(record_versions).where(rv.app == "keel", rv.entity == entity, rv.record_id == record_id).order_by(rv.version))]


@pytest.fixture
def hr(tmp_path, db_url):
    with LoopbackServer() as server:
        rows = people()
        hr_api(server, rows)
        world = make_world(tmp_path, db_url, connectors=connectors(server), jobs=[hr_job()], app_id="org")
        yield world, server, rows
        world.engine.dispose()


def test_the_directory_fills_from_a_paginated_hr_api_and_a_second_sync_writes_nothing(hr):
    from keel.auth.directory import department_head, manager_chain, manager_of

    world, server, _rows = hr
    run = world.run("hr_sync")
    assert run["status"] == "succeeded", run["error"]
    assert run["counts"] == {"items": 25, "problems": 0, "users_created": 25, "users_updated": 0,
                             "users_unchanged": 0, "users_deactivated": 0, "users_reactivated": 0,
                             "departments_created": 3, "departments_updated": 0, "departments_deactivated": 0,
                             "departments_reactivated": 0}
    assert [r.query["offset"] for r in server.seen("/hr/employees")] == ["0", "10", "20"]
    got = directory(world)
    assert len(got) == 25
    assert got["E7"] == {"id": got["E7"]["id"], "username": "emp007", "name": "员工7", "email": "emp7@example.com",
                         "dept": "sales_east", "manager": "E3", "active": True, "roles": ["employee"]}
    assert (got["E3"]["roles"], got["E1"]["roles"], got["E1"]["email"]) == (["employee", "manager"], [], None)
    assert dept_rows(world) == {"hq": {"parent": None, "head": "E1", "active": True, "name": "总部"},
                                "sales": {"parent": "hq", "head": "E2", "active": True, "name": "销售部"},
                                "sales_east": {"parent": "sales", "head": "E3", "active": True, "name": "华东大区"}}
    with world.engine.connect() as conn:  # the workflow's "direct superior" now comes from HR
        ids = {k: v["id"] for k, v in got.items()}
        assert manager_of(conn, ids["E7"]) == ids["E3"]
        assert manager_chain(conn, ids["E7"]) == [ids["E3"], ids["E2"], ids["E1"]]
        assert department_head(conn, "sales") == ids["E2"]
    (version, action, changes), = history(world, "user", ids["E3"])
    assert (version, action, changes["username"], changes["manager_id"]) == (1, "create", [None, "east_mgr"],
                                                                              [None, ids["E2"]])
    first = world.writes()

    again = world.run("hr_sync")
    assert again["status"] == "succeeded"
    assert again["counts"]["users_unchanged"] == 25
    assert sum(v for k, v in again["counts"].items() if k not in ("items", "users_unchanged")) == 0
    assert world.writes() == first  # no version rows, no audit events


def test_a_person_gone_upstream_is_deactivated_and_their_token_stops_working(hr):
    from keel.auth.tokens import issue_token, resolve_token
    from keel.storage.system import audit_events

    world, _server, rows = hr
    world.run("hr_sync")
    leaver = directory(world)["E9"]
    with world.engine.begin() as conn:
        token = issue_token(conn, leaver["id"])
        assert resolve_token(conn, token) == leaver["id"]
    rows[:] = [r for r in rows if r["id"] != "E9"]
    run = world.run("hr_sync")
    assert (run["counts"]["users_deactivated"], run["counts"]["users_unchanged"]) == (1, 24)
    gone = directory(world)["E9"]
    assert gone["active"] is False and gone["username"] == "emp009"  # kept, never deleted
    with world.engine.connect() as conn:
        assert resolve_token(conn, token) is None
    assert history(world, "user", leaver["id"])[-1][1:] == ("deactivate", {"active": [True, False]})
    assert world.count(audit_events, audit_events.c.action == "user.deactivate") == 1
    assert world.run("hr_sync")["counts"]["users_deactivated"] == 0  # once

    rows.append(people()[5])  # E9 is rehired
    back = world.run("hr_sync")
    assert back["counts"]["users_reactivated"] == 1 and directory(world)["E9"]["active"] is True
    with world.engine.connect() as conn:
        assert resolve_token(conn, token) is None  # the old token stays revoked


def test_a_manager_and_department_change_upstream_is_written_with_its_history(hr):
    world, _server, rows = hr
    world.run("hr_sync")
    before = world.writes()
    mover = next(r for r in rows if r["id"] == "E12")
    mover.update(manager="E2", dept="sales", name="员工12（晋升）")
    run = world.run("hr_sync")
    assert (run["counts"]["users_updated"], run["counts"]["users_unchanged"]) == (1, 24)
    got = directory(world)
    assert (got["E12"]["manager"], got["E12"]["dept"], got["E12"]["name"]) == ("E2", "sales", "员工12（晋升）")
    version, action, changes = history(world, "user", got["E12"]["id"])[-1]
    assert (version, action) == (2, "update")
    with world.engine.connect() as conn:
        from keel.storage.system import departments

        dept_ids = dict(conn.execute(sa.select(departments.c.code, departments.c.id)).all())
    assert changes == {"display_name": ["员工12", "员工12（晋升）"], "manager_id": [got["E3"]["id"], got["E2"]["id"]],
                       "department_id": [dept_ids["sales_east"], dept_ids["sales"]]}
    assert world.writes() == (before[0] + 1, before[1] + 1)


def test_bad_payloads_give_clear_errors_and_leave_the_directory_as_it_was(hr):
    world, server, rows = hr
    world.run("hr_sync")
    snapshot, writes = directory(world), world.writes()

    rows[0].pop("login")  # a mapped field missing, strictly: the run fails and names the item and field
    strict = world.run("hr_sync", skip_invalid=False)
    assert strict["status"] == "failed"
    assert "HR item(s) cannot be synced, nothing was written" in strict["error"]
    assert "item 0: field 'username' (path 'login'): value is missing" in strict["error"]

    rows[1]["name"] = "changed, but the run fails"
    server.reply("/hr/employees", Reply(json={"employees": rows[:10]}),
                 Reply(body=b'{"employees": [{"id": "E1"'))  # page 2 is cut off
    broken = world.run("hr_sync")
    assert broken["status"] == "failed" and "malformed JSON in the response" in broken["error"]

    server.reply("/hr/employees", Reply(500, body="HR system down"))
    down = world.run("hr_sync")
    assert down["status"] == "failed" and "HTTP 500 after 2 attempts: HR system down" in down["error"]

    server.reply("/hr/employees", Reply(json={"employees": []}))
    empty = world.run("hr_sync")
    assert empty["status"] == "failed" and "refusing to deactivate all 25 synced users" in empty["error"]
    assert directory(world) == snapshot and world.writes() == writes


def test_a_bad_item_is_skipped_and_its_person_is_not_taken_for_a_leaver(hr):
    world, _server, rows = hr
    world.run("hr_sync")
    rows[0]["contact"] = {"email": "not an address"}
    rows[1]["manager"] = "E999"
    rows[2]["dept"] = "nowhere"
    run = world.run("hr_sync")
    assert run["status"] == "succeeded"
    assert (run["counts"]["problems"], run["counts"]["users_deactivated"], run["counts"]["users_updated"]) == (3, 0, 0)
    got = directory(world)
    assert got[rows[0]["id"]]["active"] is True and got[rows[0]["id"]]["email"] == "emp4@example.com"
    assert got[rows[1]["id"]]["manager"] == "E3" and got[rows[2]["id"]]["dept"] == "sales_east"


def test_users_typed_in_by_hand_are_adopted_by_username_not_duplicated(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user

    with LoopbackServer() as server:
        hr_api(server, people(6))
        world = make_world(tmp_path, sqlite_url, connectors=connectors(server), jobs=[hr_job()], app_id="org")
        with world.engine.begin() as conn:
            ceo = add_user(conn, "CEO", "周总", SYSTEM, is_admin=True)
            admin = add_user(conn, "admin", "Admin", SYSTEM, is_admin=True)
        run = world.run("hr_sync")
        assert (run["counts"]["users_created"], run["counts"]["users_updated"]) == (5, 1)
        got = directory(world)
        assert got["E1"]["id"] == ceo and got["E1"]["username"] == "ceo"
        assert admin not in {u["id"] for u in got.values()}  # not upstream, never synced: left alone


def test_a_gbk_csv_from_the_import_folder_fills_the_directory(tmp_path, sqlite_url, monkeypatch):
    imports = tmp_path / "imports"
    (imports / "hr").mkdir(parents=True)
    csv_text = ("工号,登录名,姓名,部门编码,部门名称,上级部门,直属上级\n"
                "E1,ceo,周总,hq,总部,,\n"
                "E2,cro,陈立,sales,销售部,hq,E1\n"
                "E3,rep_li,李娜,sales,销售部,hq,E2\n")
    (imports / "hr" / "roster.csv").write_bytes(csv_text.encode("gbk"))
    monkeypatch.setenv("KEEL_IMPORT_PATH", str(imports))
    # `columns`: a roster with a wrong header is refused as a whole, not read as people without names.
    roster = {"id": "roster", "type": "file",
              "config": {"file": "hr/roster.csv", "columns": ["工号", "登录名", "姓名", "部门编码", "部门名称"]}}
    job = {"id": "hr_sync", "type": "hr.sync_directory", "retries": {"max": 0},
           "params": {"connector": "roster", "default_roles": ["employee"],
                      "users": {"external_key": "工号", "username": "登录名", "display_name": "姓名",
                                "department_code": "部门编码", "manager_key": {"path": "直属上级", "required": False}},
                      "departments": {"mapping": {"code": "部门编码", "name": "部门名称",
                                                  "parent_code": {"path": "上级部门", "required": False}}}}}
    world = make_world(tmp_path, sqlite_url, connectors=[roster], jobs=[job], app_id="org")
    run = world.run("hr_sync")
    assert run["status"] == "succeeded", run["error"]
    got = directory(world)
    assert {k: (v["name"], v["dept"], v["manager"], v["roles"]) for k, v in got.items()} == {
        "E1": ("周总", "hq", None, ["employee"]), "E2": ("陈立", "sales", "E1", ["employee"]),
        "E3": ("李娜", "sales", "E2", ["employee"])}
    assert dept_rows(world)["sales"] == {"parent": "hq", "head": None, "active": True, "name": "销售部"}
    assert world.run("hr_sync")["counts"]["users_unchanged"] == 3

    writes = world.writes()
    (imports / "hr" / "roster.csv").write_bytes("工号,姓名\nE1,周总\n".encode("gbk"))
    bad = world.run("hr_sync")
    assert bad["status"] == "failed"
    assert "hr/roster.csv, row 1: wrong header: missing columns: 登录名, 部门编码, 部门名称" in bad["error"]
    (imports / "hr" / "roster.csv").write_bytes(csv_text.encode("gbk") + b"E4,\xff\xff\n")
    garbled = world.run("hr_sync")
    assert garbled["status"] == "failed" and "is not UTF-8 nor GBK/GB18030 text" in garbled["error"]
    assert directory(world) == got and world.writes() == writes


def test_the_job_acts_only_for_an_administrator(tmp_path, sqlite_url):
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user

    with LoopbackServer() as server:
        hr_api(server, people(5))
        world = make_world(tmp_path, sqlite_url, connectors=connectors(server),
                           jobs=[{**hr_job(), "run_as": "clerk"}], app_id="org")
        with world.engine.begin() as conn:
            add_user(conn, "clerk", "Clerk", SYSTEM, roles=["sales"])
        run = world.run("hr_sync")
        assert run["status"] == "failed"
        assert "permission check failed for clerk: only an administrator may change the org directory" in run["error"]
        assert directory(world) == {} and server.requests == []


def test_a_missing_import_file_fails_at_once_and_a_server_path_is_refused(tmp_path, sqlite_url, monkeypatch):
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_app_dir
    from keel.storage.job_tables import job_chunks

    monkeypatch.setenv("KEEL_IMPORT_PATH", str(tmp_path / "imports"))
    (tmp_path / "imports").mkdir()
    roster = {"id": "roster", "type": "file", "config": {"file": "roster.csv"}}
    sneaky = {"id": "sneaky", "type": "file", "config": {"file": "../../etc/passwd.csv"}}
    job = {"id": "hr_sync", "type": "hr.sync_directory", "retries": {"max": 3, "backoff_seconds": [600]},
           "params": {"connector": "roster", "users": {"external_key": "id", "username": "u", "display_name": "n"}}}
    world = make_world(tmp_path, sqlite_url, connectors=[roster], jobs=[job], app_id="org")
    run = world.run("hr_sync")  # would wait 600 s before a retry if it were retried
    assert run["status"] == "failed"
    assert run["error"].endswith("connector 'roster': no file 'roster.csv' in the import folder")
    assert world.count(job_chunks, job_chunks.c.attempts == 1) == 1
    # A server path in a definition never gets as far as a running server: loading it is refused.
    write_json(world.folder / "connectors" / "sneaky.json", sneaky)
    with pytest.raises(DefinitionErrors) as refused:
        load_app_dir(world.folder, REGISTRIES)
    assert [str(e) for e in refused.value.errors] == [
        "connectors/sneaky.json: /config/file: must be a relative name inside the import folder"]


def test_new_hires_who_manage_each_other_are_created_once_and_linked(hr):
    world, _server, rows = hr
    world.run("hr_sync")
    rows += [{"id": "E90", "login": "ann", "name": "安", "dept": "sales", "manager": "E91"},
             {"id": "E91", "login": "ben", "name": "本", "dept": "sales", "manager": "E90"}]
    run = world.run("hr_sync")
    assert run["status"] == "succeeded", run["error"]
    assert (run["counts"]["users_created"], run["counts"]["users_updated"]) == (2, 0)
    got = directory(world)
    assert (got["E90"]["manager"], got["E91"]["manager"]) == ("E91", "E90")
    # Neither existed when the other was written: created, then linked.
    assert [(v, a, sorted(c)) for v, a, c in history(world, "user", got["E90"]["id"])] == [
        (1, "create", ["department_id", "display_name", "external_key", "username"]), (2, "update", ["manager_id"])]


def test_a_big_sync_commits_as_it_goes_so_web_writes_get_in_between(tmp_path, sqlite_url):
    """SQLite has one write lock: a sync of 200,000 people written in one transaction stalled every user
    for as long as it wrote (17 s). Now each batch commits with its history and web writes go between."""
    from keel.storage.system import users

    with LoopbackServer() as server:
        rows = people(4000)
        hr_api(server, rows)
        conns = connectors(server)
        conns[0]["config"]["pagination"]["page_size"] = 1000
        world = make_world(tmp_path, sqlite_url, connectors=conns, jobs=[hr_job()], app_id="org")
        # Commit at every checkpoint: on a fast machine a whole batch takes less than the default half
        # second, and the sync would then commit only at its end (CI saw no write get in half-way).
        world.env = replace(world.env, checkpoint_seconds=0.0)
        run = run_beside_web_writes(sqlite_url, lambda: world.run("hr_sync"), users, len(rows), half_way=1)
    assert run["counts"]["users_created"] == len(rows)
    got = directory(world)
    assert got["E7"]["manager"] == "E3" and len(history(world, "user", got["E7"]["id"])) == 1
