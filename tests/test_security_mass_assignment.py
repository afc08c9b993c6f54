"""Mass assignment through every HTTP channel (docs/security.md, "Mass assignment"): system columns,
unknown keys and a field the writer may not write (`secret`, auditors only), sent through the API's
create and update are refused with 422 naming the key and change nothing; the generated form and the
record page's edit (whose HTML forms only ever send their own inputs) either refuse them or leave them
out — never is a system column, another user's id or the auditors' field written from them. (Storage level: test_records.py; connector sync:
test_workflow_integrity.py.)"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from helpers_security import csrf_of, make_sec_world

FORBIDDEN = {"id": "999", "row_version": "9", "created_by": "1", "updated_by": "1", "created_at": "2020-01-01",
             "deleted_at": "2020-01-01", "is_admin": "true", "secret": "planted"}


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    w.ids["alices"] = w.ids["canary"]  # alice owns the canary document; she may edit it
    yield w
    w.engine.dispose()


@pytest.mark.parametrize("key", sorted(FORBIDDEN))
def test_a_system_unknown_or_forbidden_key_is_422_through_every_channel(world, key):
    value = FORBIDDEN[key]
    rid = world.ids["alices"]
    before = world.snapshot()
    api, headers = world.app.test_client(), world.api_headers("alice")
    json_value = int(value) if value.isdigit() else value
    resp = api.post("/api/v1/apps/sec/doc", json={"title": "t", key: json_value}, headers=headers)
    assert resp.status_code == 422 and key in resp.text, (key, resp.status_code, resp.text)
    resp = api.patch(f"/api/v1/apps/sec/doc/{rid}", json={"title": "t2", key: json_value},
                     headers={**headers, "If-Match": 'W/"1"'})
    assert resp.status_code == 422 and key in resp.text, (key, resp.status_code, resp.text)
    assert world.snapshot() == before
    page = world.page_client("alice")
    form = "/apps/sec/forms/new_doc"
    resp = page.post(form, data={"csrf_token": csrf_of(page.get(form).text), "title": "t", key: value})
    assert resp.status_code in (302, 422), (key, resp.status_code)
    record = page.get(f"/apps/sec/doc/{rid}").text
    resp = page.post(f"/apps/sec/doc/{rid}", data={"csrf_token": csrf_of(record), "title": "t3", "row_version": "1",
                                                   **({} if key == "row_version" else {key: value})})
    assert resp.status_code in (302, 422), (key, resp.status_code)
    alice, root = world.site.user_id("alice"), world.site.user_id("root")
    with world.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM sec__doc WHERE created_by = :a OR id = :r ORDER BY id"),
                            {"a": alice, "r": rid}).mappings().all()
    assert 999 not in [r["id"] for r in rows]
    for r in rows:
        assert r["secret"] != "planted" and r["deleted_at"] is None and r["row_version"] <= 2, dict(r)
        assert str(r["created_at"]) > "2021" and r["updated_by"] in (alice, root), dict(r)
        assert r["created_by"] == (root if r["id"] == rid else alice), dict(r)
