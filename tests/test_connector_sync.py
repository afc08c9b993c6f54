"""The generic `connector_sync` job: connector items upserted into an entity by an external key, run through
the jobs engine's foreground path (`run_in_foreground`) against a real HTTP server on 127.0.0.1. A repeated
sync with no upstream change writes nothing; a record gone upstream is marked, never deleted; bad items are
skipped and reported, or fail the run with nothing written. Also the shared `SyncWorld` the HR plugin's
tests use."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_app
from helpers_registries import REGISTRIES
from loopback import LoopbackServer, Reply

CUSTOMER = {"id": "customer", "label": {"zh": "客户", "en": "Customer"}, "title_field": "name",
            "fields": [{"id": "crm_id", "type": "text", "label": "CRM id", "unique": True, "read_only": True,
                        "max_length": 40},
                       {"id": "name", "type": "text", "label": "Name", "required": True, "max_length": 100},
                       {"id": "revenue", "type": "money", "label": "Revenue", "currency": "CNY", "min": 0},
                       {"id": "active", "type": "boolean", "label": "Active"}],
            "permissions": [{"role": "sales", "read": "all"}]}
MAPPING = {"crm_id": "id", "name": "name", "revenue": {"path": "revenue", "required": False},
           # present upstream means active: a record that comes back after vanishing is active again
           "active": {"path": "active", "default": True}}


@dataclass
class SyncWorld:
    """An app folder with entities, connectors and jobs, applied to a running Keel (its job engine)."""

    app: object
    env: object
    folder: Path

    @property
    def engine(self) -> sa.Engine:
        return self.env.engine

    def run(self, job: str, **params) -> dict:
        """Run `job` now in the foreground, as `keel jobs run` does; retries do not wait."""
        from keel.jobs.catalog import ask, find_spec, merged_params, run_in_foreground

        spec = replace(find_spec(self.env, job), idempotency="run")
        asked = ask(self.env, spec, merged_params(self.env, spec, params), trigger="cli", user_id=None)
        assert asked.outcome == "queued", asked
        return run_in_foreground(self.env, asked.run_id, sleep=lambda s: None)

    def rewrite(self, kind: str, body: dict) -> None:
        """Change one definition file and apply the app again (e.g. a connector's new URL)."""
        from keel.actor import SYSTEM
        from keel.apply import apply_app
        from keel.definitions.loader import load_app_dir

        write_json(self.folder / kind / f"{body['id']}.json", body)
        apply_app(self.engine, load_app_dir(self.folder, REGISTRIES), SYSTEM)
        self.env.runtime.refresh()

    def count(self, table: sa.Table, *where) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()

    def writes(self) -> tuple[int, int]:
        """(version rows, audit events): what every write of Keel leaves behind."""
        from keel.storage.system import audit_events, record_versions

        return self.count(record_versions), self.count(audit_events)


def write_json(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, ensure_ascii=False), "utf-8")


def make_world(tmp_path: Path, db_url: str, *, entities=(), connectors=(), jobs=(), app_id="crm") -> SyncWorld:
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_app_dir
    from keel.jobs import jobs_env

    folder = tmp_path / app_id
    write_json(folder / "app.json", {"id": app_id, "version": "1", "label": {"zh": "同步", "en": "Sync"},
                                     "roles": [{"id": "sales", "label": "Sales"}]})
    for kind, bodies in (("entities", entities), ("connectors", connectors), ("jobs", jobs)):
        for body in bodies:
            write_json(folder / kind / f"{body['id']}.json", body)
    flask_app = make_app(tmp_path, db_url)
    env = jobs_env(flask_app)
    apply_app(env.engine, load_app_dir(folder, REGISTRIES), SYSTEM)
    env.runtime.refresh()
    return SyncWorld(flask_app, env, folder)


def crm_connector(server: LoopbackServer, **config) -> dict:
    return {"id": "crm_api", "type": "http_json", "allowlist": [server.allow],
            "config": {"url": server.url("/api/customers"), "items": "data",
                       "pagination": {"type": "page", "page_param": "page", "size_param": "size", "page_size": 2},
                       "retries": {"max": 1, "backoff_seconds": [0]}, **config}}


def sync_job(**params) -> dict:
    return {"id": "crm_sync", "type": "connector_sync", "retries": {"max": 0},
            "params": {"connector": "crm_api", "entity": "customer", "key": "crm_id", "mapping": MAPPING,
                       "on_missing": {"field": "active", "value": False}, **params}}


def serve_pages(server: LoopbackServer, rows: list[dict]) -> None:
    """The CRM answers ?page=&size= from `rows`, read at request time (tests change it)."""
    def page(req):
        n, size = int(req.query["page"]), int(req.query["size"])
        return Reply(json={"data": rows[(n - 1) * size:n * size]})

    server.handle("/api/customers", page)


def customers(world: SyncWorld) -> dict[str, dict]:
    table = world.env.runtime.get("crm").table("customer")
    with world.engine.connect() as conn:
        return {r.crm_id: dict(r._mapping) for r in conn.execute(sa.select(table))}


ROWS = [{"id": "C1", "name": "华东制造", "revenue": 120000}, {"id": "C2", "name": "Beta Retail", "revenue": 5000},
        {"id": "C3", "name": "Gamma Cloud"}]


def test_items_are_upserted_by_key_and_a_repeated_sync_writes_nothing(tmp_path, db_url):
    with LoopbackServer() as crm:
        rows = [dict(r) for r in ROWS]
        serve_pages(crm, rows)
        world = make_world(tmp_path, db_url, entities=[CUSTOMER], connectors=[crm_connector(crm)], jobs=[sync_job()])
        before = world.writes()
        run = world.run("crm_sync")
        assert run["status"] == "succeeded", run["error"]
        assert run["counts"] == {"items": 3, "created": 3, "updated": 0, "unchanged": 0, "missing": 0, "invalid": 0}
        got = customers(world)
        assert {k: (v["name"], v["revenue"], v["active"]) for k, v in got.items()} == {
            "C1": ("华东制造", 120000, True), "C2": ("Beta Retail", 5000, True), "C3": ("Gamma Cloud", None, True)}
        after_first = world.writes()
        assert after_first == (before[0] + 3, before[1] + 3)  # a version row and an event per record

        again = world.run("crm_sync")
        assert again["counts"] == {"items": 3, "created": 0, "updated": 0, "unchanged": 3, "missing": 0,
                                   "invalid": 0}
        assert world.writes() == after_first  # nothing: no version rows, no audit events
        assert {k: v["row_version"] for k, v in customers(world).items()} == {"C1": 1, "C2": 1, "C3": 1}

        rows[1]["revenue"] = 7500  # one change upstream: one update, one version row
        changed = world.run("crm_sync")
        assert (changed["counts"]["updated"], changed["counts"]["unchanged"]) == (1, 2)
        assert customers(world)["C2"]["revenue"] == 7500 and customers(world)["C2"]["row_version"] == 2
        assert world.writes() == (after_first[0] + 1, after_first[1] + 1)


def test_a_record_gone_upstream_is_marked_inactive_not_deleted_and_comes_back(tmp_path, db_url):
    from keel.storage.system import record_versions

    with LoopbackServer() as crm:
        rows = [dict(r) for r in ROWS]
        serve_pages(crm, rows)
        world = make_world(tmp_path, db_url, entities=[CUSTOMER], connectors=[crm_connector(crm)], jobs=[sync_job()])
        world.run("crm_sync")
        gone = rows.pop(0)
        run = world.run("crm_sync")
        assert run["counts"]["missing"] == 1
        c1 = customers(world)["C1"]
        assert (c1["active"], c1["deleted_at"], c1["name"]) == (False, None, "华东制造")
        versions = world.count(record_versions, record_versions.c.entity == "customer")
        assert world.run("crm_sync")["counts"]["missing"] == 0  # already marked: nothing written again
        assert world.count(record_versions, record_versions.c.entity == "customer") == versions

        rows.append(gone)
        back = world.run("crm_sync")
        assert back["counts"]["updated"] == 1 and customers(world)["C1"]["active"] is True


def test_bad_items_are_skipped_and_counted_or_fail_the_run_with_nothing_written(tmp_path, db_url):
    with LoopbackServer() as crm:
        rows = [*ROWS, {"id": "C4"}, {"name": "no key"}, {"id": "C5", "name": "Delta", "revenue": -3}]
        serve_pages(crm, rows)
        world = make_world(tmp_path, db_url, entities=[CUSTOMER], connectors=[crm_connector(crm)],
                           jobs=[sync_job(skip_invalid=False)])
        before = world.writes()
        strict = world.run("crm_sync")
        assert strict["status"] == "failed"
        assert "2 customer item(s) cannot be synced, nothing was written" in strict["error"]
        assert "item 3: field 'name' (path 'name'): value is missing" in strict["error"]
        assert "item 4: field 'crm_id' (path 'id'): value is missing" in strict["error"]
        assert customers(world) == {} and world.writes() == before

        lenient = world.run("crm_sync", skip_invalid=True)
        assert lenient["status"] == "succeeded", lenient["error"]
        # C4 and the keyless item fail mapping; C5's negative revenue is refused by the write path.
        assert lenient["counts"] == {"items": 6, "created": 3, "updated": 0, "unchanged": 0, "missing": 0,
                                     "invalid": 3}
        assert sorted(customers(world)) == ["C1", "C2", "C3"]


def test_an_item_without_a_key_stops_marking_records_missing(tmp_path, sqlite_url):
    with LoopbackServer() as crm:
        rows = [dict(r) for r in ROWS]
        serve_pages(crm, rows)
        world = make_world(tmp_path, sqlite_url, entities=[CUSTOMER], connectors=[crm_connector(crm)],
                           jobs=[sync_job()])
        world.run("crm_sync")
        rows[0] = {"name": "C1 lost its id in a bad export"}
        run = world.run("crm_sync")
        assert run["counts"]["missing"] == 0 and customers(world)["C1"]["active"] is True


def test_upstream_failures_are_clear_errors_and_write_nothing(tmp_path, sqlite_url):
    with LoopbackServer() as crm:
        world = make_world(tmp_path, sqlite_url, entities=[CUSTOMER], connectors=[crm_connector(crm)],
                           jobs=[sync_job()])
        before = world.writes()
        crm.reply("/api/customers", Reply(500, body="database down"))
        run = world.run("crm_sync")
        assert run["status"] == "failed" and "HTTP 500 after 2 attempts: database down" in run["error"]
        crm.reply("/api/customers", Reply(body=b'{"data": [{"id": "C1", '))
        run = world.run("crm_sync")
        assert run["status"] == "failed" and "malformed JSON in the response" in run["error"]
        crm.reply("/api/customers", Reply(json={"data": []}))
        run = world.run("crm_sync")
        assert run["status"] == "failed" and "the connector returned no items" in run["error"]
        assert world.writes() == before and customers(world) == {}


def test_a_loopback_connector_without_an_allowlist_entry_is_refused(tmp_path, sqlite_url):
    with LoopbackServer() as crm:
        serve_pages(crm, ROWS)
        connector = {**crm_connector(crm), "allowlist": []}
        world = make_world(tmp_path, sqlite_url, entities=[CUSTOMER], connectors=[connector], jobs=[sync_job()])
        run = world.run("crm_sync")
        assert run["status"] == "failed"
        assert "loopback address" in run["error"] and "unless an administrator allowlists it" in run["error"]
        assert crm.requests == []  # refused before connecting
        world.rewrite("connectors", crm_connector(crm))
        assert world.run("crm_sync")["status"] == "succeeded"


def test_definition_errors_name_the_connector_entity_key_and_mapping(tmp_path, sqlite_url):
    from dataclasses import replace

    from keel.connectors.sync import ConnectorSync, connector_definition_errors
    from keel.definitions.errors import DefinitionErrors
    from keel.definitions.loader import load_app_dir
    from keel.definitions.model import Definition, freeze

    world = make_world(tmp_path, sqlite_url, entities=[CUSTOMER])
    write_json(world.folder / "connectors" / "crm_api.json",
               {"id": "crm_api", "type": "http_json", "config": {"url": "ftp://crm"}, "allowlist": ["not a host!"]})
    with pytest.raises(DefinitionErrors) as refused:  # the connectors kind checks configs as it loads them
        load_app_dir(world.folder, REGISTRIES)
    assert [(e.file, e.pointer) for e in refused.value.errors] == [
        ("connectors/crm_api.json", "/allowlist/0"), ("connectors/crm_api.json", "/config/url")]
    # the sync job's own checks, on the app as it would be (the bad connector beside a valid one)
    (world.folder / "connectors" / "crm_api.json").unlink()
    app_def = load_app_dir(world.folder, REGISTRIES)
    bad = Definition("crm_api", "connector", "connectors/crm_api.json", freeze(
        {"id": "crm_api", "type": "http_json", "config": {"url": "ftp://crm"}, "allowlist": ["not a host!"]}))
    app_def = replace(app_def, definitions={**app_def.definitions,
                                            "connector": {**app_def.definitions_of("connector"), "crm_api": bad}})
    sync = ConnectorSync()
    assert sync.definition_errors(app_def, {"connector": "nope", "entity": "order", "key": "id"}) == [
        ("/connector", "no connector 'nope' in app 'crm'"), ("/entity", "no entity 'order' in app 'crm'")]
    errors = sync.definition_errors(app_def, {"connector": "crm_api", "entity": "customer", "key": "name",
                                              "mapping": {"name": "n", "nope": "x"},
                                              "on_missing": {"field": "gone", "value": False}})
    assert [e[0] for e in errors] == ["/connector", "/connector", "/key", "/mapping/nope", "/on_missing/field"]
    assert "$.config.url: 'ftp://crm' does not match" in errors[0][1]
    assert "$.allowlist[0]: invalid allowlist entry 'not a host!'" in errors[1][1]
    assert errors[2][1] == "'name' must be a unique field of entity 'customer'"
    assert ("/mapping", "the key field 'crm_id' must be mapped") in sync.definition_errors(
        app_def, {"connector": "crm_api", "entity": "customer", "key": "crm_id", "mapping": {"name": "n"}})
    assert next(str(e) for e in connector_definition_errors(app_def, "crm_api")).startswith(
        "connectors/crm_api.json: /config/url: 'ftp://crm' does not match")


def run_beside_web_writes(sqlite_url: str, job, table: sa.Table, total: int, half_way: int) -> dict:
    """Run `job()` (returning a run) on a thread while this one writes as a web request would, and
    require at least `half_way` of those writes to see the job half-way through filling `table` with
    `total` rows: they got in between the job's commits. Returns the run.

    Nothing here depends on the machine's speed: the caller makes the job commit at checkpoints however
    fast it runs (`checkpoint_seconds`), so a fast machine does not finish between two writes, and a web
    write waits as long as it takes (a busy machine makes one batch slow; how long a batch holds the
    lock is measured in bench/, not asserted here). A job that held the lock from its first write to its
    last would let every write in only before it began or after it ended: none would see it half-way."""
    import threading
    import time

    from helpers_timing import PATIENCE
    from keel.storage.db import create_engine

    web = create_engine(sqlite_url, lock_timeout=PATIENCE)
    with web.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE web_writes (id INTEGER PRIMARY KEY)")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(job()))
    thread.start()
    seen_half_way = 0
    try:
        while thread.is_alive():
            with web.begin() as conn:
                conn.exec_driver_sql("INSERT INTO web_writes DEFAULT VALUES")
            with web.connect() as conn:
                seen_half_way += 0 < conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() < total
            time.sleep(0.02)
    finally:
        thread.join()
        web.dispose()
    assert result["status"] == "succeeded", result["error"]
    assert seen_half_way >= half_way, f"{seen_half_way} web write(s) got in while the job was half-way"
    return result


def test_a_long_sync_commits_as_it_goes_so_web_writes_never_wait_for_all_of_it(tmp_path, sqlite_url):
    """SQLite has one write lock. A sync of thousands of items used to hold it from its first write to
    its last, and every web write in that time waited (or failed after the lock timeout)."""
    rows = [{"id": f"C{i}", "name": f"customer {i}"} for i in range(1000)]
    with LoopbackServer() as crm:
        serve_pages(crm, rows)
        world = make_world(tmp_path, sqlite_url, entities=[CUSTOMER],
                           connectors=[crm_connector(crm, pagination={
                               "type": "page", "page_param": "page", "size_param": "size", "page_size": 250})],
                           jobs=[sync_job()])
        # Commit every 50 ms of writing: even the fastest machine spends well over half a second on these
        # items, so the job commits many times (on a slow one, more often still).
        world.env = replace(world.env, checkpoint_seconds=0.05)
        table = world.env.runtime.get("crm").table("customer")
        run = run_beside_web_writes(sqlite_url, lambda: world.run("crm_sync"), table, len(rows), half_way=3)
    assert run["counts"]["created"] == len(rows)
