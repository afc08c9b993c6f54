"""Shared set-up for the inbox, delivery, timer and metrics tests: a database with Keel's system tables
(and the notify tables, until storage.db imports them), an app applied from a bundle built in the test,
and users of an org directory."""
from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from helpers_registries import REGISTRIES
from keel.actor import SYSTEM
from keel.storage.db import create_engine, create_system_tables
from keel.storage.notify_tables import create_notify_tables

APP = "notes"
PASSWORD = "correct horse battery staple 42"

GOAL_CHANGED = {
    "id": "goal_changed",
    "subject": {"zh": "目标已修订：{{ record.title }}", "en": "Goal revised: {{ record.title }}"},
    "body": {"zh": "新目标 {{ record.target }}，原因：{{ record.reason }}",
             "en": "New target {{ record.target }}, because: {{ record.reason }}"},
    "channels": [],
}


def bundle(notifications: list[dict] = (GOAL_CHANGED,), settings: dict | None = None,
           workflows: list[dict] = ()) -> dict[str, Any]:
    app: dict[str, Any] = {"id": APP, "version": "1", "label": {"zh": "通知", "en": "Notes"},
                           "roles": [{"id": "strategy"}, {"id": "employee"}]}
    if settings:
        app["settings"] = settings
    out = {"app.json": app}
    out.update({f"notifications/{n['id']}.json": n for n in notifications})
    out.update({f"workflows/{w['id']}.json": w for w in workflows})
    return out


def engine_for(url: str) -> sa.Engine:
    engine = create_engine(url)
    create_system_tables(engine)
    create_notify_tables(engine)
    return engine


def apply_bundle(engine: sa.Engine, b: dict) -> None:
    from keel.apply import apply_app
    from keel.definitions.loader import load_bundle

    apply_app(engine, load_bundle(b, REGISTRIES), SYSTEM)


def add_people(engine: sa.Engine, *specs: tuple[str, dict]) -> dict[str, int]:
    """specs: (username, keyword arguments of directory.add_user); returns username -> id. Only users
    given `"password": True` get one (hashing with argon2 is slow on purpose)."""
    from keel.auth.directory import add_user

    ids = {}
    with engine.begin() as conn:
        for username, kw in specs:
            password = PASSWORD if kw.pop("password", False) else None
            ids[username] = add_user(conn, username, kw.pop("display_name", username.title()), SYSTEM,
                                     password=password, **kw)
    return ids


def count(engine: sa.Engine, table: sa.Table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def login(flask_app, username: str):
    c = flask_app.test_client()
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert r.status_code in (302, 303), r.text
    return c


def token_for(engine: sa.Engine, user_id: int) -> str:
    from keel.auth.tokens import issue_token

    with engine.begin() as conn:
        return issue_token(conn, user_id)
