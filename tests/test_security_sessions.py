"""Sessions, headers and secrets at the request boundary (docs/security.md, "Sign-in, sessions and
tokens", "Stored XSS", "Secrets"): a cookie from before the login is worth nothing after it (session
fixation); every response of every route, pages, API, errors and static files, carries the CSP with
frame-ancestors, nosniff and X-Frame-Options; passwords and tokens never reach the logs or the audit
trail."""
from __future__ import annotations

import json
import logging
import re

import pytest
import sqlalchemy as sa

from helpers_security import PASSWORD, csrf_of, fill_rule, get_rules, make_sec_world


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def _cookie(client) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else None


def _signed_in_as(app, cookie: str | None) -> str | None:
    """Who a browser holding only `cookie` is, from the page header; None when sent to /login."""
    c = app.test_client()
    if cookie:
        c.set_cookie("session", cookie)
    resp = c.get("/workbench?lang=en")
    if resp.status_code == 302:
        return None
    return resp.text.split('<span class="user">', 1)[1].split("<", 1)[0]


# ---------------------------------------------------------------- session fixation

def test_a_cookie_planted_before_the_login_is_not_signed_in_by_it(world):
    victim = world.app.test_client()
    token = csrf_of(victim.get("/login").text)
    planted = _cookie(victim)  # what an attacker could have set in the victim's browser
    assert planted
    resp = victim.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    assert _cookie(victim) != planted
    assert _signed_in_as(world.app, _cookie(victim)) == "Alice 艾"
    assert _signed_in_as(world.app, planted) is None
    # the CSRF token of the anonymous session does not carry over into the signed-in one either
    stale = victim.post("/apps/sec/forms/new_doc", data={"csrf_token": token, "title": "x"})
    assert stale.status_code == 400


def test_signing_in_over_someone_elses_session_does_not_share_it(world):
    """Mallory signs in, plants her cookie in alice's browser, alice signs in over it: Mallory's copy
    stays Mallory's (bob here), never alice's."""
    browser = world.page_client("bob")
    planted = _cookie(browser)
    token = csrf_of(browser.get("/apps/sec/forms/new_doc").text)
    resp = browser.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    assert _signed_in_as(world.app, _cookie(browser)) == "Alice 艾"
    assert _signed_in_as(world.app, planted) in ("Bob 鲍", None)


def test_the_session_cookie_is_httponly_and_samesite(world):
    c = world.app.test_client()
    token = csrf_of(c.get("/login").text)
    resp = c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_in_production_the_cookie_is_secure_and_a_weak_secret_stops_the_start(tmp_path, sqlite_url):
    import secrets

    from conftest import make_app
    from keel.errors import ConfigError

    for weak in (None, "change-me", "x" * 31):
        with pytest.raises(ConfigError, match="KEEL_SECRET_KEY"):
            make_app(tmp_path, sqlite_url, KEEL_ENV="production", KEEL_SECRET_KEY=weak)
    app = make_app(tmp_path, sqlite_url, KEEL_ENV="production", KEEL_SECRET_KEY=secrets.token_hex(32))
    try:
        c = app.test_client()
        resp = c.get("/login", base_url="https://keel.example.com")
        assert "Secure" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
    finally:
        app.extensions["keel"].engine.dispose()


# ---------------------------------------------------------------- open redirects

@pytest.mark.parametrize("target", ["//evil.com", "/%2F/evil.com", "https://evil.com", "/\\evil.com",
                                    "https:evil.com", "%2F%2Fevil.com", "/\u3000/evil.com"])
def test_next_on_login_never_leaves_the_site_even_when_already_signed_in(world, target):
    """test_auth.py checks the POST; a signed-in user opening /login?next=... is redirected at once."""
    c = world.page_client("alice")
    location = c.get("/login", query_string={"next": target}).headers["Location"]
    assert "evil" not in location or location.startswith("/") and not location.startswith("//"), location
    anonymous = world.app.test_client()
    token = csrf_of(anonymous.get("/login").text)
    location = anonymous.post("/login", query_string={"next": target}, data={
        "username": "alice", "password": PASSWORD, "csrf_token": token}).headers["Location"]
    assert "evil" not in location or location.startswith("/") and not location.startswith("//"), location


# ---------------------------------------------------------------- headers on every response

def _assert_headers(resp, where: str) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp or "frame-ancestors 'self'" in csp, f"{where}: CSP {csp!r}"
    assert "object-src 'none'" in csp and "'unsafe-eval'" not in csp, f"{where}: CSP {csp!r}"
    assert resp.headers.get("X-Content-Type-Options") == "nosniff", where
    assert resp.headers.get("X-Frame-Options") in ("DENY", "SAMEORIGIN"), where


def _assert_no_inline_script(page: str, where: str) -> None:
    """The CSP forbids inline scripts: one on a page would be a page broken in every browser."""
    for tag in re.findall(r"<script[^>]*>", page):
        assert "src=" in tag, (where, tag)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), where


def test_every_route_answers_with_the_security_headers(world):
    page, api, headers = world.page_client("root"), world.app.test_client(), world.api_headers("root")
    values = {"app_id": "sec", "entity_id": "doc", "record_id": world.ids["canary"], "form_id": "new_doc",
              "id": world.ids["canary"]}
    checked = 0
    for is_api, client, hdrs in ((False, page, {}), (True, api, headers)):
        for rule in get_rules(world.app, api=is_api):
            path = fill_rule(rule, values)
            if path:
                resp = client.get(path, headers=hdrs)
                _assert_headers(resp, path)
                checked += 1
                if resp.mimetype == "text/html" and "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]:
                    _assert_no_inline_script(resp.text, path)
    assert checked >= 30
    anonymous = world.app.test_client()
    for resp, where in ((anonymous.get("/login"), "login page"), (anonymous.get("/workbench"), "login redirect"),
                        (anonymous.get("/api/v1/me"), "401"), (page.get("/no/such/page"), "404"),
                        (page.post("/apps/sec/forms/new_doc", data={}), "CSRF 400"),
                        (api.put("/api/v1/me", headers=headers), "405"),
                        (api.post("/api/v1/apps/sec/doc", data=b"x" * (3 * 1024 * 1024), headers=headers,
                                  content_type="application/json"), "413"),
                        (anonymous.get("/static/keel.css"), "static file")):
        _assert_headers(resp, where)


# ---------------------------------------------------------------- secrets never logged

NEW_PASSWORD = "Brand-new-passphrase-77"


def test_passwords_and_tokens_never_reach_the_logs_or_the_audit_trail(world, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    wrong = "Wrong-guess-passphrase-13"
    c = world.app.test_client()
    token = csrf_of(c.get("/login").text)
    assert c.post("/login", data={"username": "alice", "password": wrong, "csrf_token": token}).status_code == 401
    assert c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 302
    api = world.app.test_client()
    assert api.post("/api/v1/auth/token", json={"username": "bob", "password": wrong}).status_code == 401
    issued = api.post("/api/v1/auth/token", json={"username": "root", "password": PASSWORD}).get_json()["token"]
    bearer = {"Authorization": f"Bearer {issued}"}
    assert api.get("/api/v1/me", headers=bearer).status_code == 200
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {issued}x"}).status_code == 401
    assert api.post("/api/v1/users/bob/password", json={"password": NEW_PASSWORD},
                    headers=bearer).status_code == 204
    assert api.delete("/api/v1/auth/token", headers=bearer).status_code in (200, 204)
    with world.engine.connect() as conn:
        trail = json.dumps([list(r) for r in conn.execute(sa.text("SELECT * FROM keel_audit_events"))],
                           default=str)
        sessions = json.dumps([list(r) for r in conn.execute(sa.text("SELECT * FROM keel_sessions"))], default=str)
        tokens = json.dumps([list(r) for r in conn.execute(sa.text("SELECT * FROM keel_api_tokens"))], default=str)
    assert "auth.login" in trail  # the trail does record the events, only not their secrets
    for secret in (PASSWORD, wrong, NEW_PASSWORD, issued, issued.split("_", 1)[-1]):
        assert secret not in caplog.text, f"{secret[:6]}… in the log"
        assert secret not in trail, f"{secret[:6]}… in the audit trail"
    assert issued not in tokens and issued.split("_", 1)[-1] not in tokens  # stored hashed
    assert _cookie(c) and _cookie(c) not in sessions
