"""A Keel server with the `dashtest` app (tests/fixtures/dash_app) and users, and what the dashboard tests
need to read a Dash page over HTTP: log in through /login, load the page, run its callback the way the
browser's renderer does (POST /dash/_dash-update-component with the CSRF cookie as X-CSRFToken), and walk
the component tree it answers."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.actor import SYSTEM
from keel.apply import apply_app
from keel.auth.directory import add_user, get_actor
from keel.auth.tokens import issue_token
from keel.definitions.loader import load_app_dir
from keel.storage import records

APP_DIR = Path(__file__).parent / "fixtures" / "dash_app"
PASSWORD = "dash-test-password-1"


@dataclass
class Site:
    app: Any
    folder: Path                  # a copy of the app definition: tests change it and apply again
    users: dict[str, int]

    @property
    def runtime(self):
        return self.app.extensions["keel"]

    @property
    def engine(self):
        return self.runtime.engine

    def built(self):
        self.runtime.refresh()
        return self.runtime.get("dashtest")

    def actor(self, username: str):
        with self.engine.connect() as conn:
            return get_actor(conn, self.users[username])

    def create(self, entity: str, values: dict, as_user: str = "boss") -> dict:
        with self.engine.begin() as conn:
            return records.create(conn, self.built(), entity, values, self.actor(as_user))

    def apply(self) -> None:
        registries = self.app.extensions["keel_plugins"].registries()
        apply_app(self.engine, load_app_dir(self.folder, registries), SYSTEM)
        self.runtime.refresh()

    def edit_json(self, rel: str, change) -> None:
        path = self.folder / rel
        doc = json.loads(path.read_text("utf-8"))
        change(doc)
        path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")

    def token(self, username: str) -> str:
        with self.engine.begin() as conn:
            return issue_token(conn, self.users[username], "test", actor=SYSTEM)

    def api(self, username: str, method: str, url: str, **kw):
        headers = {"Authorization": f"Bearer {self.token(username)}"}
        return self.app.test_client().open(url, method=method, headers=headers, **kw)


def make_site(tmp_path: Path, db_url: str, extra_plugins=()) -> Site:
    from conftest import make_app

    folder = tmp_path / "dash_app"
    shutil.copytree(APP_DIR, folder)
    app = make_app(tmp_path, db_url, **({"KEEL_EXTRA_PLUGINS": list(extra_plugins)} if extra_plugins else {}))
    site = Site(app, folder, {})
    site.apply()
    with site.engine.begin() as conn:
        for name, roles in (("boss", ["boss"]), ("ann", ["viewer"]), ("bob", ["viewer"])):
            site.users[name] = add_user(conn, name, name.title(), SYSTEM, password=PASSWORD, roles=roles)
    return site


def login(site: Site, username: str):
    c = site.app.test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302, r.text
    return c


def csrf_cookie(client, path: str = "/dash/") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.status_code
    cookie = client.get_cookie("_csrf_token", path="/dash/")
    assert cookie is not None
    return cookie.value


def dash_page(client, pathname: str, search: str = "") -> Any:
    """The page component tree for a /dash/ URL, as the renderer receives it."""
    token = csrf_cookie(client, pathname)
    payload = {"output": "page.children", "outputs": {"id": "page", "property": "children"},
               "inputs": [{"id": "url", "property": "pathname", "value": pathname}],
               "state": [{"id": "url", "property": "search", "value": search}], "changedPropIds": ["url.pathname"]}
    r = client.post("/dash/_dash-update-component", json=payload, headers={"X-CSRFToken": token})
    assert r.status_code == 200, r.text[:500]
    return r.get_json()["response"]["page"]["children"]


def components(tree: Any) -> Iterator[dict]:
    """Every component of a tree, depth first."""
    if isinstance(tree, dict):
        if "props" in tree and "type" in tree:
            yield tree
            yield from components(tree["props"].get("children"))
        else:
            for v in tree.values():
                yield from components(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from components(v)


def text_of(tree: Any) -> str:
    out = []

    def walk(x):
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out.append(str(x))
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, dict) and "props" in x:
            walk(x["props"].get("children"))
    walk(tree)
    return " ".join(out)


def by_id(tree: Any, ident: Any) -> dict | None:
    return next((c for c in components(tree) if c["props"].get("id") == ident), None)


def with_class(tree: Any, cls: str) -> list[dict]:
    return [c for c in components(tree) if cls in (c["props"].get("className") or "").split()]


def count_rows(engine: sa.Engine, table: str, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table)).where(*where)).scalar_one()
