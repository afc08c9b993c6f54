"""The REST API under /api/v1, end to end: a real app (tests/fixtures/api_app, applied through
keel.apply), real users and tokens, the Flask test client, SQLite (and PostgreSQL for the main flow).
Every refusal is checked to leave the database exactly as it was."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_app
from helpers_registries import REGISTRIES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "api_app"
API = "/api/v1"
PROJECTS = f"{API}/apps/tracker/project"
TASKS = f"{API}/apps/tracker/task"


@dataclass
class World:
    """A running Keel with the tracker app applied and two users: a manager (may write) and a viewer
    (may only read)."""

    app: object
    client: object
    engine: sa.Engine
    tokens: dict[str, str]
    user_ids: dict[str, int]

    def headers(self, who: str = "manager", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def get(self, url: str, who: str = "manager", **headers: str):
        return self.client.get(url, headers=self.headers(who, **headers))

    def post(self, url: str, body, who: str = "manager", **headers: str):
        return self.client.post(url, json=body, headers=self.headers(who, **headers))

    def patch(self, url: str, body, version: int | None, who: str = "manager"):
        headers = self.headers(who)
        if version is not None:
            headers["If-Match"] = f'W/"{version}"'
        return self.client.patch(url, json=body, headers=headers)

    def delete(self, url: str, version: int | None = None, who: str = "manager"):
        headers = self.headers(who)
        if version is not None:
            headers["If-Match"] = f'W/"{version}"'
        return self.client.delete(url, headers=headers)

    def state(self) -> tuple:
        """Everything a write touches: the entity tables, record versions and audit events."""
        from keel.storage.system import audit_events, record_versions

        with self.engine.connect() as conn:
            rows = tuple(tuple(conn.execute(sa.text(f"SELECT * FROM tracker__{t} ORDER BY id")).all())
                         for t in ("project", "task"))
            versions = conn.execute(sa.select(sa.func.count()).select_from(record_versions)).scalar()
            events = conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar()
        return rows, versions, events


def apply_definition(engine: sa.Engine, path: Path = FIXTURE) -> None:
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir

    apply_app(engine, load_app_dir(path, REGISTRIES), SYSTEM)


def make_world(tmp_path: Path, db_url: str) -> World:
    from keel.actor import SYSTEM
    from keel.auth.directory import add_user
    from keel.auth.tokens import issue_token

    flask_app = make_app(tmp_path, db_url)
    engine = flask_app.extensions["keel"].engine
    apply_definition(engine)
    with engine.begin() as conn:
        ids = {"manager": add_user(conn, "mia", "Mia Manager", SYSTEM, roles=["manager"]),
               "viewer": add_user(conn, "victor", "Victor Viewer", SYSTEM, roles=["viewer"])}
        tokens = {who: issue_token(conn, uid) for who, uid in ids.items()}
    return World(flask_app, flask_app.test_client(), engine, tokens, ids)


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    yield w
    w.engine.dispose()


@pytest.fixture
def world_on_each_db(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def new_project(world: World, **values) -> dict:
    r = world.post(PROJECTS, {"name": "Apollo", **values})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


# ---- the main flow, on SQLite and PostgreSQL -----------------------------------------------------

def test_crud_round_trip_with_etags_locations_and_exact_values(world_on_each_db):
    w = world_on_each_db
    r = w.post(PROJECTS, {"name": "Apollo", "budget": "1234.5", "start": "2025-10-18", "status": "open",
                          "active": True, "score": 7})
    assert r.status_code == 201, r.get_json()
    created = r.get_json()
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/api/v1/apps/tracker/project/{created['id']}")
    # money stays exact: a string with the field's scale, never a float; dates are ISO
    assert created["budget"] == "1234.50" and created["start"] == "2025-10-18"
    assert created["row_version"] == 1 and created["created_by"] == w.user_ids["manager"]

    url = f"{PROJECTS}/{created['id']}"
    r = w.get(url)
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"1"'
    assert r.get_json()["name"] == "Apollo"

    r = w.patch(url, {"budget": "99.99", "status": "closed"}, version=1)
    assert r.status_code == 200, r.get_json()
    assert r.headers["ETag"] == 'W/"2"'
    assert r.get_json()["budget"] == "99.99" and r.get_json()["name"] == "Apollo"

    listed = w.get(PROJECTS).get_json()
    assert listed["total"] == 1 and listed["items"][0]["status"] == "closed"

    assert w.delete(url, version=2).status_code == 204
    r = w.get(url)
    assert r.status_code == 404 and "error" in r.get_json()
    assert w.get(PROJECTS).get_json()["total"] == 0
    with w.engine.connect() as conn:  # soft delete: the row is kept
        assert conn.execute(sa.text("SELECT count(*) FROM tracker__project")).scalar() == 1


# ---- bad input: 422 with a message per field, nothing written ------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"name": "Apollo", "score": "many"}, "score"),          # wrong type
    ({"name": "Apollo", "active": "perhaps"}, "active"),
    ({"name": "Apollo", "budget": "12.345"}, "budget"),      # more digits than money keeps
    ({"score": 5}, "name"),                                  # required field missing
    ({"name": "Apollo", "colour": "red"}, "colour"),          # unknown field
    ({"name": "x" * 101}, "name"),                            # longer than max_length
    ({"name": "Apollo", "status": "paused"}, "status"),       # not an option
    ({"name": "Apollo", "id": 77}, "id"),                     # system fields are the server's
    ({"name": "Apollo", "row_version": 9}, "row_version"),
    ({"name": "Apollo", "created_by": 1}, "created_by"),
])
def test_invalid_create_is_422_per_field_and_writes_nothing(world, body, field):
    new_project(world, name="existing")
    before = world.state()
    r = world.post(PROJECTS, body)
    assert r.status_code == 422, r.get_json()
    errors = r.get_json()["errors"]
    assert field in errors and all(isinstance(m, str) and m for m in errors[field])
    assert world.state() == before


@pytest.mark.parametrize("body, field", [
    ({"score": "many"}, "score"),
    ({"name": None}, "name"),   # a required field may be left out of an update, not emptied
    ({"row_version": 5}, "row_version"),
    ({"created_by": 2}, "created_by"),
    ({"nope": 1}, "nope"),
])
def test_invalid_update_is_422_and_changes_nothing(world, body, field):
    p = new_project(world)
    before = world.state()
    r = world.patch(f"{PROJECTS}/{p['id']}", body, version=1)
    assert r.status_code == 422, r.get_json()
    assert field in r.get_json()["errors"]
    assert world.state() == before


def test_a_body_that_is_not_a_json_object_is_refused_with_a_reason(world):
    before = world.state()
    for data, content_type, status in [("[1, 2]", "application/json", 400),
                                       ('"Apollo"', "application/json", 400),
                                       ('{"name": ', "application/json", 400),
                                       ("", "application/json", 400),
                                       ("name=Apollo", "application/x-www-form-urlencoded", 415)]:
        r = world.client.post(PROJECTS, data=data, headers=world.headers(**{"Content-Type": content_type}))
        assert r.status_code == status, (data, r.get_json())
        assert r.is_json and r.get_json()["error"]
    assert world.state() == before


def test_deeply_nested_and_oversized_bodies_are_refused(world):
    before = world.state()
    r = world.client.post(PROJECTS, data="[" * 10_000 + "]" * 10_000,
                          headers=world.headers(**{"Content-Type": "application/json"}))
    assert r.status_code == 400 and r.is_json
    r = world.client.post(PROJECTS, data=b'{"name": "' + b"x" * (3 * 1024 * 1024) + b'"}',
                          headers=world.headers(**{"Content-Type": "application/json"}))
    assert r.status_code == 413 and r.is_json and r.get_json()["error"]
    assert world.state() == before


def test_messages_follow_the_request_language(world):
    from keel.i18n import translate

    msgid = "This field is required."
    for lang in ("en", "zh_CN"):
        with world.app.test_request_context(f"/?lang={lang}"):
            expected = translate(msgid)  # the catalogue's text for that language (the msgid for en)
        r = world.client.post(f"{PROJECTS}?lang={lang}", json={"score": 5}, headers=world.headers())
        assert r.status_code == 422
        assert r.get_json()["errors"]["name"] == [expected]


# ---- optimistic concurrency ----------------------------------------------------------------------

def test_patch_based_on_a_stale_version_is_409_with_the_current_one(world):
    p = new_project(world)
    url = f"{PROJECTS}/{p['id']}"
    assert world.patch(url, {"score": 1}, version=1).status_code == 200
    before = world.state()
    r = world.patch(url, {"score": 2}, version=1)  # someone else's change (v2) would be lost
    assert r.status_code == 409
    assert r.get_json()["current_version"] == 2 and r.headers["ETag"] == 'W/"2"'
    assert world.state() == before
    assert world.get(url).get_json()["score"] == 1


def test_patch_without_if_match_is_428_and_changes_nothing(world):
    p = new_project(world)
    before = world.state()
    r = world.patch(f"{PROJECTS}/{p['id']}", {"score": 3}, version=None)
    assert r.status_code == 428
    assert "If-Match" in r.get_json()["error"]
    assert world.state() == before


def test_if_match_that_is_not_an_etag_is_400(world):
    p = new_project(world)
    r = world.client.patch(f"{PROJECTS}/{p['id']}", json={"score": 3},
                           headers=world.headers(**{"If-Match": "yesterday"}))
    assert r.status_code == 400 and "If-Match" in r.get_json()["error"]


def test_delete_with_a_stale_if_match_is_409_and_without_one_deletes(world):
    p = new_project(world)
    url = f"{PROJECTS}/{p['id']}"
    world.patch(url, {"score": 1}, version=1)
    before = world.state()
    assert world.delete(url, version=1).status_code == 409
    assert world.state() == before
    assert world.delete(url).status_code == 204
    assert world.get(url).status_code == 404


# ---- who may do what -----------------------------------------------------------------------------

def test_no_token_and_wrong_token_are_401_and_write_nothing(world):
    before = world.state()
    r = world.client.get(PROJECTS)
    assert r.status_code == 401 and r.is_json
    r = world.client.post(PROJECTS, json={"name": "x"}, headers={"Authorization": "Bearer keel_wrong"})
    assert r.status_code == 401 and r.is_json
    r = world.client.get(PROJECTS, headers={"Authorization": "Basic bWlhOnB3"})
    assert r.status_code == 401
    assert world.state() == before


def test_a_role_that_may_only_read_gets_403_on_every_write(world):
    p = new_project(world)
    url = f"{PROJECTS}/{p['id']}"
    before = world.state()
    assert world.get(url, who="viewer").status_code == 200
    for r in (world.post(PROJECTS, {"name": "mine"}, who="viewer"),
              world.patch(url, {"score": 1}, version=1, who="viewer"),
              world.delete(url, version=1, who="viewer"),
              world.post(f"{API}/apps/tracker/forms/new_task", {"title": "t", "project": p["id"]}, who="viewer")):
        assert r.status_code == 403, r.get_json()
        assert r.get_json()["error"]
    assert world.state() == before


def test_unknown_app_entity_record_and_path_are_404_json(world):
    for url in (f"{API}/apps/nope/project", f"{API}/apps/tracker/nope", f"{PROJECTS}/999",
                f"{PROJECTS}/999/history", f"{API}/apps/tracker/forms/nope", f"{API}/nothing/here"):
        r = world.get(url)
        assert r.status_code == 404, url
        assert r.is_json and r.get_json()["error"], url
    before = world.state()
    assert world.post(f"{API}/apps/tracker/nope", {"name": "x"}).status_code == 404
    assert world.patch(f"{PROJECTS}/999", {"score": 1}, version=1).status_code == 404
    assert world.state() == before


def test_a_method_the_route_does_not_have_is_405_json(world):
    r = world.client.put(PROJECTS, json={}, headers=world.headers())
    assert r.status_code == 405 and r.is_json and "GET" in r.headers["Allow"]


def test_an_unexpected_failure_is_500_with_a_log_id_and_no_traceback(world, caplog):
    new_project(world)
    with world.engine.begin() as conn:  # the table vanishes behind the running app's back
        conn.execute(sa.text("DROP TABLE tracker__task"))
    with caplog.at_level(logging.ERROR, logger="keel.api"):
        r = world.get(TASKS)
    assert r.status_code == 500
    body = r.get_json()
    assert body["error"] == "internal error" and body["id"]
    assert "Traceback" not in r.get_data(as_text=True) and "tracker__task" not in r.get_data(as_text=True)
    assert any(body["id"] in rec.getMessage() and rec.exc_info for rec in caplog.records)


# ---- lists ---------------------------------------------------------------------------------------

def test_list_filters_sorts_and_pages_with_link_headers(world):
    for i, score in enumerate((50, 10, 90, 30, 70)):
        new_project(world, name=f"p{i}", score=score, status="open" if score >= 50 else "closed")

    r = world.get(f"{PROJECTS}?score__gte=50&sort=-score")
    assert [p["score"] for p in r.get_json()["items"]] == [90, 70, 50]

    r = world.get(f"{PROJECTS}?status=closed&sort=score")
    assert [p["score"] for p in r.get_json()["items"]] == [10, 30]

    r = world.get(f"{PROJECTS}?sort=score&per_page=2&page=2")
    body = r.get_json()
    assert [p["score"] for p in body["items"]] == [50, 70]
    assert (body["total"], body["page"], body["per_page"]) == (5, 2, 2)
    assert 'rel="next"' in r.headers["Link"] and 'rel="prev"' in r.headers["Link"]
    assert "page=3" in body["next"] and "per_page=2" in body["next"] and "page=1" in body["prev"]

    last = world.get(body["next"]).get_json()
    assert [p["score"] for p in last["items"]] == [90] and "next" not in last

    # `lang` picks the language; it is not a filter on a field called "lang"
    assert world.get(f"{PROJECTS}?lang=en").status_code == 200


def test_list_refuses_unknown_sort_fields_filters_and_bad_paging(world):
    for query, place in (("sort=nope", "sort"), ("colour=red", "colour"), ("score__like=1", "score__like"),
                         ("page=0", "page"), ("per_page=x", "per_page"), ("score__gte=abc", "score__gte")):
        r = world.get(f"{PROJECTS}?{query}")
        assert r.status_code == 422, query
        assert place in r.get_json()["errors"], query


# ---- history, expansion, export ------------------------------------------------------------------

def test_history_lists_the_create_and_both_updates(world):
    p = new_project(world, score=1)
    url = f"{PROJECTS}/{p['id']}"
    world.patch(url, {"score": 2}, version=1)
    world.patch(url, {"score": 3, "status": "open"}, version=2)
    r = world.get(f"{url}/history")
    assert r.status_code == 200
    items = r.get_json()["items"]
    assert [(h["version"], h["action"]) for h in items] == [(1, "create"), (2, "update"), (3, "update")]
    assert items[1]["changes"]["score"] == [1, 2]
    assert items[2]["changes"]["score"] == [2, 3] and items[2]["user_id"] == world.user_ids["manager"]


def test_expand_replaces_link_and_user_ids_with_what_the_caller_may_see(world):
    p = new_project(world, owner=world.user_ids["viewer"])
    t = world.post(TASKS, {"title": "Write docs", "project": p["id"]}).get_json()

    r = world.get(f"{TASKS}/{t['id']}?expand=project,created_by")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["project"] == {"id": p["id"], "title": "Apollo"}
    assert body["created_by"]["username"] == "mia"

    owner = world.get(f"{PROJECTS}/{p['id']}?expand=owner").get_json()["owner"]
    assert owner == {"id": world.user_ids["viewer"], "username": "victor", "display_name": "Victor Viewer"}

    listed = world.get(f"{TASKS}?expand=project").get_json()["items"]
    assert listed[0]["project"]["title"] == "Apollo"

    r = world.get(f"{TASKS}/{t['id']}?expand=title")
    assert r.status_code == 422 and "expand" in r.get_json()["errors"]


def test_export_csv_has_the_filtered_rows(world):
    new_project(world, name="Alpha", score=1)
    new_project(world, name="Beta", score=2)
    r = world.get(f"{PROJECTS}/export.csv?score=2")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    text = r.get_data(as_text=True)
    assert "Beta" in text and "Alpha" not in text
    assert world.get(f"{PROJECTS}/export.csv?sort=nope").status_code == 422


# ---- forms ---------------------------------------------------------------------------------------

def test_form_schema_and_submission(world):
    p = new_project(world)
    url = f"{API}/apps/tracker/forms/new_task"
    r = world.get(f"{url}?lang=en")
    assert r.status_code == 200
    schema = r.get_json()
    assert list(schema["properties"]) == ["title", "project", "hours", "due"]
    assert set(schema["required"]) == {"title", "project"}  # the form makes `project` required
    assert schema["properties"]["title"]["title"] == "Title"

    before = world.state()
    r = world.post(url, {"title": "Plan"})
    assert r.status_code == 422 and "project" in r.get_json()["errors"]
    r = world.post(url, {"title": "Plan", "project": p["id"], "done": True})  # `done` is not on the form
    assert r.status_code == 422 and "done" in r.get_json()["errors"]
    assert world.state() == before

    r = world.post(url, {"title": "Plan", "project": p["id"], "hours": "1.5"})
    assert r.status_code == 201, r.get_json()
    task = r.get_json()
    assert task["hours"] == "1.50" and r.headers["ETag"] == 'W/"1"'
    assert world.get(r.headers["Location"]).get_json()["title"] == "Plan"

    assert world.get(url, who="viewer").status_code == 403  # viewers may not create tasks


# ---- audit ---------------------------------------------------------------------------------------

def test_audit_lists_the_events_of_a_record(world):
    p = new_project(world)
    world.patch(f"{PROJECTS}/{p['id']}", {"score": 4}, version=1)
    r = world.get(f"{API}/audit?app=tracker&entity=project&record={p['id']}")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["total"] == 2 and len(body["items"]) == 2
    assert all(e["record_id"] == p["id"] and e["entity"] == "project" for e in body["items"])
    assert world.get(f"{API}/audit?record=abc").status_code == 422
    assert world.get(f"{API}/audit?page=0").status_code == 422
