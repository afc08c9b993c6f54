"""The admin pages for the organisation, through the Flask test client with real sign-in and CSRF:
users, departments (create, set the head, move people), roles and the audit trail filtered by user,
record and time. Administrators only; bad input says why and changes nothing."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from test_pages import csrf_of, setup_site


@pytest.fixture
def site(tmp_path, sqlite_url):
    s = setup_site(tmp_path, sqlite_url)
    yield s
    s.engine.dispose()


def post(client, url, data, form_page=None):
    token = csrf_of(client.get(form_page or url).text)
    return client.post(url, data={"csrf_token": token, **data})


def dept_of(site, username):
    with site.engine.connect() as c:
        return c.execute(sa.text("SELECT d.code FROM keel_users u LEFT JOIN keel_departments d "
                                 "ON d.id = u.department_id WHERE u.username = :u"), {"u": username}).scalar()


@pytest.mark.parametrize("url", ["/admin/users", "/admin/departments", "/admin/roles", "/admin/audit",
                                 "/admin/users/1"])
def test_org_pages_are_for_admins_only(site, url):
    assert site.client("alice").get(url).status_code == 403
    assert site.client("root").get(url).status_code == 200


def test_non_admin_posts_are_refused_and_change_nothing(site):
    alice = site.client("alice")
    token = csrf_of(alice.get("/workbench").text)
    r = alice.post("/admin/departments", data={"csrf_token": token, "code": "x", "name": "X"})
    assert r.status_code == 403
    r = alice.post(f"/admin/users/{site.user_id('alice')}/roles", data={"csrf_token": token, "roles": "boss"})
    assert r.status_code == 403
    with site.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM keel_departments")).scalar() == 0


def test_admin_creates_departments_sets_a_head_and_moves_people(site):
    root = site.client("root")
    r = post(root, "/admin/departments", {"code": "ops", "name": "运营部", "name_en": "Operations",
                                          "parent": "", "head": ""})
    assert r.status_code == 302, r.text
    r = post(root, "/admin/departments", {"code": "ops_east", "name": "华东运营", "parent": "ops", "head": ""})
    assert r.status_code == 302
    page = root.get("/admin/departments").text
    assert "运营部" in page and "华东运营" in page
    r = post(root, "/admin/departments/ops/head", {"head": "bob"}, "/admin/departments/ops")
    assert r.status_code == 302
    r = post(root, "/admin/departments/ops/members", {"users": "alice, bob", "manager": ""}, "/admin/departments/ops")
    assert r.status_code == 302
    assert dept_of(site, "alice") == dept_of(site, "bob") == "ops"
    page = root.get("/admin/departments/ops").text
    assert "Bob 鲍" in page and "Alice 艾" in page
    # alice's approvals now go to the head of ops
    page = root.get(f"/admin/users/{site.user_id('alice')}").text
    assert re.search(r"Bob 鲍 \(bob\)", page)


def test_bad_department_input_is_shown_and_writes_nothing(site):
    root = site.client("root")
    r = post(root, "/admin/departments", {"code": "bad code", "name": "X", "parent": "", "head": "ghost"})
    assert r.status_code == 422
    assert "ghost" in r.text and "code" in r.text
    post(root, "/admin/departments", {"code": "ops", "name": "运营部", "parent": "", "head": ""})
    r = post(root, "/admin/departments/ops/members", {"users": "alice ghost", "manager": ""}, "/admin/departments/ops")
    assert r.status_code == 422 and "ghost" in r.text
    assert dept_of(site, "alice") is None
    r = root.post("/admin/departments", data={"code": "x", "name": "X"})  # no CSRF token
    assert r.status_code == 400


def test_admin_adds_a_user_sets_roles_password_and_deactivates(site):
    root = site.client("root")
    r = post(root, "/admin/users", {"username": "carol", "display_name": "Carol 卡", "password": "a-long-password-1",
                                    "roles": "member, reviewer", "department": "", "manager": "alice", "email": ""})
    assert r.status_code == 302, r.text
    uid = site.user_id("carol")
    page = root.get("/admin/users").text
    assert "carol" in page and "member, reviewer" in page
    r = post(root, f"/admin/users/{uid}/roles", {"roles": "member"}, f"/admin/users/{uid}")
    assert r.status_code == 302
    r = post(root, f"/admin/users/{uid}/password", {"password": "short"}, f"/admin/users/{uid}")
    assert r.status_code == 422 and "password" in r.text
    r = post(root, f"/admin/users/{uid}/password", {"password": "another-long-password"}, f"/admin/users/{uid}")
    assert r.status_code == 302
    r = post(root, f"/admin/users/{uid}/active", {}, f"/admin/users/{uid}")  # unchecked box: deactivate
    assert r.status_code == 302
    with site.engine.connect() as c:
        active, = c.execute(sa.text("SELECT active FROM keel_users WHERE id = :i"), {"i": uid}).one()
        roles = c.execute(sa.text("SELECT role FROM keel_user_roles WHERE user_id = :i"), {"i": uid}).scalars().all()
        actions = c.execute(sa.text("SELECT action FROM keel_audit_events WHERE user_id = :r ORDER BY id"),
                            {"r": site.user_id("root")}).scalars().all()
    assert not active and roles == ["member"]
    assert ["user.add", "user.roles", "user.password", "user.deactivate"] == \
        [a for a in actions if a.startswith("user.")]
    # a duplicate username is refused with the reason
    r = post(root, "/admin/users", {"username": "carol", "display_name": "C", "department": "", "roles": ""})
    assert r.status_code == 422 and "carol" in r.text


def test_roles_page_lists_declared_roles_and_who_holds_them(site):
    page = site.client("root").get("/admin/roles").text
    assert "member" in page and "Alice 艾" in page and "Bob 鲍" in page


def test_audit_trail_filters_by_user_record_and_time(site):
    root = site.client("root")
    rid = site.create("alice", title="Alpha")
    site.create("bob", title="Beta")
    page = root.get("/admin/audit?user=alice").text
    assert "record.create" in page and f"webtest/item/{rid}" in page
    assert page.count("record.create") == 1
    page = root.get(f"/admin/audit?app=webtest&entity=item&record={rid}").text
    assert f"webtest/item/{rid}" in page and page.count("record.create") == 1
    assert "record.create" not in root.get("/admin/audit?until=2000-01-01").text
    assert "record.create" in root.get("/admin/audit?since=2000-01-01").text
    r = root.get("/admin/audit?user=ghost")
    assert r.status_code == 422 and "ghost" in r.text
    r = root.get("/admin/audit?since=yesterday")
    assert r.status_code == 422
