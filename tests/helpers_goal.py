"""Helpers for the Goal Agility mechanism tests: the demo company over the REST API, as an integrator drives it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa

from conftest import APPS

API = "/api/v1"
PEOPLE = ("admin", "ceo", "cro", "strategy_lead", "east_mgr", "north_mgr", "rep_li", "rep_zhang", "cs_lead")


class Demo:
    """The demo app with a bearer token per demo login and small request helpers."""

    def __init__(self, app):
        from keel.auth.directory import find_user
        from keel.auth.tokens import issue_token

        self.app, self.client = app, app.test_client()
        self.runtime = app.extensions["keel"]
        self.engine = self.runtime.engine
        with self.engine.begin() as conn:
            self.ids = {u: find_user(conn, u).id for u in PEOPLE}
            self.tokens = {u: issue_token(conn, i) for u, i in self.ids.items()}

    def h(self, who: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, url: str, who: str):
        return self.client.get(API + url, headers=self.h(who))

    def post(self, url: str, who: str, body=None):
        return self.client.post(API + url, json=body if body is not None else {}, headers=self.h(who))

    def patch(self, url: str, who: str, body, version: int):
        return self.client.patch(API + url, json=body, headers={**self.h(who), "If-Match": f'W/"{version}"'})

    def built(self):
        return self.runtime.get("goal_agility")

    def rows(self, sql: str, **params):
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def goal(self, title: str) -> dict:
        [row] = self.rows("SELECT * FROM goal_agility__goal WHERE title = :t", t=title)
        return row

    def count(self, table: str) -> int:
        return self.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"]

    def submit(self, who: str, goal_id: int, **values):
        from keel_goal_agility.demo import CRO_REVISION

        body = {"goal": goal_id, **(values if values.pop("_bare", False) else {**CRO_REVISION, **values})}
        return self.post("/apps/goal_agility/forms/revision_request", who, body)

    def tasks_of(self, who: str) -> list[dict]:
        return self.get("/workflows/tasks", who).get_json()["items"]

    def approve_all(self, *people: str) -> None:
        """Each person approves their newest open task."""
        for who in people:
            task = max(self.tasks_of(who), key=lambda t: t["id"])
            r = self.post(f"/workflows/tasks/{task['id']}/approve", who, {"comment": f"{who} 同意"})
            assert r.status_code == 200, r.get_json()

    def apply_definition(self, change) -> None:
        """Apply the goal_agility definition with `change(folder)` made to a copy (as `keel app apply` would)."""
        from keel.actor import SYSTEM
        from keel.apply import apply_app
        from keel.definitions.loader import load_app_dir

        folder = Path(self.app.config["KEEL_INSTANCE_PATH"]) / "goal_agility_def"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(APPS / "goal_agility", folder)
        change(folder)
        apply_app(self.engine, load_app_dir(folder, self.app.extensions["keel_plugins"].registries()), SYSTEM)
        self.runtime.refresh()


def edit_json(folder: Path, name: str, edit) -> None:
    path = folder / name
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def set_setting(folder: Path, key: str, value) -> None:
    edit_json(folder, "app.json", lambda d: d["settings"].__setitem__(key, value))


def form_values(page: str, form_index: int = 0) -> dict[str, str]:
    """What a browser would send for the n-th <form> of a page as it stands (inputs, selected options,
    textareas, checked boxes): so a page test changes one field and posts the rest unchanged."""
    from html.parser import HTMLParser

    class Forms(HTMLParser):
        def __init__(self):
            super().__init__()
            self.forms, self.current, self.select, self.textarea = [], None, None, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "form":
                self.current = {}
                self.forms.append(self.current)
            elif self.current is None:
                return
            elif tag == "input" and a.get("name") and a.get("type") not in ("submit", "button"):
                if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                    return
                self.current[a["name"]] = a.get("value") or ("y" if a.get("type") == "checkbox" else "")
            elif tag == "select":
                self.select = a.get("name")
                self.current.setdefault(self.select, "")
            elif tag == "option" and self.select and "selected" in a:
                self.current[self.select] = a.get("value", "")
            elif tag == "textarea":
                self.textarea = a.get("name")
                self.current[self.textarea] = ""

        def handle_endtag(self, tag):
            if tag == "textarea" and self.textarea and self.current is not None:
                text = self.current[self.textarea]  # a browser drops the newline right after <textarea>
                self.current[self.textarea] = text[1:] if text.startswith("\n") else text
            if tag == "select":
                self.select = None
            elif tag == "textarea":
                self.textarea = None
            elif tag == "form":
                self.current = None

        def handle_data(self, data):
            if self.textarea and self.current is not None:
                self.current[self.textarea] += data

    parser = Forms()
    parser.feed(page)
    return parser.forms[form_index]
