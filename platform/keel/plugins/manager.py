"""The plugin host: one pluggy PluginManager with Keel's hook specs, the plugins registered on it, and
what they registered, indexed by name.

Loading order decides who wins a name: Keel's built-ins first, then entry points, then the plugins
folder (each in name order). A second object with a taken name is reported as a failure of the plugin
that brought it and ignored; a plugin that fails to import, implements an unknown hook, or whose hook
raises or returns something unusable is reported with its name and error, and nothing of it is used.
Keel starts either way: failures are values on the host (`host.failures`), logged as warnings.

The host is built at the composition root — `create_app`, the CLI, a test — and hands what the plugins
registered down as one `Registries` value (`host.registries()`); nothing below keeps a host of its own.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pluggy
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from keel import hooks
from keel.connectors.types import ConnectorType
from keel.definitions.kinds import kind_problem
from keel.errors import KeelError
from keel.fieldtypes.base import FieldType
from keel.jobs.types import TYPE_NAME, JobType
from keel.plugins.discovery import (
    ENTRY_POINT,
    FOLDER,
    Candidate,
    PluginFailure,
    builtin_candidates,
    entry_point_candidates,
    folder_candidates,
)
from keel.registries import Registries
from keel.storage.events import RecordListeners

log = logging.getLogger("keel.plugins")
GIVEN = "given"  # a plugin object handed to PluginHost.load(extra=...), e.g. by a test

HOOK_NAMES = hooks.hook_names()


class UnknownPluginObject(KeelError):
    """A definition names a connector type, job type, ... that no loaded plugin provides."""


# -- what the hooks return ------------------------------------------------------------------------------

def _named(obj: Any) -> str | None:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name or len(name) > 100:
        return "needs a `name`: a non-empty string of at most 100 characters"
    return None


def _field_type_problem(obj: Any) -> str | None:
    if not isinstance(obj, FieldType):
        return "is not a keel.fieldtypes.base.FieldType instance"
    return _named(obj)


def _connector_type_problem(obj: Any) -> str | None:
    if not isinstance(obj, ConnectorType):
        return "is not a connector type: it needs `name`, `config_schema`, `validate(config)` and " \
               "`open(config, secrets, context)` (keel.plugins.types.ConnectorType)"
    if not isinstance(obj.config_schema, Mapping):
        return "has a `config_schema` that is not a JSON Schema object"
    try:
        Draft202012Validator.check_schema(obj.config_schema)
    except SchemaError as exc:
        return f"has an invalid `config_schema`: {exc.message}"
    return _named(obj)


def _job_type_problem(obj: Any) -> str | None:
    if not isinstance(obj, JobType):
        return "is not a keel.jobs.types.JobType instance"
    if not isinstance(obj.name, str) or not TYPE_NAME.fullmatch(obj.name):
        return "needs a `name` of lower-case letters, digits, '_' or '.' (at most 100 characters)"
    return None


@dataclass(frozen=True)
class Kind:
    """One kind of thing plugins register: the host attribute that indexes it, its hook, its label."""

    attr: str
    hook: str
    label: str
    problem: Callable[[Any], str | None] = _named


def _definition_kind_problem(obj: Any) -> str | None:
    return kind_problem(obj)


KINDS = (
    Kind("definition_kinds", "keel_definition_kinds", "definition kind", _definition_kind_problem),
    Kind("field_types", "keel_field_types", "field type", _field_type_problem),
    Kind("connector_types", "keel_connector_types", "connector type", _connector_type_problem),
    Kind("job_types", "keel_job_types", "job type", _job_type_problem),
    Kind("workflow_actions", "keel_workflow_actions", "workflow action"),
    Kind("approver_rules", "keel_approver_rules", "approver rule"),
    Kind("dashboard_widgets", "keel_dashboard_widgets", "dashboard widget"),
    Kind("delivery_channels", "keel_delivery_channels", "delivery channel"),
    Kind("workbench_sections", "keel_workbench_sections", "workbench section"),
)


@dataclass
class LoadedPlugin:
    """A plugin in use. `registers` maps a kind's label to the names it registered."""

    name: str
    version: str | None
    source: str
    location: str
    obj: Any
    registers: dict[str, list[str]] = field(default_factory=dict)


# -- the host -----------------------------------------------------------------------------------------

class PluginHost:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hooks.PROJECT)
        self.pm.add_hookspecs(hooks)
        self.plugins: list[LoadedPlugin] = []
        self.failures: list[PluginFailure] = []
        self.skipped: list[str] = []
        self.plugins_path: Path | None = None
        self.definition_kinds: dict[str, Any] = {}
        self.field_types: dict[str, Any] = {}
        self.connector_types: dict[str, ConnectorType] = {}
        self.job_types: dict[str, Any] = {}
        self.workflow_actions: dict[str, Any] = {}
        self.approver_rules: dict[str, Any] = {}
        self.dashboard_widgets: dict[str, Any] = {}
        self.delivery_channels: dict[str, Any] = {}
        self.workbench_sections: dict[str, Any] = {}
        self._owners: dict[tuple[str, str], str] = {}

    @classmethod
    def load(cls, plugins_path: str | os.PathLike[str] | None = None, *, entry_points: bool = True,
             extra: Iterable[tuple[str, Any]] = ()) -> PluginHost:
        """A host with Keel's built-ins, the installed entry-point plugins (unless `entry_points` is
        False) and the plugins in `plugins_path` (none when None). `extra`: (name, plugin object) pairs
        registered right after the built-ins — how a test builds a host with exactly the plugins it
        wants."""
        host = cls()
        for candidate in builtin_candidates():
            host.add(candidate)
        for name, obj in extra:
            host.add(Candidate(name, GIVEN, f"given to PluginHost.load as '{name}'", None, name,
                               lambda obj=obj: obj))
        if entry_points:
            for candidate in entry_point_candidates():
                host.add(candidate)
        if plugins_path is not None:
            host.plugins_path = Path(plugins_path)
            found, failures = folder_candidates(host.plugins_path)
            for failure in failures:
                host._fail(failure)
            for candidate in found:
                host.add(candidate)
        return host

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PluginHost:
        """The host for an app's configuration: KEEL_PLUGINS_PATH, and KEEL_EXTRA_PLUGINS — (name, plugin
        object) pairs given in code, by a test or an application embedding Keel."""
        return cls.load(plugins_path_from(config), extra=config.get("KEEL_EXTRA_PLUGINS") or ())

    # loading -------------------------------------------------------------------------------------------
    def add(self, candidate: Candidate) -> LoadedPlugin | None:
        """Import, register and collect one plugin; None (and a recorded failure) if it cannot be used."""
        same = next((p for p in self.plugins if p.name == candidate.name), None)
        if same is None and candidate.source == FOLDER:
            same = next((p for p in self.plugins if p.source == ENTRY_POINT
                         and p.location.split(".")[0].split(":")[0] == candidate.package), None)
        if same is not None:
            if same.source == ENTRY_POINT and candidate.source == FOLDER:
                note = (f"plugin '{candidate.name}' in {candidate.location} is also installed as an entry "
                        f"point ({same.location}); loaded once, from the entry point")
                self.skipped.append(note)
                log.info("%s", note)
            else:
                self._fail(PluginFailure(candidate.name, f"a plugin of this name is already loaded "
                                         f"({same.source}: {same.location}); this one is ignored",
                                         candidate.source, candidate.location))
            return None
        try:
            obj = candidate.load()
        except (Exception, SystemExit) as exc:  # a plugin must never stop Keel: report it, go on
            self._fail(PluginFailure(candidate.name, f"import failed: {type(exc).__name__}: {exc}",
                                     candidate.source, candidate.location))
            return None
        version = candidate.version or _version_of(obj)
        plugin = LoadedPlugin(candidate.name, version, candidate.source, candidate.location, obj)
        problem = self._register(plugin)
        if problem is None:
            contributions, problem = self._collect(plugin)
        if problem is not None:
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            self._fail(PluginFailure(candidate.name, problem, candidate.source, candidate.location))
            return None
        self.plugins.append(plugin)
        self._index(plugin, contributions)
        return plugin

    def _register(self, plugin: LoadedPlugin) -> str | None:
        try:
            self.pm.register(plugin.obj, name=plugin.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            return f"cannot be registered: {exc}"
        callers = self.pm.get_hookcallers(plugin.obj) or []
        unknown = sorted(c.name for c in callers if c.spec is None)
        if unknown:
            return (f"implements unknown hook(s) {', '.join(unknown)}; Keel's hooks are "
                    + ", ".join(HOOK_NAMES))
        if not callers:
            return "implements no Keel hook (mark the hook functions with @keel.plugins.hookimpl)"
        return None

    def _impls(self, hook: str, plugin: LoadedPlugin) -> list[Any]:
        return [i for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin is plugin.obj]

    def _collect(self, plugin: LoadedPlugin) -> tuple[dict[Kind, list[Any]], str | None]:
        """Call each of the plugin's registry hooks once, on its own, so a result or an error is
        attributed to the plugin that produced it."""
        out: dict[Kind, list[Any]] = {}
        for kind in KINDS:
            for impl in self._impls(kind.hook, plugin):
                try:
                    result = impl.function()
                except Exception as exc:
                    return out, f"{kind.hook}() raised {type(exc).__name__}: {exc}"
                if result is None:
                    continue
                if not isinstance(result, (list, tuple)):
                    return out, f"{kind.hook}() must return a list, not {type(result).__name__}"
                for i, obj in enumerate(result):
                    problem = kind.problem(obj)
                    if problem:
                        return out, f"{kind.hook}() item {i} ({obj!r:.80}) {problem}"
                out.setdefault(kind, []).extend(result)
        return out, None

    def _index(self, plugin: LoadedPlugin, contributions: dict[Kind, list[Any]]) -> None:
        for kind, objs in contributions.items():
            table = getattr(self, kind.attr)
            for obj in objs:
                owner = self._owners.get((kind.attr, obj.name))
                if owner is not None:
                    self._fail(PluginFailure(plugin.name, f"{kind.label} '{obj.name}' is already registered "
                                             f"by plugin '{owner}'; this one is ignored", plugin.source,
                                             plugin.location))
                    continue
                clash = self._folder_clash(kind, obj)
                if clash is not None:
                    self._fail(PluginFailure(plugin.name, f"{kind.label} '{obj.name}' claims the folder "
                                             f"'{obj.folder}/', which plugin '{clash}' reads already; this one "
                                             "is ignored", plugin.source, plugin.location))
                    continue
                table[obj.name] = obj
                self._owners[(kind.attr, obj.name)] = plugin.name
                plugin.registers.setdefault(kind.label, []).append(obj.name)

    def _folder_clash(self, kind: Kind, obj: Any) -> str | None:
        """The plugin whose definition kind reads the folder `obj` wants (two kinds cannot share one)."""
        if kind.attr != "definition_kinds":
            return None
        taken = next((k for k in self.definition_kinds.values() if k.folder == obj.folder), None)
        return None if taken is None else self._owners[("definition_kinds", taken.name)]

    def _fail(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        log.warning("%s", failure)

    # using ---------------------------------------------------------------------------------------------
    def owner(self, attr: str, name: str) -> str | None:
        """The plugin that registered `name` in the registry `attr` (e.g. "connector_types")."""
        return self._owners.get((attr, name))

    def connector_type(self, name: str) -> ConnectorType:
        return self._lookup("connector_types", "connector type", name)

    def job_type(self, name: str) -> Any:
        return self._lookup("job_types", "job type", name)

    def _lookup(self, attr: str, label: str, name: str) -> Any:
        table = getattr(self, attr)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise UnknownPluginObject(f"unknown {label} '{name}' (known: {known}); is its plugin installed? "
                                      "`keel plugin list` shows what is loaded and what failed")
        return table[name]

    def connector_config_problems(self, type_name: str, config: Any) -> list[str]:
        """Every problem of a connector definition's `config` for its type, as 'place: message'."""
        from keel.connectors.types import config_problems

        return config_problems(self.connector_types, type_name, config)

    def registries(self) -> Registries:
        """Everything the loaded plugins registered, as the immutable value the engine is given."""
        if getattr(self, "_registries", None) is None:
            freeze = MappingProxyType
            self._registries = Registries(
                **{kind.attr: freeze(dict(getattr(self, kind.attr))) for kind in KINDS},
                record_events=RecordListeners(self.pm.hook.keel_record_before_write,
                                              self.pm.hook.keel_record_written),
                review_panels=self.pm.hook.keel_review_panels,
                read_grants=self.pm.hook.keel_record_read_grant,
                owners=freeze(dict(self._owners)))
        return self._registries

    def start(self, app: Any) -> None:
        """Call each plugin's keel_startup(app) once; one that raises is reported, the app still starts."""
        for plugin in self.plugins:
            for impl in self._impls("keel_startup", plugin):
                try:
                    impl.function(app=app)
                except Exception as exc:
                    self._fail(PluginFailure(plugin.name, f"keel_startup() raised {type(exc).__name__}: "
                                             f"{exc}", plugin.source, plugin.location))


def _version_of(obj: Any) -> str | None:
    import sys

    for candidate in (obj, sys.modules.get(getattr(obj, "__name__", "").split(".")[0])):
        version = getattr(candidate, "__version__", None)
        if isinstance(version, str):
            return version
    return None


def plugins_path_from(config: Mapping[str, Any]) -> Path | None:
    """KEEL_PLUGINS_PATH (config, then environment); empty means no plugins folder. Default: the
    `plugins` folder next to the apps folder (KEEL_APPS_PATH), i.e. ./plugins for the default
    ./app_definitions — the repository layout."""
    value = config.get("KEEL_PLUGINS_PATH", os.environ.get("KEEL_PLUGINS_PATH"))
    if value is not None:
        return Path(value) if str(value).strip() else None
    apps = Path(config.get("KEEL_APPS_PATH") or "app_definitions")
    return apps.resolve().parent / "plugins"
