"""The security tests' world: the `sec` fixture app (tests/fixtures/security_app) applied on a real
database, users signed in through the real /login page or holding a real API token, and a CANARY
document owned by alice whose title and secret field must never reach anyone who may not read them."""
from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from werkzeug.routing import AnyConverter, IntegerConverter

from test_pages import PASSWORD, Site, add_users, csrf_of, setup_site

FIXTURE = Path(__file__).parent / "fixtures" / "security_app"
CANARY_TITLE = "CANARY-TITLE-9d41"
CANARY_SECRET = "CANARY-SECRET-5be7"
BOB_SECRET = "BOB-SECRET-a1c3"

__all__ = ["PASSWORD", "Site", "csrf_of", "SecWorld", "make_sec_world", "fill_rule", "get_rules"]


class SecWorld:
    def __init__(self, site: Site):
        self.site = site
        self.app = site.app
        self.engine = site.engine
        self.ids: dict[str, int] = {}

    def page_client(self, username: str | None = None):
        return self.site.client(username)

    def api_headers(self, username: str) -> dict[str, str]:
        resp = self.app.test_client().post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
        assert resp.status_code in (200, 201), resp.text
        return {"Authorization": f"Bearer {resp.get_json()['token']}"}

    def snapshot(self) -> dict[str, list]:
        """Every row of the app's tables and of the audit trail: a refused request must change none."""
        out = {}
        with self.engine.connect() as conn:
            for table in ("sec__doc", "sec__note", "keel_record_versions"):
                out[table] = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]
            # signing in and issuing a token are audited (auth.*, token.*); anything else a refused request wrote would be a bug
            out["audit"] = [tuple(r) for r in conn.execute(sa.text(
                "SELECT * FROM keel_audit_events WHERE action NOT LIKE 'auth.%' AND action NOT LIKE 'token.%' "
                "ORDER BY id"))]
        return out


def make_sec_world(tmp_path, db_url) -> SecWorld:
    site = setup_site(tmp_path, db_url, FIXTURE)  # root (admin), alice and bob (members)
    add_users(site, ("carl", "Carl 审计", {"roles": ["auditor"]}))
    site.app.extensions["keel"].refresh()
    w = SecWorld(site)
    w.ids["canary"] = create_record(site, "root", "doc", title=CANARY_TITLE, secret=CANARY_SECRET,
                              owner=site.user_id("alice"), amount=7777)
    w.ids["bobs"] = create_record(site, "root", "doc", title="bob's doc", secret=BOB_SECRET, owner=site.user_id("bob"))
    w.ids["note"] = create_record(site, "alice", "note", title="a note on the canary", doc=w.ids["canary"])
    return w


def create_record(site: Site, username: str, entity: str, **values) -> int:
    from keel.auth.directory import get_actor
    from keel.storage import records

    built = site.app.extensions["keel"].get("sec")
    uid = site.user_id(username)
    with site.engine.begin() as conn:
        return records.create(conn, built, entity, values, get_actor(conn, uid))["id"]


def get_rules(app, *, api: bool):
    """Every GET rule of the app, page or API, except static files and the public ones."""
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        if "/_dash-component-suites/" in rule.rule:
            continue  # Dash's bundled scripts: static files of installed packages, no data behind them
        if rule.rule.startswith("/api/") == api:
            yield rule


def fill_rule(rule, values: dict[str, object]) -> str | None:
    """The rule's path with each argument taken from `values` by name (or by its last word: `record_id`
    → `id`), dummies for the rest; None when the rule cannot be built from them."""
    args = {}
    for name, conv in rule._converters.items():
        if name in values:
            args[name] = values[name]
        elif isinstance(conv, IntegerConverter):
            args[name] = values.get("id", 1)
        elif isinstance(conv, AnyConverter):
            args[name] = min(conv.items)
        else:
            args[name] = f"x{uuid.uuid4().hex[:4]}"
    try:
        return rule.build(args, append_unknown=False)[1]
    except Exception:
        return None
