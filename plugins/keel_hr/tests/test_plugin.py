"""The plugin as Keel loads it (its plugins folder), and the directory sync on the sample roster: run from
this folder with Keel's Python (`python -m pytest`). Keel's own suite runs it end to end through the jobs
engine and a real HTTP server (tests/test_hr_plugin.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.plugins import PluginHost

PLUGIN = Path(__file__).resolve().parents[1]
SAMPLE = PLUGIN / "sample" / "employees.csv"
USERS = {"external_key": "emp_id", "username": "username", "display_name": "name",
         "email": {"path": "email", "required": False}, "department_code": "dept_code",
         "manager_key": {"path": "manager_emp_id", "required": False}}
DEPARTMENTS = {"code": "dept_code", "name": "dept_name", "parent_code": {"path": "parent_dept", "required": False}}


@pytest.fixture(scope="module")
def host():
    return PluginHost.load(PLUGIN.parent, entry_points=False)


def test_the_plugin_loads_and_registers_its_job_type(host):
    assert [str(f) for f in host.failures if f.name == "keel_hr"] == []
    plugin = next(p for p in host.plugins if p.name == "keel_hr")
    assert plugin.registers == {"job type": ["hr.sync_directory"]}
    assert host.job_type("hr.sync_directory").params_schema["required"] == ["connector", "users"]


def _sync(engine, rows):
    from keel_hr.directory_sync import DirectorySync, Options
    from keel_hr.snapshot import read_departments, read_people

    from keel.actor import SYSTEM

    problems: list[str] = []
    with engine.begin() as conn:
        sync = DirectorySync(conn, SYSTEM, Options(default_roles=("employee",)), problems.extend)
        counts = sync.run(read_people(rows, USERS), read_departments(rows, DEPARTMENTS))
    return counts, problems


def test_the_sample_roster_fills_the_directory_once(host, tmp_path):
    from keel.auth.directory import manager_of
    from keel.connectors.files import read_table_file
    from keel.storage.db import create_engine, create_system_tables
    from keel.storage.system import audit_events, record_versions, users

    engine = create_engine(f"sqlite:///{tmp_path / 'hr.db'}")
    create_system_tables(engine)
    rows = list(read_table_file(SAMPLE.name, SAMPLE.read_bytes()))
    counts, problems = _sync(engine, rows)
    assert problems == [] and (counts["users_created"], counts["departments_created"]) == (9, 6)
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(users.c.username, users.c.id)).all())
        assert manager_of(conn, ids["rep_li"]) == ids["east_mgr"]
        written = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                   for t in (audit_events, record_versions)]
    counts, _ = _sync(engine, rows)
    assert counts["users_unchanged"] == 9
    with engine.connect() as conn:
        assert written == [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                           for t in (audit_events, record_versions)]
    engine.dispose()


def test_a_roster_with_bad_rows_names_each_problem(host):
    from keel_hr.snapshot import read_people

    rows = [{"emp_id": "E1", "username": "ada", "name": "Ada", "manager_emp_id": "E1"},
            {"emp_id": "E1", "username": "ada2", "name": "Ada again"},
            {"emp_id": 7.0, "username": "no spaces allowed", "name": "Bob"},
            {"username": "nokey", "name": "Nobody"}]
    snap = read_people(rows, {**USERS, "department_code": {"path": "dept_code", "required": False}})
    assert snap.valid == {} and snap.seen == {"E1", "7"} and snap.keyless
    assert snap.problems == [
        "item 0 (external key 'E1'): a person cannot be their own manager",
        "item 1 (external key 'E1'): the external key appears twice upstream; the later item is skipped",
        ("item 2 (external key '7'): username 'no spaces allowed' must be 1 to 150 letters, digits, '_', '.', "
        "'@' or '-'"),
        "item 3: field 'external_key' (path 'emp_id'): value is missing"]
