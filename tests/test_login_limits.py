"""Login limits (keel.auth.throttle, counted by Flask-Limiter) and the hashing cap
(keel.auth.credentials): per client address, per account and address (a delay that grows and expires),
per account (an attack from elsewhere never locks the owner out), counted atomically under many parallel
attempts on SQLite and PostgreSQL, in memory and in Redis; 429 and 503 answers with Retry-After; lockouts
in the audit trail. Client addresses are real: the test client's REMOTE_ADDR, or a real HTTP server
reached from distinct loopback addresses."""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from conftest import make_app
from helpers_timing import wait_until
from keel.actor import SYSTEM
from keel.auth.directory import add_user
from keel.storage.system import audit_events
from test_jobs_helpers import REDIS_URL, redis_available

PASSWORD = "correct horse battery"
WRONG = "wrong password"


def _app(tmp_path, db_url, **config):
    app = make_app(tmp_path, db_url, **config)
    with app.extensions["keel"].engine.begin() as conn:
        add_user(conn, "alice", "Alice", SYSTEM, password=PASSWORD)
        add_user(conn, "root", "Root", SYSTEM, password=PASSWORD, is_admin=True)
    return app


@pytest.fixture
def web(tmp_path, sqlite_url):
    app = _app(tmp_path, sqlite_url)
    yield app
    app.extensions["keel"].engine.dispose()


def token(app, username="alice", password=PASSWORD, address="10.0.0.1"):
    return app.test_client().post("/api/v1/auth/token", json={"username": username, "password": password},
                                  environ_base={"REMOTE_ADDR": address})


def page_login(app, username="alice", password=PASSWORD, address="10.0.0.1"):
    client = app.test_client()
    html = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf},
                       environ_base={"REMOTE_ADDR": address})


def lockouts(app) -> list[dict]:
    with app.extensions["keel"].engine.connect() as conn:
        return list(conn.execute(sa.select(audit_events.c.detail).where(audit_events.c.action == "auth.lockout")
                                 .order_by(audit_events.c.id)).scalars())


# ---- per account and address: the growing delay ---------------------------------------------------

def test_five_wrong_passwords_from_one_address_lock_that_address_out_of_the_account(web):
    for _ in range(5):
        assert token(web, password=WRONG).status_code == 401
    refused = token(web)  # the right password, from the address that was guessing
    assert refused.status_code == 429
    assert 14 * 60 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed logins" in refused.get_json()["error"] or "登录失败" in refused.get_json()["error"]
    assert "token" not in refused.get_json()
    page = page_login(web)  # the page shares the count and says the same
    assert page.status_code == 429 and int(page.headers["Retry-After"]) > 14 * 60
    assert token(web, username="ALICE").status_code == 429  # the count ignores case
    # The owner, from an address that has not been failing, is not locked out by it.
    assert token(web, address="10.0.0.2").status_code == 201
    assert page_login(web, address="10.0.0.2").status_code == 302
    # The lockout is in the audit trail once, by the address, naming the account.
    [event] = lockouts(web)
    assert event["scope"] == "account and address" and event["username"] == "alice"
    assert event["address"] == "10.0.0.1" and event["by"] == "address:10.0.0.1"


def test_an_unknown_username_is_counted_and_answered_the_same_way(web):
    known = token(web, password=WRONG, address="10.0.0.9").get_json()
    for _ in range(5):
        resp = token(web, username="nobody", password=WRONG)
        assert resp.status_code == 401 and resp.get_json() == known
    assert token(web, username="NoBody", password=WRONG).status_code == 429


def test_a_successful_login_forgives_the_failures_of_its_address(web):
    for _ in range(4):
        assert token(web, password=WRONG).status_code == 401
    assert token(web).status_code == 201
    for _ in range(4):  # a fresh count: four more failures do not lock
        assert token(web, password=WRONG).status_code == 401
    assert token(web).status_code == 201


def test_the_delay_expires_by_itself_and_grows_on_repeat(tmp_path, sqlite_url):
    # The short window must hold two password checks (argon2, ~0.1 s each alone) and the refusal after
    # them: thirty seconds does on a machine busy enough to make each check take ten. Its expiry is
    # waited for, not slept through.
    app = _app(tmp_path, sqlite_url, KEEL_LOGIN_LIMIT_PER_ACCOUNT_AND_ADDRESS="2 per 30 seconds; 3 per 1 hour",
               KEEL_LOGIN_LIMIT_PER_ADDRESS="1000 per minute")
    for _ in range(2):
        assert token(app, password=WRONG).status_code == 401
    first = token(app, password=WRONG)
    assert first.status_code == 429 and 0 < int(first.headers["Retry-After"]) <= 30
    answers = []
    wait_until(lambda: answers.append(token(app, password=WRONG)) or answers[-1].status_code != 429,
               "the thirty-second lock to expire", every=0.5)  # the short lock runs out by itself
    assert answers[-1].status_code == 401
    longer = token(app)  # the third failure within the hour: now the lock is the hour's
    assert longer.status_code == 429 and int(longer.headers["Retry-After"]) > 60 * 59


# ---- per address ------------------------------------------------------------------------------

def test_one_address_trying_many_usernames_is_limited(tmp_path, sqlite_url):
    app = _app(tmp_path, sqlite_url, KEEL_LOGIN_LIMIT_PER_ADDRESS="3 per minute")
    for name in ("amy", "bob", "cy"):
        assert token(app, username=name, password=WRONG).status_code == 401
    refused = token(app, username="root")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert "network address" in refused.get_json()["error"] or "网络地址" in refused.get_json()["error"]
    assert token(app, username="root", address="10.0.0.2").status_code == 201  # another address
    assert [e["scope"] for e in lockouts(app)] == ["address"]


# ---- per account: an attack from many addresses ----------------------------------------------------

def test_an_account_under_attack_still_lets_its_owner_in_from_a_clean_address(tmp_path, sqlite_url):
    app = _app(tmp_path, sqlite_url, KEEL_LOGIN_LIMIT_PER_ACCOUNT="6 per hour")
    # Three addresses guess twice each at the administrator: the account is now under attack.
    for i in range(3):
        for _ in range(2):
            assert token(app, "root", WRONG, address=f"10.1.0.{i}").status_code == 401
    assert [e["scope"] for e in lockouts(app)] == ["account"]
    # An address that has been failing waits, even with the right password ...
    waiting = token(app, "root", address="10.1.0.0")
    assert waiting.status_code == 429 and int(waiting.headers["Retry-After"]) > 60 * 59
    # ... a new address may try once: a guesser gets one guess, the owner gets in.
    assert token(app, "root", WRONG, address="10.1.0.7").status_code == 401
    assert token(app, "root", WRONG, address="10.1.0.7").status_code == 429
    assert token(app, "root", address="10.9.9.9").status_code == 201
    # Having signed in, that address stays trusted during the attack.
    assert token(app, "root", address="10.9.9.9").status_code == 201
    # Other accounts are not affected.
    assert token(app, "alice", address="10.1.0.0").status_code == 201


# ---- atomic counting under parallel attempts --------------------------------------------------------

class Server:
    """The app on a real threaded HTTP server on 127.0.0.1; requests may come from any 127.x address."""

    def __init__(self, app):
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.thread.join(timeout=180)

    def login(self, username, password, source="127.0.0.1") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60, source_address=(source, 0))
        try:
            conn.request("POST", "/api/v1/auth/token", json.dumps({"username": username, "password": password}),
                         {"Content-Type": "application/json"})
            return conn.getresponse().status
        finally:
            conn.close()


def _parallel(n, fn):
    start = threading.Barrier(n)

    def one(i):
        start.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _forty_parallel_guesses_check_exactly_five(app):
    # The five admitted checks share two hashing slots; on a busy machine the last may wait longer than
    # the usual five seconds for one, which would be a 503 about speed, not about counting.
    app.extensions["keel.login"].slots.wait = 180
    with Server(app) as server:
        statuses = _parallel(40, lambda i: server.login("alice", f"guess {i}"))
        assert sorted(set(statuses)) == [401, 429], statuses
        assert statuses.count(401) == 5, statuses  # five passwords checked, not seven or eight
        # Unknown usernames are counted just as exactly.
        statuses = _parallel(40, lambda i: server.login("ghost", f"guess {i}", source="127.0.0.2"))
        assert statuses.count(401) == 5, statuses
        assert server.login("alice", PASSWORD, source="127.0.0.3") == 201
    # Each source's lockout is in the audit trail once; 40 attempts also used up the per-address
    # limit (30 a minute), reported once at most.
    events = [(e["address"], e["scope"]) for e in lockouts(app)]
    for source in ("127.0.0.1", "127.0.0.2"):
        assert events.count((source, "account and address")) == 1, events
        assert events.count((source, "address")) <= 1, events


def test_forty_parallel_guesses_check_exactly_five_passwords(tmp_path, db_url):
    app = _app(tmp_path, db_url)
    try:
        _forty_parallel_guesses_check_exactly_five(app)
    finally:
        app.extensions["keel"].engine.dispose()


@pytest.fixture
def redis_url():
    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set KEEL_TEST_REDIS_URL)")
    return REDIS_URL


def test_counted_in_redis_parallel_guesses_check_exactly_five_and_every_process_sees_the_count(
        tmp_path, db_url, redis_url):
    app = _app(tmp_path, db_url, KEEL_REDIS_URL=redis_url)
    other = make_app(tmp_path / "other", db_url, KEEL_REDIS_URL=redis_url)  # a second web process
    try:
        assert app.config["RATELIMIT_STORAGE_URI"] == redis_url
        _forty_parallel_guesses_check_exactly_five(app)
        assert token(other, address="127.0.0.1").status_code == 429
        assert token(other, address="127.0.0.3").status_code == 201
    finally:
        app.extensions["keel"].engine.dispose()
        other.extensions["keel"].engine.dispose()


def test_logins_go_on_counted_in_memory_when_redis_is_unreachable(tmp_path, sqlite_url, caplog):
    app = _app(tmp_path, sqlite_url, KEEL_REDIS_URL="redis://127.0.0.1:1/0")
    for _ in range(5):
        assert token(app, password=WRONG).status_code == 401
    assert token(app).status_code == 429
    assert token(app, address="10.0.0.2").status_code == 201
    assert "counting in this process" in caplog.text


# ---- the hashing cap ------------------------------------------------------------------------------

def test_no_free_hashing_slot_is_a_503_with_retry_after(web):
    slots = web.extensions["keel.login"].slots
    slots.wait = 0.05
    with slots.slot():
        with slots.slot():  # both slots (KEEL_LOGIN_CONCURRENT_HASHES=2) taken by other logins
            busy = token(web)
            page = page_login(web)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert "busy" in busy.get_json()["error"] or "正忙" in busy.get_json()["error"]
    assert page.status_code == 503 and page.headers["Retry-After"] == "2"
    assert token(web).status_code == 201


def test_an_unknown_username_takes_as_long_as_a_wrong_password(web):
    """Without the dummy-hash check an unknown name answers ~100x faster than a wrong password.

    Measured in CPU time, not wall time: other processes on a busy machine stretch one check's wall time
    by any factor, never the work it does. The process's CPU time (`time.process_time`), since argon2
    (parallelism 4) hashes on threads of its own that the request's thread does not see."""
    token(web, username="warmup", address="10.9.0.0")  # builds the dummy hash once

    def cpu(username, i):
        start = time.process_time()
        assert token(web, username, WRONG, address=f"10.9.{i}.1").status_code == 401
        return time.process_time() - start

    known = min(cpu("alice", i) for i in range(3))
    unknown = min(cpu(f"ghost{i}", i) for i in range(3))
    assert unknown > 0.3 * known, (unknown, known)


@pytest.mark.parametrize("key, value", [("KEEL_LOGIN_LIMIT_PER_ADDRESS", "lots"),
                                        ("KEEL_LOGIN_LIMIT_PER_ACCOUNT", "5 per fortnight"),
                                        ("KEEL_LOGIN_CONCURRENT_HASHES", "0"),
                                        ("KEEL_PROXY_COUNT", "many")])
def test_a_bad_limit_setting_is_a_clear_startup_error(tmp_path, sqlite_url, key, value):
    from keel.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        make_app(tmp_path, sqlite_url, **{key: value})


def test_behind_a_proxy_the_forwarded_client_address_is_counted(tmp_path, sqlite_url):
    app = _app(tmp_path, sqlite_url, KEEL_PROXY_COUNT="1")

    def via_proxy(client_address, password=WRONG):
        return app.test_client().post("/api/v1/auth/token", json={"username": "alice", "password": password},
                                      environ_base={"REMOTE_ADDR": "10.0.0.254"},
                                      headers={"X-Forwarded-For": client_address})

    for _ in range(5):
        assert via_proxy("203.0.113.7").status_code == 401
    assert via_proxy("203.0.113.7", PASSWORD).status_code == 429
    assert via_proxy("198.51.100.1", PASSWORD).status_code == 201
    # A header that names no address counts as one client, and is stored as such: no 500 on a NUL.
    for junk in ("x" * 5000, "not-an-ip", "1.2.3", "::g", "999.1.1.1"):
        assert via_proxy(junk).status_code in (401, 429)
    assert via_proxy("\x00evil").status_code == 422  # text with NUL is refused at the boundary
    assert {e["address"] for e in lockouts(app)} == {"203.0.113.7", "unknown"}


@pytest.mark.parametrize("remote, counted", [
    ("10.0.0.1", "10.0.0.1"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"), ("::ffff:10.0.0.1", "10.0.0.1"), (None, "unknown"),
    ("", "unknown"), ("10.0.0.1\x00", "unknown")])
def test_what_counts_as_one_client_address(remote, counted):
    from keel.auth.throttle import client_address

    assert client_address(remote) == counted
