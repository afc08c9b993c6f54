"""The org directory: departments as a tree with heads, users with roles and superiors, clear
validation errors that write nothing, and an audit event (with the acting user) for every write."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from keel.actor import SYSTEM
from keel.auth import directory as d
from keel.auth.tokens import issue_token, resolve_token
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.storage.db import create_engine, create_system_tables
from keel.storage.system import audit_events, departments, user_roles, users


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    create_system_tables(eng)
    yield eng
    eng.dispose()


def _counts(conn) -> tuple[int, int, int, int]:
    return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                 for t in (users, departments, user_roles, audit_events))


@pytest.fixture
def org(engine):
    """company > sales > sales_east, and company > strategy; heads set after their users exist."""
    with engine.begin() as conn:
        admin = d.add_user(conn, "admin", "Admin", SYSTEM, is_admin=True)
        actor = d.get_actor(conn, admin)
        d.add_department(conn, "company", "公司", actor, name_en="Company")
        d.add_department(conn, "sales", "销售部", actor, parent_code="company", name_en="Sales")
        d.add_department(conn, "sales_east", "华东大区", actor, parent_code="sales")
        d.add_department(conn, "strategy", "战略部", actor, parent_code="company")
        ids = {"admin": admin}
        ids["ceo"] = d.add_user(conn, "ceo", "周总", actor, department_code="company")
        ids["cro"] = d.add_user(conn, "cro", "陈立", actor, department_code="sales", roles=["executive"])
        ids["east_mgr"] = d.add_user(conn, "east_mgr", "王磊", actor, department_code="sales_east",
                                     manager_username="cro", roles=["manager", "employee"])
        ids["rep_li"] = d.add_user(conn, "rep_li", "李娜", actor, department_code="sales_east",
                                   manager_username="east_mgr", roles=["employee"])
        ids["rep_new"] = d.add_user(conn, "rep_new", "New rep", actor, department_code="sales_east")
        ids["strategy_lead"] = d.add_user(conn, "strategy_lead", "林晓", actor, department_code="strategy")
        for code, head in [("company", "ceo"), ("sales", "cro"), ("sales_east", "east_mgr"),
                           ("strategy", "strategy_lead")]:
            d.set_department_head(conn, code, head, actor)
    return ids


def test_department_tree_with_parent_and_head(engine, org):
    with engine.connect() as conn:
        east = d.find_department(conn, "sales_east")
        sales = d.find_department(conn, "sales")
        assert east.parent_id == sales.id
        assert sales.parent_id == d.find_department(conn, "company").id
        assert d.find_department(conn, "company").parent_id is None
        assert d.find_department(conn, "company").name_en == "Company"
        assert d.department_head(conn, "strategy") == org["strategy_lead"]
        assert d.department_head(conn, "sales_east") == org["east_mgr"]


def test_manager_of_prefers_the_explicit_superior_then_department_heads(engine, org):
    with engine.connect() as conn:
        assert d.manager_of(conn, org["rep_li"]) == org["east_mgr"]         # explicit
        assert d.manager_of(conn, org["rep_new"]) == org["east_mgr"]        # head of own department
        assert d.manager_of(conn, org["east_mgr"]) == org["cro"]            # explicit
        assert d.manager_of(conn, org["cro"]) == org["ceo"]                 # heads sales: parent's head
        assert d.manager_of(conn, org["strategy_lead"]) == org["ceo"]
        assert d.manager_of(conn, org["ceo"]) is None                       # top of the company
        assert d.manager_of(conn, 999_999) is None
        assert d.manager_chain(conn, org["rep_li"]) == [org["east_mgr"], org["cro"], org["ceo"]]


def test_inactive_superior_is_skipped(engine, org):
    with engine.begin() as conn:
        d.deactivate_user(conn, org["east_mgr"], SYSTEM)
        # rep_li's explicit manager and the department's head are gone: the next head up.
        assert d.manager_of(conn, org["rep_li"]) == org["cro"]
        assert d.department_head(conn, "sales_east") is None


def test_manager_chain_stops_at_a_cycle(engine, org):
    with engine.begin() as conn:
        # A cycle HR could send us: ceo reports to rep_li, who reports (via east_mgr, cro) to ceo.
        conn.execute(users.update().where(users.c.id == org["ceo"]).values(manager_id=org["rep_li"]))
        chain = d.manager_chain(conn, org["rep_li"])
    assert chain == [org["east_mgr"], org["cro"], org["ceo"]]


def test_duplicate_username_is_a_clear_error_regardless_of_case(engine, org):
    with engine.begin() as conn:
        before = _counts(conn)
        for name in ("rep_li", "REP_LI"):
            with pytest.raises(FieldErrors) as err:
                d.add_user(conn, name, "Someone", SYSTEM)
            assert err.value.rendered() == {"username": [f"The username {name} is already taken."]}
        assert _counts(conn) == before
        assert d.find_user(conn, "Rep_Li").id == org["rep_li"]


def test_every_problem_is_reported_at_once_and_nothing_is_written(engine, org):
    with engine.begin() as conn:
        before = _counts(conn)
        with pytest.raises(FieldErrors) as err:
            d.add_user(conn, "bad name!", " ", SYSTEM, password="short", roles="admin",
                       department_code="nowhere", manager_username="ghost", email="not-an-email", locale="fr")
        assert set(err.value.errors) == {"username", "display_name", "password", "roles", "department_code",
                                         "manager_username", "email", "locale"}
        assert "nowhere" in err.value.rendered()["department_code"][0]
        with pytest.raises(FieldErrors) as err:
            d.add_user(conn, "ok_name", "OK", SYSTEM, roles=["fine", "not fine"])
        assert "not fine" in err.value.rendered()["roles"][0]
        with pytest.raises(FieldErrors) as err:
            d.add_user(conn, "x" * 151, "Long", SYSTEM)
        assert "150" in err.value.rendered()["username"][0]
        with pytest.raises(FieldErrors) as err:
            d.add_user(conn, "newline\n", "Trailing newline", SYSTEM)
        assert set(err.value.errors) == {"username"}
        assert _counts(conn) == before


def test_department_errors(engine, org):
    with engine.begin() as conn:
        before = _counts(conn)
        with pytest.raises(FieldErrors) as err:
            d.add_department(conn, "sales", "", SYSTEM, parent_code="nowhere", head_username="ghost")
        assert set(err.value.errors) == {"code", "name", "parent_code", "head_username"}
        assert "already exists" in err.value.rendered()["code"][0]
        with pytest.raises(FieldErrors):
            d.add_department(conn, "bad code", "X", SYSTEM)
        assert _counts(conn) == before


def test_audit_events_name_the_acting_user_and_never_the_password(engine, org):
    with engine.begin() as conn:
        actor = d.get_actor(conn, org["admin"])
        uid = d.add_user(conn, "rep_zhang", "张伟", actor, password="a long secret", roles=["employee"],
                         department_code="sales_east")
        d.set_roles(conn, uid, ["employee", "manager"], actor)
        d.add_department(conn, "cs", "客户成功部", actor, parent_code="company")
        events = conn.execute(sa.select(audit_events).where(audit_events.c.user_id == org["admin"])
                              .order_by(audit_events.c.id)).all()
    last = events[-3:]
    assert [e.action for e in last] == ["user.add", "user.roles", "department.add"]
    assert all(e.detail["by"] == "admin" for e in last)
    assert last[0].detail["username"] == "rep_zhang" and last[0].detail["has_password"] is True
    assert "a long secret" not in repr([e.detail for e in events])
    assert last[1].detail["before"] == ["employee"] and last[1].detail["after"] == ["employee", "manager"]
    assert last[2].detail["parent"] == "company"


def test_only_admins_change_the_directory(engine, org):
    with engine.begin() as conn:
        rep = d.get_actor(conn, org["rep_li"])
        before = _counts(conn)
        with pytest.raises(PermissionDenied):
            d.add_user(conn, "sneaky", "Sneaky", rep, is_admin=True)
        with pytest.raises(PermissionDenied):
            d.set_roles(conn, org["rep_li"], ["strategy"], rep)
        with pytest.raises(PermissionDenied):
            d.add_department(conn, "x", "X", rep)
        assert _counts(conn) == before


def test_set_roles_bumps_auth_version_and_get_actor_reads_fresh(engine, org):
    with engine.begin() as conn:
        version = conn.execute(sa.select(users.c.auth_version).where(users.c.id == org["rep_li"])).scalar()
        assert d.get_actor(conn, org["rep_li"]).roles == {"employee"}
        d.set_roles(conn, org["rep_li"], ["strategy", "employee", "strategy"], SYSTEM)
        actor = d.get_actor(conn, org["rep_li"])
        assert actor.roles == {"employee", "strategy"} and actor.username == "rep_li"
        assert actor.department_id == d.find_department(conn, "sales_east").id
        assert conn.execute(sa.select(users.c.auth_version).where(users.c.id == org["rep_li"])).scalar() \
            == version + 1
        d.set_roles(conn, org["rep_li"], [], SYSTEM)
        assert d.get_actor(conn, org["rep_li"]).roles == frozenset()
        with pytest.raises(NotFound):
            d.set_roles(conn, 999_999, ["x"], SYSTEM)


def test_deactivate_revokes_tokens_and_hides_the_actor(engine, org):
    with engine.begin() as conn:
        token = issue_token(conn, org["rep_li"], "phone")
        assert resolve_token(conn, token) == org["rep_li"]
        d.deactivate_user(conn, org["rep_li"], SYSTEM)
        assert d.get_actor(conn, org["rep_li"]) is None
        assert resolve_token(conn, token) is None
        event = conn.execute(sa.select(audit_events).where(audit_events.c.action == "user.deactivate")).one()
        assert event.detail["tokens_revoked"] == 1 and event.user_id is None  # SYSTEM acted
        # The row stays: history still names the user.
        assert d.find_user(conn, "rep_li").active is False
        with pytest.raises(FieldErrors):  # an inactive user cannot become anyone's manager
            d.add_user(conn, "rep_x", "X", SYSTEM, manager_username="rep_li")
