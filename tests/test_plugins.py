"""The plugin SDK: built-ins register through the hooks, discovery (entry points and the plugins folder),
failures reported by name while Keel still starts, duplicate names, `keel plugin new` and `list`, the
built-in connector types, and the complete example of docs/plugins.md (tests/fixtures/plugins)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, make_app
from helpers_registries import REGISTRIES
from keel.cli.plugins import plugin_group
from keel.connectors import ConnectorError, TableFileError
from keel.definitions import DefinitionErrors, load_bundle
from keel.fieldtypes import FieldValueError
from keel.outbound import OutboundClient
from keel.plugins import ConnectorContext, ConnectorType, PluginHost, UnknownPluginObject
from keel.plugins.discovery import forget
from loopback import LoopbackServer, Reply

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
MINIMAL_APP = {"id": "mini", "version": "1", "label": "Mini"}


@pytest.fixture
def plugins_dir(tmp_path):
    """A fresh plugins folder; call it with fixture plugin names to copy them in. Modules imported from
    it are dropped afterwards so the next test imports its own copy."""
    root = tmp_path / "plugins"
    root.mkdir()

    def add(*names: str) -> Path:
        for name in names:
            shutil.copytree(FIXTURES / name, root / name)
        return root

    yield add
    for name, mod in list(sys.modules.items()):
        where = getattr(mod, "__file__", None) or ""
        if where.startswith(str(tmp_path)) and "." not in name:
            forget(name)


def failures_by_name(host: PluginHost) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in host.failures:
        out.setdefault(f.name, []).append(f.error)
    return out


def contact_bundle(field: dict) -> dict:
    return {"app.json": MINIMAL_APP,
            "entities/contact.json": {"id": "contact", "label": "Contact",
                                      "fields": [{"id": "name", "type": "text"}, field]}}


# -- built-ins ------------------------------------------------------------------------------------------

def test_builtins_register_through_the_same_hooks():
    import keel.connectors.plugin
    import keel.fieldtypes.plugin

    host = PluginHost.load(None, entry_points=False)
    by_name = {p.name: p for p in host.plugins}
    # Keel's own subsystems are plugins of the same host, in the order of keel.plugins.discovery
    assert [p.name for p in host.plugins] == ["keel.fieldtypes", "keel.jobs", "keel.connectors", "keel.notify",
                                              "keel.workflow", "keel.dashboards", "keel.web"]
    assert all(p.source == "builtin" for p in host.plugins)
    assert host.pm.get_plugin("keel.fieldtypes") is keel.fieldtypes.plugin
    assert by_name["keel.connectors"].obj is keel.connectors.plugin
    assert {"text", "money", "table"} <= set(by_name["keel.fieldtypes"].registers["field type"])
    assert by_name["keel.connectors"].registers["connector type"] == ["http_json", "file"]
    assert all(isinstance(c, ConnectorType) for c in host.connector_types.values())
    assert host.owner("field_types", "money") == "keel.fieldtypes"
    # the definition kinds beyond entities and forms come from the subsystems, like any plugin's would
    assert {k: host.owner("definition_kinds", k) for k in host.definition_kinds} == {
        "job": "keel.jobs", "connector": "keel.connectors", "notification": "keel.notify",
        "workflow": "keel.workflow", "dashboard": "keel.dashboards", "workbench": "keel.web", "list": "keel.web"}
    # what the engine is handed: one immutable value, built once per host
    registries = host.registries()
    assert registries is host.registries() and registries.field_types["money"] is host.field_types["money"]
    with pytest.raises(TypeError):
        registries.field_types["x"] = None


def test_an_unknown_connector_type_names_the_known_ones():
    host = PluginHost.load(None, entry_points=False)
    with pytest.raises(UnknownPluginObject, match=r"unknown connector type 'crm' \(known: file, http_json\)"):
        host.connector_type("crm")
    assert host.connector_config_problems("crm", {})[0].startswith("$.type: unknown connector type 'crm'")
    assert host.connector_config_problems("http_json", {"url": "ftp://x"}) == [
        "$.url: 'ftp://x' does not match '^https?://[^/?#{}%\\\\s]+([/?#].*)?$'"]


# -- the plugins folder -----------------------------------------------------------------------------------

def test_a_folder_plugin_adds_a_field_type_the_loader_accepts(plugins_dir):
    bundle = contact_bundle({"id": "mobile", "type": "phone", "region": "CN"})
    with pytest.raises(DefinitionErrors, match="unknown field type 'phone'"):
        load_bundle(bundle, REGISTRIES)

    host = PluginHost.load(plugins_dir("phone_field"), entry_points=False)
    assert host.failures == []
    plugin = next(p for p in host.plugins if p.name == "phone_field")
    assert (plugin.version, plugin.source) == ("1.2.0", "folder")
    assert plugin.registers == {"field type": ["phone"], "connector type": ["static_list"]}

    # loaded with that host's registries, the definition knows the type; the default ones still do not
    registries = host.registries()
    app = load_bundle(bundle, registries)
    mobile = app.entities["contact"].field("mobile")
    assert mobile.type == "phone" and mobile.ftype is host.field_types["phone"]
    assert mobile.ftype.parse(None, "+86 138-0000-0000") == "+8613800000000"
    with pytest.raises(FieldValueError):
        mobile.ftype.parse(None, "call me")
    with pytest.raises(DefinitionErrors, match="unknown field type 'phone'"):
        load_bundle(bundle, REGISTRIES)
    # the plugin's own key and its own definition check
    errors = [str(e) for e in _errors(contact_bundle({"id": "mobile", "type": "phone", "region": "China"}),
                                      registries)]
    assert any("region must be a two-letter country code" in e for e in errors)
    errors = [str(e) for e in _errors(contact_bundle({"id": "mobile", "type": "text", "region": "CN"}), registries)]
    assert any("'region' does not apply to a text field" in e for e in errors)


def _errors(bundle, registries=REGISTRIES):
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(bundle, registries)
    return caught.value.errors


def test_a_folder_plugin_adds_a_connector_type(plugins_dir):
    host = PluginHost.load(plugins_dir("phone_field"), entry_points=False)
    static = host.connector_type("static_list")
    config = {"items": [{"id": 1}, {"id": 2}]}
    assert host.connector_config_problems("static_list", config) == []
    assert list(static.open(config, None, ConnectorContext()).iter_items()) == [{"id": 1}, {"id": 2}]
    assert host.connector_config_problems("static_list", {"items": 3}) == [
        "$.items: must be a list of objects"]


def test_the_project_layout_is_loaded_by_its_pyproject_entry_point(plugins_dir):
    host = PluginHost.load(plugins_dir("meeting_notes"), entry_points=False)
    assert host.failures == []
    plugin = next(p for p in host.plugins if p.name == "meeting_notes")
    assert (plugin.version, plugin.source) == ("1.0.0", "folder")
    assert plugin.obj.__name__ == "keel_meeting_notes.plugin"
    assert plugin.registers == {"connector type": ["meeting_notes"]}


def test_folders_that_are_not_plugins_are_reported_or_ignored(plugins_dir):
    root = plugins_dir()
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("no code here")  # ignored
    (root / "loose").mkdir()
    (root / "loose" / "helper.py").write_text("X = 1\n")  # code, but which module is the plugin?
    (root / "no_entry").mkdir()
    (root / "no_entry" / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    (root / "bad_toml").mkdir()
    (root / "bad_toml" / "pyproject.toml").write_text("[project\n")
    (root / "no_hooks.py").write_text("VALUE = 1\n")
    host = PluginHost.load(root, entry_points=False)
    errors = failures_by_name(host)
    assert set(errors) == {"loose", "no_entry", "bad_toml", "no_hooks"}
    assert "no way to tell which module is the plugin" in errors["loose"][0]
    assert 'declares no [project.entry-points."keel.plugins"]' in errors["no_entry"][0]
    assert "pyproject.toml cannot be read" in errors["bad_toml"][0]
    assert "implements no Keel hook" in errors["no_hooks"][0]
    assert "no_hooks" not in sys.modules or host.pm.get_plugin("no_hooks") is None


def test_a_plugin_package_that_would_shadow_an_installed_module_is_refused(plugins_dir):
    root = plugins_dir()
    (root / "json").mkdir()
    (root / "json" / "__init__.py").write_text("raise SystemExit('must never run')\n")
    host = PluginHost.load(root, entry_points=False)
    assert "the module name 'json' is already taken by" in failures_by_name(host)["json"][0]
    import json

    assert hasattr(json, "dumps")


# -- entry points -----------------------------------------------------------------------------------------

def _install_dist(site: Path, dist: str, version: str, entry_points: str) -> None:
    """What pip leaves behind, minus pip: a .dist-info folder on sys.path with an entry_points.txt."""
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[keel.plugins]\n{entry_points}\n")


def test_an_entry_point_plugin_is_loaded(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "keel_ep_demo.py").write_text(
        "from keel.jobs.types import JobType\nfrom keel.plugins import hookimpl\n\n"
        "class Hello(JobType):\n    name = 'ep_demo_hello'\n\n"
        "class Notify:\n    name = 'ep_demo_notify'\n\n"
        "@hookimpl\ndef keel_job_types():\n    return [Hello()]\n\n"
        "@hookimpl\ndef keel_workflow_actions():\n    return [Notify()]\n")
    _install_dist(site, "keel_ep_demo", "2.0", "ep_demo = keel_ep_demo")
    monkeypatch.syspath_prepend(str(site))
    try:
        host = PluginHost.load(None)
        plugin = next(p for p in host.plugins if p.name == "ep_demo")
        assert (plugin.source, plugin.version, plugin.location) == ("entry point", "2.0", "keel_ep_demo")
        assert plugin.registers == {"job type": ["ep_demo_hello"], "workflow action": ["ep_demo_notify"]}
        assert host.job_type("ep_demo_hello").name == "ep_demo_hello"
        assert "ep_demo_notify" in host.workflow_actions
    finally:
        forget("keel_ep_demo")


def test_a_plugin_both_installed_and_in_the_folder_is_loaded_once(tmp_path, plugins_dir, monkeypatch):
    root = plugins_dir("meeting_notes")
    site = tmp_path / "site"
    _install_dist(site, "keel_meeting_notes", "1.0.0", "meeting_notes = keel_meeting_notes.plugin")
    monkeypatch.syspath_prepend(str(root / "meeting_notes" / "src"))  # as an editable install does
    monkeypatch.syspath_prepend(str(site))
    try:
        host = PluginHost.load(root)
        loaded = [p for p in host.plugins if p.name == "meeting_notes"]
        assert [p.source for p in loaded] == ["entry point"]
        assert host.failures == []
        assert "also installed as an entry point" in host.skipped[0]
    finally:
        forget("keel_meeting_notes")


# -- failures ---------------------------------------------------------------------------------------------

def test_a_broken_plugin_is_reported_by_name_and_keel_still_serves(tmp_path, sqlite_url, plugins_dir, caplog):
    root = plugins_dir("broken_import", "broken_hook", "phone_field", "typo_hook")
    caplog.set_level(logging.WARNING, logger="keel.plugins")
    app = make_app(tmp_path, sqlite_url, KEEL_PLUGINS_PATH=str(root))
    try:
        host = app.extensions["keel_plugins"]
        errors = failures_by_name(host)
        assert errors["broken_import"] == ["import failed: RuntimeError: broken_import is broken on purpose"]
        assert errors["broken_hook"] == ["keel_job_types() raised ValueError: job registry unavailable"]
        assert errors["typo_hook"][0].startswith(
            "implements unknown hook(s) keel_field_type; Keel's hooks are keel_definition_kinds, keel_field_types,")
        assert set(errors) == {"broken_import", "broken_hook", "typo_hook"}
        # a failed plugin is not half-loaded: broken_hook's field type is nowhere
        registries = app.extensions["keel"].registries
        assert "nickname" not in host.field_types and "nickname" not in registries.field_types
        assert host.pm.get_plugin("broken_hook") is None and "broken_import" not in sys.modules
        # the others work
        assert "phone" in registries.field_types and "static_list" in host.connector_types
        assert any("broken_import" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        resp = app.test_client().get("/healthz")
        assert resp.status_code == 200 and resp.get_json()["status"] == "ok"
    finally:
        app.extensions["keel"].engine.dispose()


def test_keel_startup_runs_once_per_app_and_a_raising_one_is_reported(tmp_path, sqlite_url):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "greeter.py").write_text(
        "from keel.plugins import hookimpl\n\n"
        "@hookimpl\ndef keel_startup(app):\n"
        "    app.extensions['greeter'] = app.extensions.get('greeter', 0) + 1\n")
    (plugins / "sad_start.py").write_text(
        "from keel.plugins import hookimpl\n\n"
        "@hookimpl\ndef keel_startup(app):\n    raise KeyError('SMTP_HOST')\n")
    app = make_app(tmp_path, sqlite_url, KEEL_PLUGINS_PATH=str(plugins))
    try:
        assert app.extensions["greeter"] == 1
        assert failures_by_name(app.extensions["keel_plugins"]) == {
            "sad_start": ["keel_startup() raised KeyError: 'SMTP_HOST'"]}
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        app.extensions["keel"].engine.dispose()
        forget("greeter")
        forget("sad_start")


def test_the_plugins_folder_defaults_to_the_one_next_to_the_apps_folder(monkeypatch, tmp_path):
    from keel.plugins.manager import plugins_path_from

    monkeypatch.delenv("KEEL_PLUGINS_PATH", raising=False)
    assert plugins_path_from({"KEEL_APPS_PATH": "/srv/keel/app_definitions"}) == Path("/srv/keel/plugins")
    monkeypatch.chdir(tmp_path)
    assert plugins_path_from({"KEEL_APPS_PATH": "app_definitions"}) == tmp_path.resolve() / "plugins"
    assert plugins_path_from({"KEEL_PLUGINS_PATH": "/opt/plugins"}) == Path("/opt/plugins")
    assert plugins_path_from({"KEEL_PLUGINS_PATH": ""}) is None  # no folder at all
    monkeypatch.setenv("KEEL_PLUGINS_PATH", "/env/plugins")
    assert plugins_path_from({}) == Path("/env/plugins")


def test_duplicate_names_are_reported_and_the_first_wins(plugins_dir):
    host = PluginHost.load(plugins_dir("phone_field", "shadow_list"), entry_points=False)
    assert host.owner("connector_types", "static_list") == "phone_field"
    assert host.owner("connector_types", "http_json") == "keel.connectors"
    assert host.owner("connector_types", "shadow_only") == "shadow_list"
    assert sorted(failures_by_name(host)["shadow_list"]) == [
        "connector type 'http_json' is already registered by plugin 'keel.connectors'; this one is ignored",
        "connector type 'static_list' is already registered by plugin 'phone_field'; this one is ignored"]
    shadow = next(p for p in host.plugins if p.name == "shadow_list")
    assert shadow.registers == {"connector type": ["shadow_only"]}


def test_two_hosts_in_one_process_keep_their_own_field_types(tmp_path, plugins_dir):
    """Registries are built per host at the composition root: a second host with another 'phone' type
    does not see (or disturb) the first one's."""
    first = PluginHost.load(plugins_dir("phone_field"), entry_points=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "other_phone.py").write_text(
        "from keel.fieldtypes.builtin import Text\nfrom keel.plugins import hookimpl\n\n"
        "class Phone(Text):\n    name = 'phone'\n\n"
        "@hookimpl\ndef keel_field_types():\n    return [Phone()]\n")
    try:
        second = PluginHost.load(other, entry_points=False)
        assert failures_by_name(second) == {} and failures_by_name(first) == {}
        assert type(first.registries().field_types["phone"]).__module__ == "phone_field"
        assert type(second.registries().field_types["phone"]).__module__ == "other_phone"
        assert "phone" not in PluginHost.load(None, entry_points=False).registries().field_types
    finally:
        forget("other_phone")


def test_a_field_type_taken_by_a_builtin_is_reported(tmp_path):
    (tmp_path / "my_text.py").write_text(
        "from keel.fieldtypes.builtin import Text\nfrom keel.plugins import hookimpl\n\n"
        "class Mine(Text):\n    pass\n\n"
        "@hookimpl\ndef keel_field_types():\n    return [Mine()]\n")
    try:
        host = PluginHost.load(tmp_path, entry_points=False)
        assert failures_by_name(host)["my_text"] == [
            "field type 'text' is already registered by plugin 'keel.fieldtypes'; this one is ignored"]
        assert type(host.registries().field_types["text"]).__module__ == "keel.fieldtypes.builtin"
    finally:
        forget("my_text")


# -- definition kinds ---------------------------------------------------------------------------------------

OKR_KIND = """
from keel.plugins import DefinitionKind, hookimpl

SCHEMA = {"$id": "https://keel.dev/schemas/okr.json", "type": "object", "required": ["id", "goal"],
          "properties": {"id": {"$ref": "common.json#/$defs/id"}, "label": {"$ref": "common.json#/$defs/label"},
                         "goal": {"type": "string"}}, "additionalProperties": False}


def check(d, ctx):
    from keel.definitions.errors import DefinitionError

    if not ctx.known("entity", d.data["goal"]):
        yield DefinitionError(d.file, "/goal", f"no entity '{d.data['goal']}'")


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="okr", folder="okrs", schema=SCHEMA, check=check, label="OKR sets")]
"""


def test_a_plugin_adds_a_definition_kind_with_its_schema_and_checks(tmp_path):
    (tmp_path / "okr_kind.py").write_text(OKR_KIND)
    bundle = {"app.json": MINIMAL_APP, "entities/goal.json": {"id": "goal", "fields": [{"id": "t", "type": "text"}]},
              "okrs/q4.json": {"id": "q4", "goal": "goal"}}
    with pytest.raises(DefinitionErrors, match="unexpected file"):  # without the plugin, okrs/ is unknown
        load_bundle(bundle, REGISTRIES)
    try:
        registries = PluginHost.load(tmp_path, entry_points=False).registries()
        assert load_bundle(bundle, registries).definitions_of("okr")["q4"].data["goal"] == "goal"
        bad = {**bundle, "okrs/q4.json": {"id": "q4", "goal": "nope", "extra": 1}}
        errors = [str(e) for e in _errors(bad, registries)]
        # the kind's schema and its check, in one run
        assert errors == ["okrs/q4.json: /extra: unknown key 'extra'; allowed here: goal, id, label",
                          "okrs/q4.json: /goal: no entity 'nope'"]
    finally:
        forget("okr_kind")


def test_a_kind_with_a_broken_schema_is_reported_by_name_and_keel_starts(tmp_path, sqlite_url):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bad_kind.py").write_text(
        "from keel.plugins import DefinitionKind, hookimpl\n\n"
        "@hookimpl\ndef keel_definition_kinds():\n"
        "    return [DefinitionKind(name='okr', folder='okrs', schema={'type': 'objekt'})]\n")
    app = make_app(tmp_path, sqlite_url, KEEL_PLUGINS_PATH=str(plugins))
    try:
        [error] = failures_by_name(app.extensions["keel_plugins"])["bad_kind"]
        assert error.startswith("keel_definition_kinds() item 0") and "has an invalid `schema`: 'objekt'" in error
        assert "okr" not in app.extensions["keel"].registries.definition_kinds
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        app.extensions["keel"].engine.dispose()
        forget("bad_kind")


def test_two_plugins_claiming_one_kind_is_a_clear_conflict(tmp_path):
    (tmp_path / "okr_kind.py").write_text(OKR_KIND)
    (tmp_path / "zz_okr_again.py").write_text(OKR_KIND.replace('label="OKR sets"', 'label="again"'))
    (tmp_path / "wf_again.py").write_text(
        "from keel.plugins import DefinitionKind, hookimpl\n\n"
        "@hookimpl\ndef keel_definition_kinds():\n"
        "    return [DefinitionKind(name='flow', folder='workflows', schema={'type': 'object'})]\n")
    (tmp_path / "core_again.py").write_text(
        "from keel.plugins import DefinitionKind, hookimpl\n\n"
        "@hookimpl\ndef keel_definition_kinds():\n"
        "    return [DefinitionKind(name='form', folder='forms2', schema={'type': 'object'})]\n")
    try:
        host = PluginHost.load(tmp_path, entry_points=False)
        errors = failures_by_name(host)
        assert errors["zz_okr_again"] == [
            "definition kind 'okr' is already registered by plugin 'okr_kind'; this one is ignored"]
        assert errors["wf_again"] == ["definition kind 'flow' claims the folder 'workflows/', which plugin "
                                      "'keel.workflow' reads already; this one is ignored"]
        assert errors["core_again"][0].endswith("claims 'forms2/', which Keel's core defines")
        assert host.registries().definition_kinds["okr"].label == "OKR sets"
        assert set(host.registries().definition_kinds) == {"okr", "job", "connector", "notification", "workflow",
                                                           "dashboard", "workbench", "list"}
    finally:
        for name in ("okr_kind", "zz_okr_again", "wf_again", "core_again"):
            forget(name)


def test_a_hook_returning_the_wrong_shape_is_reported(tmp_path):
    (tmp_path / "bad_shape.py").write_text(
        "from keel.plugins import hookimpl\n\n"
        "class NoSchema:\n    name = 'x'\n\n"
        "@hookimpl\ndef keel_connector_types():\n    return [NoSchema()]\n")
    (tmp_path / "not_a_list.py").write_text(
        "from keel.plugins import hookimpl\n\n@hookimpl\ndef keel_dashboard_widgets():\n    return 'w'\n")
    try:
        errors = failures_by_name(PluginHost.load(tmp_path, entry_points=False))
        assert errors["bad_shape"][0].startswith("keel_connector_types() item 0")
        assert "is not a connector type: it needs `name`, `config_schema`" in errors["bad_shape"][0]
        assert errors["not_a_list"] == ["keel_dashboard_widgets() must return a list, not str"]
    finally:
        forget("bad_shape")
        forget("not_a_list")


# -- keel plugin new / list -------------------------------------------------------------------------------

def test_plugin_new_creates_a_working_tested_skeleton(tmp_path):
    result = CliRunner().invoke(plugin_group, ["new", "notes_demo", "--path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    project = tmp_path / "notes_demo"
    assert "created plugin 'notes_demo'" in result.output
    assert (project / "src" / "keel_notes_demo" / "plugin.py").is_file()
    assert 'notes_demo = "keel_notes_demo.plugin"' in (project / "pyproject.toml").read_text()
    try:
        host = PluginHost.load(tmp_path, entry_points=False)
        assert host.failures == []
        plugin = next(p for p in host.plugins if p.name == "notes_demo")
        assert plugin.registers == {"connector type": ["notes_demo_api"]}
    finally:
        forget("keel_notes_demo")
    assert ".pytest_cache/" in (project / ".gitignore").read_text().splitlines()
    # Its own tests, as its author runs them: Keel's Python, nothing installed, no conftest of its own
    # (keel.testing gives the instance, the loopback API and the job run).
    assert not list(project.rglob("conftest.py"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=project, env=environ,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout
    assert not list(project.rglob("*.egg-info"))
    installed = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('keel_notes_demo'))"],
                               capture_output=True, text=True, env=environ, cwd=tmp_path)
    assert installed.stdout.strip() == "None"


@pytest.mark.parametrize("name, message", [
    ("Notes", "must be a lower-case Python identifier"),
    ("notes-demo", "must be a lower-case Python identifier"),
    ("1notes", "must be a lower-case Python identifier"),
    ("class", "must be a lower-case Python identifier"),
    ("keel", "taken by Keel's built-ins"),
    ("taken", "already exists"),
])
def test_plugin_new_refuses_a_bad_name_and_creates_nothing(tmp_path, name, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(plugin_group, ["new", name, "--path", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"


def test_plugin_list_shows_plugins_and_failures(tmp_path, plugins_dir):
    root = plugins_dir("phone_field", "broken_import")
    result = CliRunner().invoke(plugin_group, ["list", "--path", str(root)])
    assert result.exit_code == 1
    assert re.search(r"^keel.workflow\s+\S+\s+builtin\s+keel\.workflow\.plugin$", result.output, re.M)
    assert re.search(r"^phone_field\s+1\.2\.0\s+folder\s+", result.output, re.M)
    assert "field types: phone" in result.output and "connector types: static_list" in result.output
    assert "1 failure(s):" in result.output
    assert "plugin 'broken_import' (folder: " in result.output and "broken on purpose" in result.output
    (tmp_path / "empty").mkdir()
    ok = CliRunner().invoke(plugin_group, ["list", "--path", str(tmp_path / "empty")])
    assert ok.exit_code == 0 and "failure" not in ok.output


# -- the built-in connector types -------------------------------------------------------------------------

def test_the_http_json_connector_type_reads_a_server():
    host = PluginHost.load(None, entry_points=False)
    with LoopbackServer() as hr:
        hr.reply("/people", Reply(json={"items": [{"id": 1}, {"id": 2}]}))
        config = {"url": hr.url("/people"), "items": "items"}
        assert host.connector_config_problems("http_json", config) == []
        context = ConnectorContext(client=OutboundClient(allowlist=[hr.allow]), environ={})
        items = list(host.connector_type("http_json").open(config, None, context).iter_items())
    assert items == [{"id": 1}, {"id": 2}]
    with pytest.raises(ConnectorError, match="needs the outbound HTTP client"):
        host.connector_type("http_json").open(config, None, ConnectorContext())


def test_the_file_connector_type_reads_csv_from_the_import_folder_or_an_upload(tmp_path):
    file_type = PluginHost.load(None, entry_points=False).connector_type("file")
    (tmp_path / "people.csv").write_bytes("工号,姓名\nE1,张伟\nE2,李娜\n".encode("gbk"))
    config = {"file": "people.csv", "encoding": "gbk", "columns": ["工号", "姓名"],
              "mapping": {"external_id": "工号"}}
    assert file_type.validate(config) == []
    items = list(file_type.open(config, None, ConnectorContext(import_root=tmp_path)).iter_items())
    assert items == [{"工号": "E1", "姓名": "张伟"}, {"工号": "E2", "姓名": "李娜"}]
    upload = ConnectorContext(upload=("c:/fakepath/people.csv", "工号,姓名\nE3,王芳\n".encode()))
    assert list(file_type.open({}, None, upload).iter_items()) == [{"工号": "E3", "姓名": "王芳"}]
    with pytest.raises(TableFileError, match="missing columns: 部门"):
        list(file_type.open({**config, "columns": ["工号", "部门"]}, None,
                            ConnectorContext(import_root=tmp_path)).iter_items())
    with pytest.raises(ConnectorError, match="no import folder is configured"):
        list(file_type.open(config, None, ConnectorContext()).iter_items())
    assert file_type.validate({"file": "../etc/people.csv"}) == [
        "$.file: must be a relative name inside the import folder"]
    assert file_type.validate({"file": "/etc/passwd"})[0] == (
        "$.file: must be a relative name inside the import folder")
    assert file_type.validate({"encoding": "klingon"}) == ["$.encoding: unknown encoding 'klingon'"]
    assert file_type.validate({"path": "x.csv"})[0].startswith("$: Additional properties are not allowed")


# -- the complete example of docs/plugins.md ----------------------------------------------------------------

@pytest.fixture
def meeting_notes(plugins_dir):
    return PluginHost.load(plugins_dir("meeting_notes"), entry_points=False).connector_type("meeting_notes")


NOTES = [{"id": "n1", "title": "Q4 sales review", "held_on": "2025-10-18", "attendees": ["cro", "zhang.wei"],
          "text": "12 customers asked about expansion"},
         {"id": "n2", "title": "Customer success sync", "held_on": "2025-10-20", "attendees": ["li.na"],
          "text": "dedicated CSM for upsell"}]


def test_the_docs_example_reads_notes_page_by_page_with_its_token(meeting_notes):
    with LoopbackServer() as notes:
        notes.handle("/api/notes", lambda req: Reply(json={"notes": NOTES[:1], "next_cursor": "p2"})
                     if "cursor" not in req.query else Reply(json={"notes": NOTES[1:], "next_cursor": None}))
        config = {"url": notes.url("/api/notes"), "since": "2025-10-01", "page_size": 1}
        assert meeting_notes.validate(config) == []
        context = ConnectorContext(client=OutboundClient(allowlist=[notes.allow]),
                                   environ={"MEETING_NOTES_TOKEN": "s3cret-token"})
        source = meeting_notes.open(config, {"token": "MEETING_NOTES_TOKEN"}, context)
        assert list(source.iter_items()) == NOTES
        first, second = notes.seen("/api/notes")
    assert first.headers["authorization"] == "Bearer s3cret-token"
    assert first.query == {"limit": "1", "since": "2025-10-01"}
    assert second.query == {"limit": "1", "since": "2025-10-01", "cursor": "p2"}


def test_the_docs_example_reports_errors_without_the_token(meeting_notes):
    with LoopbackServer() as notes:
        notes.reply("/api/notes", Reply(500, body="token s3cret-token rejected"))
        notes.reply("/bad", Reply(body="{not json"))
        context = ConnectorContext(client=OutboundClient(allowlist=[notes.allow]),
                                   environ={"MEETING_NOTES_TOKEN": "s3cret-token"})
        secrets = {"token": "MEETING_NOTES_TOKEN"}
        with pytest.raises(ConnectorError) as caught:
            list(meeting_notes.open({"url": notes.url("/api/notes")}, secrets, context).iter_items())
        assert caught.value.status == 500 and "s3cret-token" not in str(caught.value)
        with pytest.raises(ConnectorError, match="malformed JSON"):
            list(meeting_notes.open({"url": notes.url("/bad")}, secrets, context).iter_items())
    with pytest.raises(ConnectorError, match="environment variable not set: MEETING_NOTES_TOKEN"):
        meeting_notes.open({"url": "https://notes.example.com/api"}, secrets, ConnectorContext(
            client=OutboundClient(), environ={}))
    assert meeting_notes.validate({"url": "notes.example.com", "page_size": 0}) == [
        "$.page_size: 0 is less than the minimum of 1",
        "$.url: 'notes.example.com' does not match '^https?://[^\\\\s{}]+$'"]


def test_the_docs_show_the_example_plugin_exactly():
    """docs/plugins.md quotes the example's files and its test: a code block after a line naming a file
    must be that file (or, marked "(excerpt)", a part of it), so the guide shows the code that runs."""
    doc = (REPO / "docs" / "plugins.md").read_text("utf-8")
    quoted = re.findall(r"^`(tests/[^`]+)`( \(excerpt\))?:\n\n```[a-z]*\n(.*?)^```$", doc, re.M | re.S)
    assert {path for path, _, _ in quoted} == {
        "tests/fixtures/plugins/meeting_notes/pyproject.toml",
        "tests/fixtures/plugins/meeting_notes/src/keel_meeting_notes/plugin.py",
        "tests/test_plugins.py",
        "tests/fixtures/plugins/crm_actuals/src/keel_crm_actuals/plugin.py",
        "tests/test_plugin_job_example.py"}
    for path, excerpt, text in quoted:
        source = (REPO / path).read_text("utf-8")
        assert (text in source) if excerpt else (text == source), f"docs/plugins.md is out of date for {path}"
