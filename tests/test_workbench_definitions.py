"""The `workbench` and `list` definition kinds: bad references are errors with file and pointer (all at once),
and a plugin adds a workbench section through `keel_workbench_sections` — placed by an app's workbench file or
on every workbench — while one that raises is left out and the page still answers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_app
from keel.definitions.errors import DefinitionErrors
from keel.plugins import hookimpl

FIXTURE = Path(__file__).parent / "fixtures" / "web_app"


def app_folder(tmp_path: Path, files: dict[str, dict]) -> Path:
    root = tmp_path / "webtest"
    shutil.copytree(FIXTURE, root)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    return root


def load(root: Path, registries):
    from keel.definitions.loader import load_app_dir

    return load_app_dir(root, registries)


def errors_of(root: Path, registries) -> list[str]:
    with pytest.raises(DefinitionErrors) as e:
        load(root, registries)
    return [str(x) for x in e.value.errors]


def host_registries(*extra):
    from keel.plugins import PluginHost

    return PluginHost.load(None, entry_points=False, extra=extra).registries()


def test_bad_workbench_and_list_files_are_reported_together(tmp_path):
    root = app_folder(tmp_path, {
        "workbench/a.json": {"id": "a", "entity": "nope"},
        "workbench/b.json": {"id": "b", "entity": "item", "filter": "team", "sort": ["-missing"],
                             "where": {"ghost__ne": 1},
                             "card": {"title": "title", "fields": ["nothing"],
                                      "progress": {"value": "amount", "target": "gone"},
                                      "colour": [{"if": "amount >", "colour": "red"},
                                                 {"if": "secret > 1", "colour": "red"}]}},
        "workbench/c.json": {"id": "c", "section": "not_installed"},
        "workbench/d.json": {"id": "d", "section": "pending_approvals", "entity": "item"},
        "workbench/e.json": {"id": "e", "entity": "item", "card": {"colour": [{"if": "1", "colour": "pink"}]}},
        "lists/l.json": {"id": "l", "entity": "item", "columns": ["title", "nope"], "filters": ["story"],
                         "search": ["amount"], "roles": ["ghost"]},
    })
    errs = "\n".join(errors_of(root, host_registries()))
    for expected in ("workbench/a.json: /entity: unknown entity 'nope'",
                     "workbench/b.json: /sort/0: no field 'missing'",
                     "workbench/b.json: /where/ghost__ne: no field 'ghost'",
                     "workbench/b.json: /card/fields/0: no field 'nothing'",
                     "workbench/b.json: /card/progress/1: no field 'gone'",
                     "workbench/b.json: /card/colour/0/if: not a valid expression",
                     "workbench/b.json: /card/colour/1/if: unknown name(s) secret",
                     "workbench/c.json: /section: unknown workbench section 'not_installed'",
                     "workbench/d.json",  # a section and an entity at once: the schema says which
                     "workbench/e.json: /card/colour/0/colour",
                     "lists/l.json: /columns/1: no field 'nope'",
                     "lists/l.json: /filters/0: 'story' is a rich_text field",
                     "lists/l.json: /search/0: 'amount' is a integer field",
                     "lists/l.json: /roles/0: unknown role 'ghost'"):
        assert expected in errs, (expected, errs)


def test_a_unit_field_must_be_a_select_of_the_same_entity(tmp_path):
    item = json.loads((FIXTURE / "entities" / "item.json").read_text("utf-8"))
    item["fields"][3]["format"] = {"unit_field": "title"}
    root = app_folder(tmp_path, {"entities/item.json": item})
    assert any("/fields/3/format/unit_field: 'title' is not a select field" in e
               for e in errors_of(root, host_registries()))


class BoardPlugin:
    """A plugin with two sections: one an app places by name, one on every workbench that raises."""

    @hookimpl
    def keel_workbench_sections(self):
        from keel.web.workbench_model import AUTO, Card, SectionView, WorkbenchSection

        def hello(ctx):
            return SectionView(f"Hello {ctx.params.get('who', '?')}",
                               (Card("plugin card", colour="green", progress=150.0, progress_text="150%"),))

        def broken(ctx):
            raise RuntimeError("a bug in a plugin")

        def bad_sql(ctx):  # on PostgreSQL this leaves the transaction aborted unless the board ends it
            import sqlalchemy as sa

            ctx.conn.execute(sa.text("SELECT * FROM no_such_table"))

        return [WorkbenchSection("hello", hello), WorkbenchSection("broken", broken, AUTO),
                WorkbenchSection("bad_sql", bad_sql, AUTO, order=1)]


def test_a_plugin_section_placed_by_the_app_and_a_broken_one_left_out(tmp_path, db_url):
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from test_pages import Site, add_users

    app = make_app(tmp_path, db_url, KEEL_EXTRA_PLUGINS=[("board", BoardPlugin())],
                   KEEL_FRIENDLY_500_IN_TESTS=True)
    registries = app.extensions["keel_plugins"].registries()
    root = app_folder(tmp_path, {"workbench/hello.json": {"id": "hello", "section": "hello", "order": 5,
                                                          "label": {"zh": "插件问候", "en": "Plugin hello"},
                                                          "params": {"who": "Keel"}},
                                 "workbench/mine.json": {"id": "mine", "entity": "item", "filter": "mine",
                                                         "order": 10}})
    apply_app(app.extensions["keel"].engine, load(root, registries), SYSTEM)
    app.extensions["keel"].refresh()
    site = Site(app)
    add_users(site, ("alice", "Alice", {"roles": ["member"]}))
    site.create("alice", title="Alice's own item", owner=site.user_id("alice"))
    page = site.client("alice").get("/workbench")
    assert page.status_code == 200
    assert "插件问候" in page.text and "plugin card" in page.text
    assert 'class="card colour-green"' in page.text and 'value="100' in page.text  # drawn capped at 100
    assert "a bug in a plugin" not in page.text and "no_such_table" not in page.text
    assert "Alice&#39;s own item" in page.text  # the sections after the broken ones still read
    app.extensions["keel"].engine.dispose()
