"""Authentication: argon2 passwords, hashed bearer tokens, server-side page sessions, the login page with
CSRF, and the deny-by-default hook (pages redirect to /login, the API answers 401). Login limits are in
test_login_limits.py."""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask import g, jsonify
from flask_wtf.csrf import generate_csrf

from conftest import make_app
from keel.actor import SYSTEM
from keel.auth import public, require_admin
from keel.auth.directory import add_user, deactivate_user, find_user, set_roles
from keel.auth.passwords import needs_rehash, verify_password
from keel.auth.tokens import issue_token, resolve_token, revoke_token
from keel.errors import FieldErrors
from keel.storage.system import api_tokens, audit_events, metadata, users

PASSWORD = "correct horse battery"


def _engine(app):
    return app.extensions["keel"].engine


def _add(app, username, password=PASSWORD, **kw):
    with _engine(app).begin() as conn:
        return add_user(conn, username, username.title(), SYSTEM, password=password, **kw)


def _add_probe_routes(app):
    """Throwaway routes, registered before the first request, none of them marked public except one."""

    @app.get("/probe")
    def probe_page():
        return jsonify(user=g.actor.username, roles=sorted(g.actor.roles))

    @app.post("/probe")
    def probe_page_post():
        return jsonify(ok=True)

    @app.get("/probe-csrf")
    def probe_csrf():
        return jsonify(csrf=generate_csrf())

    @app.get("/api/v1/probe")
    def probe_api():
        return jsonify(user=g.actor.username)

    @app.get("/api/v1/probe-admin")
    def probe_admin():
        return jsonify(admin=require_admin().username)

    @public
    @app.get("/api/v1/probe-public")
    def probe_public():
        return jsonify(actor=g.actor.username if g.actor else None)


@pytest.fixture
def web(tmp_path, sqlite_url):
    app = make_app(tmp_path, sqlite_url)
    _add_probe_routes(app)
    _add(app, "alice", roles=("employee",))
    yield app
    _engine(app).dispose()


@pytest.fixture
def web_any_db(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    _add_probe_routes(app)
    _add(app, "alice", roles=("employee",))
    yield app
    _engine(app).dispose()


def _csrf(client):
    """The CSRF token of the login form, as a browser would get it."""
    html = client.get("/login").get_data(as_text=True)
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _page_login(client, username="alice", password=PASSWORD, next_=None):
    token = _csrf(client)
    url = "/login" + (f"?next={quote(next_, safe='')}" if next_ is not None else "")
    return client.post(url, data={"username": username, "password": password, "csrf_token": token})


def _api_token(client, username="alice", password=PASSWORD):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password})


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


# ---- passwords ---------------------------------------------------------------------------------

def test_password_is_stored_as_argon2_hash(web):
    with _engine(web).connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash).where(users.c.username == "alice")).scalar()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "x")
    assert not verify_password("not a hash", PASSWORD)
    assert not verify_password(None, PASSWORD)


def test_short_password_is_refused_with_a_clear_message_and_nothing_written(web):
    with pytest.raises(FieldErrors) as err:
        _add(web, "bob", password="short")
    assert "at least 8 characters" in err.value.rendered()["password"][0]
    with _engine(web).connect() as conn:
        assert find_user(conn, "bob") is None
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_events)
                            .where(audit_events.c.action == "user.add")).scalar() == 1  # alice only


def test_weak_hash_is_upgraded_on_successful_login(web):
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with _engine(web).begin() as conn:
        conn.execute(users.update().where(users.c.username == "alice").values(password_hash=weak))
    assert needs_rehash(weak)
    assert _api_token(web.test_client()).status_code == 201
    with _engine(web).connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash).where(users.c.username == "alice")).scalar()
    assert stored != weak and not needs_rehash(stored) and verify_password(stored, PASSWORD)


# ---- login page --------------------------------------------------------------------------------

def test_login_page_with_csrf_signs_in_and_redirects_to_next(web):
    client = web.test_client()
    assert client.get("/probe").status_code == 302
    resp = _page_login(client, next_="/probe")
    assert resp.status_code == 302 and resp.headers["Location"] == "/probe"
    page = client.get("/probe")
    assert page.status_code == 200 and page.get_json() == {"user": "alice", "roles": ["employee"]}
    # Unsafe page methods need the CSRF token even when signed in.
    assert client.post("/probe").status_code == 400
    assert client.post("/probe", data={"csrf_token": client.get("/probe-csrf").get_json()["csrf"]}) \
        .status_code == 200
    with _engine(web).connect() as conn:
        assert conn.execute(sa.select(audit_events.c.detail).where(audit_events.c.action == "auth.login")) \
            .scalar()["by"] == "alice"


def test_login_post_without_csrf_token_is_400_and_does_not_sign_in(web):
    client = web.test_client()
    resp = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert resp.status_code == 400
    assert client.get("/probe").status_code == 302


def test_wrong_password_on_the_page_says_so(web):
    client = web.test_client()
    resp = _page_login(client, password="wrong password")
    assert resp.status_code == 401
    assert "Wrong username or password" in resp.get_data(as_text=True) or "用户名或密码" in resp.get_data(as_text=True)
    assert PASSWORD not in resp.get_data(as_text=True)
    assert client.get("/probe").status_code == 302


def test_logout_ends_the_session(web):
    client = web.test_client()
    _page_login(client)
    assert client.get("/probe").status_code == 200
    assert client.post("/logout").status_code == 400  # CSRF applies to logout too
    resp = client.post("/logout", data={"csrf_token": client.get("/probe-csrf").get_json()["csrf"]})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    assert client.get("/probe").status_code == 302


def _replay(client, cookie: str) -> int:
    """Send a saved copy of a session cookie (as someone who copied it would) and see if it still works."""
    client.set_cookie("session", cookie)
    return client.get("/probe").status_code


def _logout(client):
    return client.post("/logout", data={"csrf_token": client.get("/probe-csrf").get_json()["csrf"]})


def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_is_useless(web_any_db):
    client = web_any_db.test_client()
    _page_login(client)
    copied = client.get_cookie("session").value
    assert _logout(client).status_code == 302
    assert _replay(client, copied) == 302
    with _engine(web_any_db).connect() as conn:
        actions = list(conn.execute(sa.select(audit_events.c.action).order_by(audit_events.c.id)).scalars())
    stored = _all_stored_text(_engine(web_any_db))
    assert actions[-2:] == ["auth.login", "auth.logout"]
    # The cookie carries a random secret; the database keeps only its hash.
    assert copied not in stored
    # Another session of the same user (another browser) is not ended by this logout.
    other = web_any_db.test_client()
    _page_login(other)
    _page_login(client)
    _logout(client)
    assert other.get("/probe").status_code == 200


def test_deactivating_ends_sessions_and_tokens_and_reactivating_does_not_revive_them(web_any_db):
    from keel.auth.directory import reactivate_user

    client = web_any_db.test_client()
    token = _api_token(client).get_json()["token"]
    _page_login(client)
    cookie = client.get_cookie("session").value
    with _engine(web_any_db).begin() as conn:
        alice = find_user(conn, "alice").id
        deactivate_user(conn, alice, SYSTEM)
    with _engine(web_any_db).begin() as conn:
        reactivate_user(conn, alice, SYSTEM)
        event = conn.execute(sa.select(audit_events.c.detail)
                             .where(audit_events.c.action == "user.deactivate")).scalar()
    assert event["sessions_ended"] == 1 and event["tokens_revoked"] == 1
    assert _replay(client, cookie) == 302
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 401
    # Signing in again works and gives a new session.
    _page_login(client)
    assert client.get("/probe").status_code == 200 and client.get_cookie("session").value != cookie


def test_a_new_password_ends_every_session_of_the_user(web_any_db):
    from keel.auth.directory import set_password

    laptop, phone = web_any_db.test_client(), web_any_db.test_client()
    _page_login(laptop)
    _page_login(phone)
    with _engine(web_any_db).begin() as conn:
        set_password(conn, find_user(conn, "alice").id, "a brand new password", SYSTEM)
    assert laptop.get("/probe").status_code == 302 and phone.get("/probe").status_code == 302
    _page_login(laptop, password="a brand new password")
    assert laptop.get("/probe").status_code == 200


def test_a_session_older_than_its_lifetime_has_ended(web):
    from keel.storage.system import page_sessions

    client = web.test_client()
    _page_login(client)
    assert client.get("/probe").status_code == 200
    old = dt.datetime.now(dt.UTC) - web.permanent_session_lifetime - dt.timedelta(minutes=1)
    with _engine(web).begin() as conn:
        conn.execute(page_sessions.update().values(created_at=old))
    assert client.get("/probe").status_code == 302
    # The next login clears the user's expired rows.
    _page_login(client)
    with _engine(web).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(page_sessions)).scalar() == 1


@pytest.mark.parametrize("target", ["//evil.com", "https://evil.com/x", "/\\evil.com", "http:/evil.com",
                                    "javascript:alert(1)", "/\n/evil.com", "/\t/evil.com"])
def test_next_must_be_a_local_path(web, target):
    client = web.test_client()
    resp = _page_login(client, next_=target)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location in ("/", "/workbench"), location
    assert "evil" not in location


def test_redirect_to_login_keeps_the_local_path_and_query(web):
    resp = web.test_client().get("/probe?x=1")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login?next=/probe?x%3D1"


def test_inactive_user_cannot_log_in_even_with_the_right_password(web):
    with _engine(web).begin() as conn:
        deactivate_user(conn, find_user(conn, "alice").id, SYSTEM)
    assert _api_token(web.test_client()).status_code == 401


# ---- tokens ------------------------------------------------------------------------------------

def _all_stored_text(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(repr(row) for table in metadata.sorted_tables
                         for row in conn.execute(sa.select(table)).all())


def test_token_issue_resolve_revoke_and_stored_hashed(web_any_db):
    engine = _engine(web_any_db)
    with engine.begin() as conn:
        alice = find_user(conn, "alice").id
        token = issue_token(conn, alice, "laptop")
    assert token.startswith("keel_") and len(token) > 40
    stored = _all_stored_text(engine)
    assert token not in stored and token[5:] not in stored
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest() in stored
    with engine.begin() as conn:
        assert resolve_token(conn, token) == alice
        assert resolve_token(conn, token + "x") is None
        assert resolve_token(conn, "") is None
        revoke_token(conn, token, SYSTEM)
        assert resolve_token(conn, token) is None
        actions = list(conn.execute(sa.select(audit_events.c.action).order_by(audit_events.c.id)).scalars())
    assert actions[-2:] == ["token.issue", "token.revoke"]


def test_last_used_is_written_at_most_once_a_minute(web):
    engine = _engine(web)
    with engine.begin() as conn:
        token = issue_token(conn, find_user(conn, "alice").id)
    with engine.begin() as conn:
        resolve_token(conn, token)
        first = conn.execute(sa.select(api_tokens.c.last_used_at)).scalar()
    with engine.begin() as conn:
        resolve_token(conn, token)
        assert conn.execute(sa.select(api_tokens.c.last_used_at)).scalar() == first
        two_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        conn.execute(api_tokens.update().values(last_used_at=two_minutes_ago))
    with engine.begin() as conn:
        resolve_token(conn, token)
        assert conn.execute(sa.select(api_tokens.c.last_used_at)).scalar() != first


def test_only_owner_or_admin_may_revoke(web):
    from keel.auth.directory import get_actor
    from keel.errors import PermissionDenied

    _add(web, "mallory")
    with _engine(web).begin() as conn:
        token = issue_token(conn, find_user(conn, "alice").id)
        mallory = get_actor(conn, find_user(conn, "mallory").id)
        with pytest.raises(PermissionDenied):
            revoke_token(conn, token, mallory)
        assert resolve_token(conn, token) is not None


# ---- API authentication ------------------------------------------------------------------------

def test_api_without_token_is_401_json_with_www_authenticate(web):
    resp = web.test_client().get("/api/v1/probe")
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "authentication required"}
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer keel_not-a-real-token", "Bearer ", "Basic YWxpY2U6cGFzcw==",
                                    "keel_whatever"])
def test_api_with_wrong_credentials_is_401(web, header):
    resp = web.test_client().get("/api/v1/probe", headers={"Authorization": header})
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "invalid or revoked token"}
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_endpoint_then_me_then_revoke(web_any_db):
    client = web_any_db.test_client()
    resp = client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD, "name": "cli"})
    assert resp.status_code == 201 and resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    assert body["user"]["username"] == "alice" and body["user"]["roles"] == ["employee"]
    token = body["token"]
    me = client.get("/api/v1/me", headers=_bearer(token))
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice" and "password_hash" not in me.get_json()
    assert client.delete("/api/v1/auth/token", headers=_bearer(token)).status_code == 204
    gone = client.get("/api/v1/me", headers=_bearer(token))
    assert gone.status_code == 401 and gone.get_json() == {"error": "invalid or revoked token"}


@pytest.mark.parametrize("body, status, field", [
    (None, 400, None), ([1, 2], 400, None), ({"username": "alice"}, 422, "password"),
    ({"password": PASSWORD}, 422, "username"), ({"username": "alice", "password": PASSWORD, "is_admin": True},
                                                422, "is_admin"),
    ({"username": "alice", "password": PASSWORD, "name": 5}, 422, "name")])
def test_token_endpoint_rejects_bad_bodies_clearly(web, body, status, field):
    client = web.test_client()
    resp = client.post("/api/v1/auth/token", json=body) if body is not None else \
        client.post("/api/v1/auth/token", data="not json", content_type="application/json")
    assert resp.status_code == status
    if field:
        assert field in resp.get_json()["errors"]
    else:
        assert "JSON" in resp.get_json()["error"]
    with _engine(web).connect() as conn:
        assert conn.execute(sa.select(api_tokens)).first() is None


def test_deactivated_users_token_is_401(web):
    client = web.test_client()
    token = _api_token(client).get_json()["token"]
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 200
    with _engine(web).begin() as conn:
        deactivate_user(conn, find_user(conn, "alice").id, SYSTEM)
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 401


def test_role_change_is_seen_on_the_next_request(web):
    client = web.test_client()
    token = _api_token(client).get_json()["token"]
    assert client.get("/api/v1/me", headers=_bearer(token)).get_json()["roles"] == ["employee"]
    _page_login(client)
    assert client.get("/probe").get_json()["roles"] == ["employee"]
    with _engine(web).begin() as conn:
        set_roles(conn, find_user(conn, "alice").id, ["employee", "strategy"], SYSTEM)
    assert client.get("/api/v1/me", headers=_bearer(token)).get_json()["roles"] == ["employee", "strategy"]
    assert client.get("/probe").get_json()["roles"] == ["employee", "strategy"]
    with _engine(web).begin() as conn:
        deactivate_user(conn, find_user(conn, "alice").id, SYSTEM)
    assert client.get("/probe").status_code == 302  # the open session ends too


def test_api_ignores_the_session_cookie(web):
    client = web.test_client()
    _page_login(client)
    assert client.get("/probe").status_code == 200
    assert client.get("/api/v1/probe").status_code == 401


def test_api_responses_never_set_a_session_cookie(web):
    client = web.test_client()
    token = _api_token(client).get_json()["token"]
    answers = [
        client.post("/api/v1/auth/token?lang=en", json={"username": "alice", "password": PASSWORD}),
        client.post("/api/v1/auth/token?lang=en", json={"username": "alice", "password": "wrong password"}),
        client.get("/api/v1/me?lang=en", headers=_bearer(token)),
        client.get("/api/v1/me?lang=en"),
        client.get("/api/v1/nowhere?lang=en"),
    ]
    for resp in answers:
        assert resp.headers.getlist("Set-Cookie") == [], (resp.status_code, resp.headers)
    # A page session open in the same browser is neither read nor changed by the API.
    _page_login(client)
    cookie = client.get_cookie("session").value
    en = client.get("/api/v1/me?lang=en", headers=_bearer(token))
    assert en.headers.getlist("Set-Cookie") == [] and client.get_cookie("session").value == cookie
    assert client.get("/probe").status_code == 200


def test_require_admin_answers_403_json(web):
    _add(web, "root", is_admin=True)
    client = web.test_client()
    alice = _api_token(client).get_json()["token"]
    root = _api_token(client, "root").get_json()["token"]
    denied = client.get("/api/v1/probe-admin", headers=_bearer(alice))
    assert denied.status_code == 403 and "administrator" in denied.get_json()["error"]
    assert client.get("/api/v1/probe-admin", headers=_bearer(root)).get_json() == {"admin": "root"}


def test_deny_by_default_and_public_routes(web):
    client = web.test_client()
    assert client.get("/api/v1/probe").status_code == 401
    page = client.get("/probe")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/probe")
    assert client.get("/api/v1/probe-public").get_json() == {"actor": None}
    # A public API route still works with a bad token (nobody is signed in), never as someone.
    assert client.get("/api/v1/probe-public", headers=_bearer("keel_bad")).get_json() == {"actor": None}
    token = _api_token(client).get_json()["token"]
    assert client.get("/api/v1/probe-public", headers=_bearer(token)).get_json() == {"actor": "alice"}
