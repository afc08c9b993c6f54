"""CSRF on every state-changing page route (docs/security.md, "Sign-in, sessions and tokens"): each
rule outside /api/ that accepts POST, PUT, PATCH or DELETE is sent a request by a signed-in
administrator, with its arguments filled from the fixture app, first without a token and then with a
valid token from another user's session. Both are 400 and the database is unchanged. A page route added
later is covered without editing this file; the bearer-only API needs no token (test_auth.py)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_security import csrf_of, fill_rule, make_sec_world

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def _unsafe_page_requests(w):
    for rule in w.app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.endpoint == "auth.login":  # login: test_auth.py
            continue
        path = fill_rule(rule, {"app_id": "sec", "entity_id": "doc", "record_id": w.ids["bobs"],
                                "form_id": "new_doc", "id": 1, "action": "approve", "code": "sales",
                                "username": "bob"})
        for method in sorted(set(rule.methods) & set(UNSAFE)):
            yield method, path


def test_every_state_changing_page_route_refuses_a_missing_or_foreign_csrf_token(world):
    admin = world.page_client("root")
    foreign = csrf_of(world.page_client("alice").get("/apps/sec/forms/new_doc").text)
    form = {"title": "forged", "amount": "1", "username": "mallory", "display_name": "M", "name": "x"}
    before = world.snapshot()
    requests = list(_unsafe_page_requests(world))
    assert len(requests) >= 15  # forms, record edits, inbox, workflows, admin, logout
    failures = []
    for method, path in requests:
        for data in (form, {**form, "csrf_token": foreign}):
            resp = admin.open(path, method=method, data=data)
            if resp.status_code != 400:
                failures.append(f"{method} {path} {'foreign' if 'csrf_token' in data else 'no'} token "
                                f"-> {resp.status_code}")
    assert not failures, "state-changing page routes without CSRF protection:\n" + "\n".join(failures)
    assert world.snapshot() == before
    assert admin.get("/workbench").status_code == 200  # the forged POST /logout did not sign root out


def test_the_same_post_with_the_sessions_own_token_goes_through(world):
    """The refusals above are CSRF refusals, not a broken route: with the right token it is written."""
    alice = world.page_client("alice")
    token = csrf_of(alice.get("/apps/sec/forms/new_doc").text)
    resp = alice.post("/apps/sec/forms/new_doc", data={"csrf_token": token, "title": "real"})
    assert resp.status_code == 302, resp.text
    with world.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sec__doc WHERE title = 'real'")).scalar() == 1
