"""A throwaway Keel for a test: its own folder and SQLite database (or a database URL you give), the
plugins you name, app definitions applied from a folder or from a dict, an administrator with an API token,
and the few calls a plugin's tests make — run a job in the foreground and get its run, read an entity's
records and a record's history, call the API.

    from keel.testing import Instance

    def test_the_sync_fills_goals(tmp_path):
        with Instance(tmp_path, plugins=PLUGINS_FOLDER) as keel:
            keel.apply(APP_FOLDER)
            run = keel.run_job("crm_actuals")
            assert run["status"] == "succeeded", run["error"]
            assert [g["actual"] for g in keel.records("goals", "goal")] == ["4.00"]

Nothing is installed or started: no Redis, no worker, no server. A job runs here, chunk after chunk, as
`keel jobs run` runs it, except that a retry's back-off is not waited for (`waits` lists the delays)."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa


class Instance:
    """`folder`: where the instance lives (a test's tmp_path; default: a temporary folder removed by
    `close`). `plugins`: a plugins folder to load (e.g. the folder holding your plugin's folder; default:
    none, only Keel's built-ins and installed packages). `extra_plugins`: (name, plugin object or module)
    pairs registered as if discovered. `database_url`: default SQLite in `folder`. `config`: more Flask
    settings (KEEL_*)."""

    PASSWORD = "a-Long-pass-phrase-42"  # every user's password unless given: `browser` logs in with it

    def __init__(self, folder: str | Path | None = None, *, plugins: str | Path | None = None,
                 extra_plugins: Iterable[tuple[str, Any]] = (), database_url: str | None = None,
                 config: Mapping[str, Any] | None = None):
        from keel import create_app
        from keel.actor import SYSTEM
        from keel.auth.directory import add_user
        from keel.auth.tokens import issue_token
        from keel.jobs import jobs_env

        self._own_folder = folder is None
        self._plugins = Path(plugins).resolve() if plugins else None
        self.folder = Path(tempfile.mkdtemp(prefix="keel-test-") if folder is None else folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg: dict[str, Any] = {
            "KEEL_INSTANCE_PATH": str(self.folder / "instance"),
            "KEEL_DATABASE_URL": database_url or f"sqlite:///{self.folder / 'keel.db'}",
            "KEEL_APPS_PATH": str(self.folder / "apps"),
            "KEEL_PLUGINS_PATH": str(plugins) if plugins is not None else "",
            "KEEL_REDIS_URL": None, "KEEL_ENV": "development", "TESTING": True,
        }
        if extra_plugins:
            cfg["KEEL_EXTRA_PLUGINS"] = list(extra_plugins)
        cfg.update(config or {})
        self.app = create_app(cfg)
        self.env = jobs_env(self.app)
        self.engine: sa.Engine = self.env.engine
        self.client = self.app.test_client()
        self.waits: list[float] = []
        # A retry's back-off is not waited for: the jobs' clock jumps ahead instead (`waits` keeps each).
        self._ahead = 0.0
        real_clock = self.env.clock
        self.env.clock = lambda: real_clock() + dt.timedelta(seconds=self._ahead)
        with self.engine.begin() as conn:
            uid = add_user(conn, "admin", "Administrator", SYSTEM, password=self.PASSWORD, is_admin=True)
            self.admin_token = issue_token(conn, uid)
        self.admin = self.actor("admin")

    # -- definitions ------------------------------------------------------------------------------
    @property
    def registries(self):
        return self.env.runtime.registries

    def apply(self, source: str | Path | Mapping[str, Any], note: str = "") -> int:
        """Apply an app definition: a folder (as `keel app apply` takes), or a dict of relative file path
        -> JSON body ({"app.json": {...}, "entities/goal.json": {...}, "connectors/crm.json": {...}}),
        handy when a test fills in its loopback server's URL. Returns the app's version; raises
        DefinitionErrors (every problem, `file: /pointer: message`) for a definition that does not load."""
        from keel.apply import apply_app
        from keel.definitions.loader import load_app_dir

        folder = Path(source) if not isinstance(source, Mapping) else self._write_app(source)
        result = apply_app(self.engine, load_app_dir(folder, self.registries), self.admin, note=note)
        self.env.runtime.refresh()
        return result.version  # type: ignore[return-value]

    def _write_app(self, files: Mapping[str, Any]) -> Path:
        app_id = files["app.json"]["id"]
        folder = self.folder / "apps" / app_id
        if folder.exists():
            shutil.rmtree(folder)
        for rel, body in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body, ensure_ascii=False, indent=2), "utf-8")
        return folder

    # -- users --------------------------------------------------------------------------------------
    def add_user(self, username: str, *, roles: Iterable[str] = (), is_admin: bool = False,
                 display_name: str | None = None, **more: Any) -> int:
        """A user (more: password, department_code, manager_username, email, locale); returns its id."""
        from keel.actor import SYSTEM
        from keel.auth.directory import add_user

        more.setdefault("password", self.PASSWORD)
        with self.engine.begin() as conn:
            return add_user(conn, username, display_name or username, SYSTEM, roles=list(roles),
                            is_admin=is_admin, **more)

    def actor(self, username: str):
        """The Actor of a user, as a request or a job would see it."""
        from keel.auth.directory import find_user, get_actor

        with self.engine.connect() as conn:
            row = find_user(conn, username)
            return get_actor(conn, row.id) if row is not None else None

    def token(self, username: str) -> str:
        from keel.auth.directory import find_user
        from keel.auth.tokens import issue_token

        with self.engine.begin() as conn:
            return issue_token(conn, find_user(conn, username).id)

    def browser(self, username: str = "admin", password: str | None = None, lang: str = "en"):
        """A test client logged in through /login as `username` (pages, forms with their CSRF token);
        `lang` is the Accept-Language it sends."""
        import re

        c = self.app.test_client()
        c.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', c.get("/login").get_data(as_text=True))
        r = c.post("/login", data={"username": username, "password": password or self.PASSWORD,
                                   "csrf_token": token.group(1) if token else ""})
        if r.status_code not in (302, 303):
            raise AssertionError(f"login as {username} failed: HTTP {r.status_code}")
        return c

    @staticmethod
    def csrf_token(page_html: str) -> str:
        """The CSRF token of a form on a page (for posting it with a `browser`)."""
        import re

        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page_html).group(1)

    def api(self, method: str, path: str, json: Any = None, token: str | None = None):
        """Call the REST API (`/api/v1` + path) as the administrator (or with `token`)."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return self.client.open(f"/api/v1{path}", method=method, json=json, headers=headers)

    # -- jobs ---------------------------------------------------------------------------------------
    def run_job(self, name: str, *, app: str | None = None, params: Mapping[str, Any] | None = None,
                force: bool = False) -> dict[str, Any]:
        """Run job `name` now, in the foreground, as `keel jobs run` does, and return its run as the API
        shows it: status, error, counts, attempts, `problems` (what the job reported about items it
        skipped) and `chunks` with every attempt. A run refused by the job's idempotency is returned too
        (status "skipped", with its reason)."""
        from keel.jobs.catalog import ask, find_spec, merged_params, run_in_foreground
        from keel.jobs.runs import run_with_chunks

        spec = find_spec(self.env, name, app)
        asked = ask(self.env, spec, merged_params(self.env, spec, params), trigger="test", user_id=None,
                    force=force, actor=self.admin)
        if asked.run_id is None:  # another run of this key is queued or running
            return {"status": "refused", "error": asked.message, "run": asked.existing}
        if asked.outcome == "queued":
            run_in_foreground(self.env, asked.run_id, sleep=self._skip_ahead)
        with self.engine.connect() as conn:
            return run_with_chunks(conn, asked.run_id)  # type: ignore[return-value]

    def _skip_ahead(self, seconds: float) -> None:
        self.waits.append(seconds)
        self._ahead += seconds

    # -- records ------------------------------------------------------------------------------------
    def records(self, app: str, entity: str, *, sort: Iterable[str] = ("id",)) -> list[dict[str, Any]]:
        """Every record of an entity as the API shows them to the administrator (ids order)."""
        from keel.storage.query import list_records

        built = self.env.runtime.get(app)
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            page = 1
            while True:
                got = list_records(conn, built, entity, self.admin, sort=list(sort), page=page, per_page=500)
                out += got.items
                if len(out) >= got.total or not got.items:
                    return out
                page += 1

    def create_record(self, app: str, entity: str, values: Mapping[str, Any], as_user: str | None = None
                      ) -> dict[str, Any]:
        """Create a record through Keel's write path (checks, version, audit) as the administrator (or
        `as_user`); returns it as the API would."""
        from keel.storage import records

        who = self.actor(as_user) if as_user else self.admin
        with self.engine.begin() as conn:
            return records.create(conn, self.env.runtime.get(app), entity, dict(values), who)

    def history(self, app: str, entity: str, record_id: int) -> list[dict[str, Any]]:
        """A record's versions, oldest first: action, user_id, `via` (e.g. job:APP/JOB#RUN), changes."""
        from keel.storage.query import record_history

        with self.engine.connect() as conn:
            return record_history(conn, self.env.runtime.get(app), entity, record_id, self.admin)

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the database, drop the plugin modules imported from `plugins` (so the next instance,
        perhaps on another copy of that folder, imports its own), remove a temporary folder."""
        import sys

        from keel.plugins.discovery import forget

        self.engine.dispose()
        if self._plugins is not None:
            for name, module in list(sys.modules.items()):
                where = getattr(module, "__file__", None)
                if "." not in name and where and Path(where).resolve().is_relative_to(self._plugins):
                    forget(name)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
