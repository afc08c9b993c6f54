"""Entity rules (`rules` in entities/*.json): a check across fields refuses a write with its message at
its field, together with every other field error, and writes nothing; definitions with broken rules are
refused with every problem named. Uses the leave app of docs/admin.md."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers_registries import REGISTRIES
from keel.actor import SYSTEM
from keel.definitions.errors import DefinitionErrors
from keel.definitions.loader import load_app_dir
from keel.errors import FieldErrors

LEAVE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "leave"


@pytest.fixture
def leave(db_url):
    from keel.apply import apply_app
    from keel.runtime import Runtime
    from keel.storage.db import create_engine, create_system_tables

    engine = create_engine(db_url)
    create_system_tables(engine)
    apply_app(engine, load_app_dir(LEAVE, REGISTRIES), SYSTEM)
    runtime = Runtime(engine, REGISTRIES)
    runtime.refresh()
    yield runtime
    engine.dispose()


def _count(runtime) -> tuple[int, int]:
    with runtime.engine.connect() as c:
        return (c.execute(sa.text("SELECT count(*) FROM leave__leave_request")).scalar(),
                c.execute(sa.text("SELECT count(*) FROM keel_record_versions")).scalar())


def _create(runtime, values):
    from keel.storage import records

    with runtime.engine.begin() as conn:
        return records.create(conn, runtime.get("leave"), "leave_request", values, SYSTEM)


def test_a_last_day_before_the_first_is_refused_at_its_field_and_nothing_is_written(leave):
    before = _count(leave)
    with pytest.raises(FieldErrors) as e:
        _create(leave, {"kind": "sick", "first_day": "2025-10-20", "last_day": "2025-10-17", "reason": "x"})
    assert e.value.rendered() == {"last_day": ["结束日期不能早于开始日期"]}
    assert _count(leave) == before


def test_rule_errors_come_with_the_other_field_errors_at_once(leave):
    with pytest.raises(FieldErrors) as e:
        _create(leave, {"kind": "nope", "first_day": "2025-10-20", "last_day": "2025-10-17"})
    errors = e.value.rendered()
    assert set(errors) == {"kind", "reason", "last_day"}
    assert errors["last_day"] == ["结束日期不能早于开始日期"]


def test_a_rule_over_a_computed_field_uses_the_working_calendar(leave):
    ok = _create(leave, {"kind": "annual", "first_day": "2025-09-29", "last_day": "2025-10-17", "reason": "x"})
    assert ok["days"] == 10  # 29, 30 Sep; 9, 10, 11 (调休 Saturday); 13-17 Oct. 1-8 Oct are holidays
    with pytest.raises(FieldErrors) as e:
        _create(leave, {"kind": "annual", "first_day": "2025-10-09", "last_day": "2025-11-03", "reason": "x"})
    assert e.value.rendered() == {"last_day": ["一次请假最多 15 个工作日"]}


def test_rule_messages_follow_the_request_language(leave):
    from flask import Flask
    from flask_babel import Babel

    app = Flask("t")
    Babel(app, locale_selector=lambda: "en")
    with app.test_request_context(), pytest.raises(FieldErrors) as e:
        _create(leave, {"kind": "sick", "first_day": "2025-10-20", "last_day": "2025-10-17", "reason": "x"})
    with app.test_request_context():
        assert e.value.rendered() == {"last_day": ["The last day cannot be before the first day"]}


def test_an_update_is_checked_only_by_rules_naming_a_changed_field(leave):
    from keel.storage import records

    made = _create(leave, {"kind": "annual", "first_day": "2025-10-20", "last_day": "2025-10-21", "reason": "x"})
    built = leave.get("leave")
    with leave.engine.begin() as conn, pytest.raises(FieldErrors) as e:
        records.update(conn, built, "leave_request", made["id"], {"last_day": "2025-10-01"}, SYSTEM, 1)
    assert "last_day" in e.value.rendered()
    # a record that breaks a rule (saved before the rule existed) can still change other fields
    with leave.engine.begin() as conn:
        conn.execute(sa.text("UPDATE leave__leave_request SET last_day = '2025-10-01' WHERE id = :i"),
                     {"i": made["id"]})
    with leave.engine.begin() as conn:
        after = records.update(conn, built, "leave_request", made["id"], {"reason": "y"}, SYSTEM, 1)
    assert after["reason"] == "y"


def test_broken_rules_are_definition_errors_all_at_once(tmp_path):
    app = tmp_path / "leave"
    shutil.copytree(LEAVE, app)
    path = app / "entities" / "leave_request.json"
    doc = json.loads(path.read_text())
    doc["rules"] = [
        {"id": "a", "check": "finish >= first_day", "message": "m"},
        {"id": "a", "check": "first_day >=", "message": "m", "field": "nowhere"},
        {"id": "b", "check": "__import__('os')", "message": "m"},
        {"id": "c", "check": "True"},
    ]
    path.write_text(json.dumps(doc))
    with pytest.raises(DefinitionErrors) as e:
        load_app_dir(app, REGISTRIES)
    text = "\n".join(map(str, e.value.errors))
    assert "/rules/3" in text and "message" in text  # the schema: a rule needs a message
    doc["rules"] = doc["rules"][:3]
    path.write_text(json.dumps(doc))
    with pytest.raises(DefinitionErrors) as e:
        load_app_dir(app, REGISTRIES)
    text = "\n".join(map(str, e.value.errors))
    for expected in ("/rules/0/check: unknown name 'finish'", "/rules/1/id: duplicate rule id 'a'",
                     "/rules/1/check: invalid expression", "/rules/1/field: no field 'nowhere'",
                     "/rules/2/check: invalid expression"):
        assert expected in text, text
