"""Every write is attributed (docs/security.md, "Principles"): writes through each channel — the API
(create, update, delete), the generated form, the record page's edit, an administrator's password reset
and a token — each leave exactly one audit event naming the user who made it, in order, in the same
transaction as the change; nothing in the trail is anonymous except what Keel itself did as `system`."""
from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from helpers_security import csrf_of, make_sec_world


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def _events(w, after: int) -> list[tuple]:
    with w.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT e.action, e.entity, e.record_id, u.username FROM keel_audit_events e "
            "LEFT JOIN keel_users u ON u.id = e.user_id WHERE e.id > :a AND e.action NOT LIKE 'auth.%' "
            "ORDER BY e.id"), {"a": after})]


def _last_id(w) -> int:
    with w.engine.connect() as conn:
        return conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM keel_audit_events")).scalar()


def test_each_write_through_each_channel_is_one_event_naming_its_user(world):
    api = world.app.test_client()
    alice_h, root_h = world.api_headers("alice"), world.api_headers("root")
    start = _last_id(world)
    created = api.post("/api/v1/apps/sec/doc", json={"title": "via api"}, headers=alice_h)
    assert created.status_code == 201, created.text
    rid = created.get_json()["id"]
    assert api.patch(f"/api/v1/apps/sec/doc/{rid}", json={"title": "via api 2"},
                     headers={**alice_h, "If-Match": 'W/"1"'}).status_code == 200
    bob = world.page_client("bob")
    r = bob.post("/apps/sec/forms/new_doc", data={"csrf_token": csrf_of(bob.get("/apps/sec/forms/new_doc").text),
                                                   "title": "via form"})
    assert r.status_code == 302, r.text
    bob_rid = int(re.search(r"/apps/sec/doc/(\d+)", r.headers["Location"]).group(1))
    page = bob.get(f"/apps/sec/doc/{bob_rid}").text
    r = bob.post(f"/apps/sec/doc/{bob_rid}", data={"csrf_token": csrf_of(page), "title": "via page edit",
                                                   "row_version": "1"})
    assert r.status_code == 302, r.text
    assert api.delete(f"/api/v1/apps/sec/doc/{rid}", headers=alice_h).status_code == 204
    assert api.post("/api/v1/users/bob/password", json={"password": "Another-passphrase-88"},
                    headers=root_h).status_code == 204
    events = _events(world, start)
    records = [e for e in events if e[0].startswith("record.")]
    assert records == [("record.create", "doc", rid, "alice"), ("record.update", "doc", rid, "alice"),
                       ("record.create", "doc", bob_rid, "bob"), ("record.update", "doc", bob_rid, "bob"),
                       ("record.delete", "doc", rid, "alice")]
    assert [e for e in events if "password" in e[0]] and all(e[3] == "root" for e in events if "password" in e[0])
    assert all(e[3] is not None for e in events), events  # no anonymous write
    with world.engine.connect() as conn:
        stamped = conn.execute(sa.text("SELECT created_by, updated_by FROM sec__doc WHERE id = :i"),
                               {"i": bob_rid}).one()
    assert stamped == (world.site.user_id("bob"), world.site.user_id("bob"))


def test_only_keel_itself_writes_anonymously(world):
    """Events without a user are Keel's own (applying a definition, seeding), and say so."""
    with world.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT action, detail FROM keel_audit_events WHERE user_id IS NULL")).all()
    assert rows  # applying the fixture app was Keel's own doing
    for action, detail in rows:
        detail = json.loads(detail) if isinstance(detail, str) else detail
        assert detail.get("by", "").startswith(("system", "cli:")), (action, detail)
