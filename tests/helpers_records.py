"""A small app built in code, an org chart and real tables, for the record read/write tests.

The org (departments sales and finance):

    dave   manager  sales                  root   admin
    carol  lead     sales                  erin   analyst  finance
    alice  rep      sales   reports to carol
    bob    rep      sales                  frank  rep      finance  (owns the CANARY record)
    gus    no roles sales                  hank   hr       finance  (may read the CANARY field)
                                           ivan   rep      finance  reports to dave

`account.secret` is the CANARY field: only `hr` (and admins) may read it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy import event

from helpers_registries import REGISTRIES
from keel.actor import Actor
from keel.definitions.model import AppDef, EntityDef, FieldDef, Label, Option, PermissionRule, RoleDef
from keel.runtime import BuiltApp, Runtime, build
from keel.storage.db import create_engine, create_system_tables
from keel.storage.system import departments, user_roles, users

CANARY_SECRET = "CANARY-7f3a-secret"
CANARY_NAME = "CANARY-7f3a-account"


def label(text: str) -> Label:
    return Label(text, text)


def fd(id: str, type: str, **kw) -> FieldDef:
    # Built in code rather than by the loader, so the field's type is resolved here as the loader would.
    return FieldDef(id=id, type=type, label=label(id), ftype=REGISTRIES.field_types[type], **kw)


ACCOUNT = EntityDef(
    id="account", label=label("Account"), owner_field="owner", title_field="name",
    fields=(
        fd("name", "text", required=True, unique=True, max_length=100),
        fd("owner", "user"),
        fd("region", "select", options=(Option("north", label("North")), Option("south", label("South")))),
        fd("budget", "money"),
        fd("cost", "money"),
        fd("margin", "money", computed="budget - cost"),
        fd("secret", "text", read_roles=("hr",)),
        fd("rating", "integer", min=0, max=10),
        fd("approved", "boolean", read_only=True),
        fd("tags", "multi_select", options=tuple(Option(o, label(o)) for o in ("a", "b", "c"))),
        fd("started", "date"),
        fd("parent", "link", entity="account"),
        fd("notes", "long_text"),
        fd("bonus", "money", write_roles=("manager",)),
        fd("level", "select", default="bronze",
           options=(Option("bronze", label("Bronze")), Option("gold", label("Gold")))),
    ),
    permissions=(
        PermissionRule("rep", read="own", create=True, update="own", delete="own"),
        PermissionRule("lead", read="team", create=True, update="team"),
        PermissionRule("manager", read="department", create=True, update="department", delete="department"),
        PermissionRule("analyst", read="all"),
        PermissionRule("hr", read="all"),
    ),
)

PROJECT = EntityDef(
    id="project", label=label("Project"), title_field="title",
    fields=(
        fd("title", "text", required=True),
        fd("account", "link", entity="account"),
        fd("hours", "integer"),
    ),
    permissions=(
        PermissionRule("rep", read="all", create=True, update="own", delete="own"),
        PermissionRule("lead", read="all", create=True, update="all"),
        PermissionRule("analyst", read="all"),
    ),
)

ROLES = ("rep", "lead", "manager", "analyst", "hr")


def app_def(app_id: str = "crm") -> AppDef:
    empty = MappingProxyType({})
    return AppDef(id=app_id, version="1.0", label=label(app_id), roles=tuple(RoleDef(r, label(r)) for r in ROLES),
                  settings=empty, entities=MappingProxyType({"account": ACCOUNT, "project": PROJECT}),
                  forms=empty, registries=REGISTRIES)


# (username, roles, department, manager, admin)
ORG = (
    ("dave", ("manager",), "sales", None, False),
    ("carol", ("lead",), "sales", "dave", False),
    ("alice", ("rep",), "sales", "carol", False),
    ("bob", ("rep",), "sales", "dave", False),
    ("gus", (), "sales", None, False),
    ("erin", ("analyst",), "finance", None, False),
    ("frank", ("rep",), "finance", None, False),
    ("hank", ("hr",), "finance", None, False),
    ("ivan", ("rep",), "finance", "dave", False),
    ("root", (), None, None, True),
)


@dataclass
class World:
    engine: sa.Engine
    built: BuiltApp
    actors: dict[str, Actor]
    departments: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, username: str) -> Actor:
        return self.actors[username]

    def runtime(self) -> Runtime:
        rt = Runtime(self.engine, REGISTRIES)
        # The loader round trip (stored bundle -> AppDef) is tested elsewhere; these tests hand the
        # runtime the app built in code.
        rt._apps = {self.built.id: self.built}
        rt._marker = None
        return rt

    def count(self, table: sa.Table | str, *where) -> int:
        t = self.built.tables[table] if isinstance(table, str) else table
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one()

    def snapshot(self) -> dict[str, list]:
        """Every row of every table this app and Keel's history use, to prove nothing changed."""
        from keel.storage.system import audit_events, record_versions

        out = {}
        with self.engine.connect() as c:
            for name, t in [*self.built.tables.items(), ("versions", record_versions), ("audit", audit_events)]:
                out[name] = [tuple(r) for r in c.execute(sa.select(t).order_by(t.c.id))]
        return out


def make_world(db_url: str) -> World:
    engine = create_engine(db_url)
    create_system_tables(engine)
    built = build(app_def(), 1)
    built.metadata.create_all(engine)
    actors: dict[str, Actor] = {}
    with engine.begin() as c:
        depts = {code: c.execute(departments.insert().values(code=code, name=code)).inserted_primary_key[0]
                 for code in ("sales", "finance")}
        ids: dict[str, int] = {}
        for username, roles, dept, manager, admin in ORG:
            uid = c.execute(users.insert().values(
                username=username, display_name=username.title(), department_id=depts.get(dept),
                manager_id=ids.get(manager), is_admin=admin)).inserted_primary_key[0]
            ids[username] = uid
            for role in roles:
                c.execute(user_roles.insert().values(user_id=uid, role=role))
            actors[username] = Actor(uid, username, frozenset(roles), admin, depts.get(dept))
    return World(engine, built, actors, depts)


@contextlib.contextmanager
def captured_sql(engine: sa.Engine):
    """Every SQL statement text sent to the database inside the block (parameters excluded)."""
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def fail_inserts_into(engine: sa.Engine, table: str) -> None:
    """A real database trigger that makes every INSERT into `table` fail — a failure at the very end
    of a write, after the record row has been written."""
    with engine.begin() as c:
        if engine.dialect.name == "sqlite":
            c.exec_driver_sql(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                              "BEGIN SELECT RAISE(ABORT, 'forced failure'); END")
        else:
            c.exec_driver_sql("CREATE FUNCTION keel_test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'forced failure'; END $$")
            c.exec_driver_sql(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                              "FOR EACH ROW EXECUTE FUNCTION keel_test_fail()")


def drop_failure(engine: sa.Engine, table: str) -> None:
    with engine.begin() as c:
        c.exec_driver_sql(f"DROP TRIGGER fail_{table}" + ("" if engine.dialect.name == "sqlite" else f" ON {table}"))
