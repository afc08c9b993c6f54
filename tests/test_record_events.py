"""Record events: the write path announces every create, update, delete and restore through the
`keel_record_before_write` / `keel_record_written` hooks, in the writer's transaction. The workflow engine
subscribes this way (it is never imported by storage), and so can any plugin: what a listener writes
commits or rolls back with the record, and a listener's refusal leaves nothing written."""
from __future__ import annotations

import sqlalchemy as sa

from conftest import APPS, make_app
from helpers_registries import REGISTRIES
from keel.actor import SYSTEM
from keel.errors import FieldErrors
from keel.hooks import hookimpl
from keel.storage.system import audit_events


class Listener:
    """A plugin that keeps what it heard, writes an audit event for each write, and refuses a title."""

    def __init__(self):
        self.heard: list[tuple[str, str, str, object]] = []

    @hookimpl
    def keel_record_before_write(self, event):
        self.heard.append(("before", event.action, event.entity_id, event.record_id))
        if event.values.get("title") == "forbidden":
            errors = FieldErrors()
            errors.add("title", "Must be unique.")
            raise errors

    @hookimpl
    def keel_record_written(self, event):
        self.heard.append(("after", event.action, event.entity_id, event.record_id))
        from keel.storage.audit import record_event

        record_event(event.conn, event.actor, "test.heard", app=event.app.id, entity=event.entity_id,
                     record_id=event.record_id, detail={"changes": sorted(event.changes), "form": event.form})


def world(tmp_path, sqlite_url):
    from keel.apply import apply_app
    from keel.auth.directory import add_user
    from keel.definitions.loader import load_app_dir

    listener = Listener()
    app = make_app(tmp_path, sqlite_url, KEEL_EXTRA_PLUGINS=[("listener", listener)])
    runtime = app.extensions["keel"]
    apply_app(runtime.engine, load_app_dir(APPS / "goal_agility", REGISTRIES), SYSTEM)
    runtime.refresh()
    with runtime.engine.begin() as conn:
        uid = add_user(conn, "lin", "林晓", SYSTEM, roles=["strategy"])
    app.lin = uid
    return app, runtime, listener


def card(app, title: str) -> dict:
    return {"title": title, "owner": app.lin, "period": "2025-Q4"}


def heard_events(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(audit_events.c.record_id, audit_events.c.detail)
                            .where(audit_events.c.action == "test.heard").order_by(audit_events.c.id)).all()


def test_a_plugin_hears_every_write_in_the_writers_transaction(tmp_path, sqlite_url):
    from keel.storage import records

    app, runtime, listener = world(tmp_path, sqlite_url)
    built = runtime.get("goal_agility")
    with runtime.engine.begin() as conn:
        made = records.create(conn, built, "strategy_card", card(app, "Upsell first"), SYSTEM)
        records.update_current(conn, built, "strategy_card", made["id"], {"title": "Upsell, then renew"}, SYSTEM)
        records.delete(conn, built, "strategy_card", made["id"], SYSTEM)
        records.restore(conn, built, "strategy_card", made["id"], SYSTEM)
    rid = made["id"]
    assert listener.heard == [
        ("before", "create", "strategy_card", None), ("after", "create", "strategy_card", rid),
        ("before", "update", "strategy_card", rid), ("after", "update", "strategy_card", rid),
        ("before", "delete", "strategy_card", rid), ("after", "delete", "strategy_card", rid),
        ("before", "restore", "strategy_card", rid), ("after", "restore", "strategy_card", rid)]
    # what the listener wrote committed with the records, and it saw what changed
    assert [r.detail["changes"] for r in heard_events(runtime.engine)][1] == ["title"]


def test_a_listener_refusal_writes_nothing_and_a_rollback_takes_the_listeners_writes_too(tmp_path, sqlite_url):
    import pytest

    from keel.storage import records

    app, runtime, listener = world(tmp_path, sqlite_url)
    built = runtime.get("goal_agility")
    table = built.table("strategy_card")
    with pytest.raises(FieldErrors), runtime.engine.begin() as conn:
        records.create(conn, built, "strategy_card", card(app, "forbidden"), SYSTEM)
    with pytest.raises(RuntimeError), runtime.engine.begin() as conn:
        records.create(conn, built, "strategy_card", card(app, "rolled back"), SYSTEM)
        raise RuntimeError("the caller's transaction fails after the write")
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    assert heard_events(runtime.engine) == []


def test_the_event_names_the_form_a_record_came_from(tmp_path, sqlite_url):
    from keel.auth.tokens import issue_token

    app, runtime, listener = world(tmp_path, sqlite_url)
    with runtime.engine.begin() as conn:
        token = issue_token(conn, app.lin)
    r = app.test_client().post("/api/v1/apps/goal_agility/forms/strategy_card", json=card(app, "增购优先"),
                               headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.get_json()
    [(record_id, detail)] = heard_events(runtime.engine)
    assert record_id == r.get_json()["id"] and detail["form"] == "strategy_card"


def test_each_app_gets_the_registries_its_composition_root_built(tmp_path, sqlite_url):
    """No process-wide registry: an app built with a plugin has it, another app in the same process not."""
    app, runtime, listener = world(tmp_path, sqlite_url)
    plain = make_app(tmp_path / "plain", f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        assert app.extensions["keel_plugins"].pm.get_plugin("listener") is listener
        assert plain.extensions["keel_plugins"].pm.get_plugin("listener") is None
        assert plain.extensions["keel"].registries is not runtime.registries
    finally:
        plain.extensions["keel"].engine.dispose()
