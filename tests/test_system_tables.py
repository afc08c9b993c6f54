"""Keel's own tables follow the code at every start: a database an older version created gets the
indexes added since (the team and department scopes of keel_users filter on manager_id and
department_id)."""
from __future__ import annotations

import sqlalchemy as sa

from conftest import make_app

USER_INDEXES = {"ix_keel_users_manager": ["manager_id"], "ix_keel_users_department": ["department_id"]}


def _user_indexes(engine: sa.Engine) -> dict[str, list[str]]:
    return {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("keel_users")
            if i["name"] in USER_INDEXES}


def test_a_database_created_without_the_user_indexes_gets_them_at_the_next_start(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    engine = app.extensions["keel"].engine
    assert _user_indexes(engine) == USER_INDEXES
    with engine.begin() as conn:  # the database as a version before these indexes left it
        for name in USER_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    engine.dispose()
    assert _user_indexes(engine) == {}

    again = make_app(tmp_path, db_url)
    engine = again.extensions["keel"].engine
    assert _user_indexes(engine) == USER_INDEXES
    engine.dispose()


def test_a_team_scoped_read_looks_reports_up_by_index(tmp_path, sqlite_url):
    from keel.actor import Actor
    from keel.definitions.model import EntityDef, Label
    from keel.storage.permissions import _scope_condition

    app = make_app(tmp_path, sqlite_url)
    engine = app.extensions["keel"].engine
    entity = EntityDef(id="records", label=Label("记录", "Records"), fields=(), owner_field="owner")
    table = sa.Table("records", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("owner", sa.Integer), sa.Column("created_by", sa.Integer))
    me = Actor(user_id=7, username="mia", roles=frozenset(), department_id=3)
    with engine.connect() as conn:
        table.create(conn)
        for scope, index in (("team", "ix_keel_users_manager"), ("department", "ix_keel_users_department")):
            query = sa.select(table.c.id).where(_scope_condition(table, entity, me, scope))
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert index in plan, plan
    engine.dispose()


def test_a_database_created_before_a_new_column_gets_it_at_the_next_start_with_rows_kept(tmp_path, db_url):
    """keel_record_versions.via and keel_job_chunks.problems came later: an older database gains them."""
    app = make_app(tmp_path, db_url)
    engine = app.extensions["keel"].engine
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE keel_record_versions DROP COLUMN via")
        conn.exec_driver_sql("ALTER TABLE keel_job_chunks DROP COLUMN problems")
        conn.exec_driver_sql("INSERT INTO keel_record_versions (app, entity, record_id, version, action, changes, at) "
                             "VALUES ('a', 'e', 1, 1, 'create', '{}', CURRENT_TIMESTAMP)")
    engine.dispose()
    app = make_app(tmp_path, db_url)  # the next start
    engine = app.extensions["keel"].engine
    inspector = sa.inspect(engine)
    assert "via" in {c["name"] for c in inspector.get_columns("keel_record_versions")}
    assert "problems" in {c["name"] for c in inspector.get_columns("keel_job_chunks")}
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT app, via FROM keel_record_versions").all() == [("a", None)]
    engine.dispose()
