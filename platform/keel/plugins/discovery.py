"""Finding plugins: Keel's built-ins, the `keel.plugins` entry-point group, and the plugins folder.

Discovery only lists candidates; importing happens when the host calls `Candidate.load()`, so an import
error belongs to one named plugin and never stops the others.

The plugins folder (KEEL_PLUGINS_PATH) holds, side by side:
- `name.py`: a one-file plugin, module `name`;
- `name/__init__.py`: a package plugin, package `name`;
- `name/pyproject.toml` with `[project.entry-points."keel.plugins"]`: a project as `keel plugin new`
  makes it, its package in `name/src/` or `name/` itself; the entry point names the plugin module, the
  same line pip uses once the project is installed.
They are imported by path (nothing is pip-installed and sys.path is not changed): the top-level package
is loaded from its file and put in sys.modules under its own name, so its absolute imports work.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from keel.errors import KeelError

ENTRY_POINT_GROUP = "keel.plugins"
BUILTIN = "builtin"
ENTRY_POINT = "entry point"
FOLDER = "folder"

# Keel's own subsystems, each registering what it brings through the hooks exactly like a plugin, first
# and in this order. This list is the composition of the engine: the packages below never name each other.
BUILTIN_PLUGINS = (("keel.fieldtypes", "keel.fieldtypes.plugin"), ("keel.jobs", "keel.jobs.plugin"),
                   ("keel.connectors", "keel.connectors.plugin"), ("keel.notify", "keel.notify.plugin"),
                   ("keel.workflow", "keel.workflow.plugin"), ("keel.dashboards", "keel.dashboards.plugin"),
                   ("keel.web", "keel.web.plugin"))


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used (or a part of it that was refused), with the reason."""

    name: str
    error: str
    source: str = ""
    location: str = ""

    def __str__(self) -> str:
        where = f" ({self.source}: {self.location})" if self.location else ""
        return f"plugin '{self.name}'{where}: {self.error}"


class PluginImportError(KeelError):
    pass


@dataclass(frozen=True)
class Candidate:
    """A plugin found but not yet imported. `package` is its top-level module name (to tell when a
    folder copy and an installed copy are the same plugin)."""

    name: str
    source: str
    location: str
    version: str | None
    package: str
    load: Callable[[], Any]


def builtin_candidates() -> list[Candidate]:
    out = []
    for name, module in BUILTIN_PLUGINS:
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is missing
            present = False
        except Exception:  # the parent package is there but fails: loading it reports the error
            present = True
        if present:
            out.append(Candidate(name, BUILTIN, module, _keel_version(), "keel",
                                 lambda m=module: importlib.import_module(m)))
    return out


def _keel_version() -> str | None:
    try:
        return importlib.metadata.version("keel")
    except importlib.metadata.PackageNotFoundError:
        return None


def entry_point_candidates(group: str = ENTRY_POINT_GROUP) -> list[Candidate]:
    out = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        version = ep.dist.version if ep.dist is not None else None
        out.append(Candidate(ep.name, ENTRY_POINT, ep.value, version, ep.module.split(".")[0], ep.load))
    return out


def folder_candidates(root: Path) -> tuple[list[Candidate], list[PluginFailure]]:
    """The plugins in `root`, in name order, and the entries that look like a plugin but are not one."""
    candidates: list[Candidate] = []
    failures: list[PluginFailure] = []
    if not root.is_dir():
        return candidates, failures
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file():
            if entry.suffix == ".py":
                candidates.append(_module_candidate(entry.stem, entry.parent, entry.stem, None, str(entry)))
        elif (entry / "pyproject.toml").is_file():
            found, problem = _project_candidates(entry)
            candidates += found
            if problem:
                failures.append(PluginFailure(entry.name, problem, FOLDER, str(entry)))
        elif (entry / "__init__.py").is_file():
            candidates.append(_module_candidate(entry.name, root, entry.name, None, str(entry)))
        elif any(entry.glob("*.py")) or any(entry.glob("*/__init__.py")):
            failures.append(PluginFailure(
                entry.name, "Python code but no way to tell which module is the plugin: add a pyproject.toml "
                "with [project.entry-points.\"keel.plugins\"] (see `keel plugin new`) or make the folder a "
                "package (__init__.py)", FOLDER, str(entry)))
    return candidates, failures


def _project_candidates(folder: Path) -> tuple[list[Candidate], str | None]:
    try:
        project = tomllib.loads((folder / "pyproject.toml").read_text("utf-8")).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        return [], f"pyproject.toml cannot be read: {exc}"
    points = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    if not isinstance(points, dict) or not points:
        return [], (f"pyproject.toml declares no [project.entry-points.\"{ENTRY_POINT_GROUP}\"] entry; "
                    "add one naming the plugin module, e.g. my_plugin = \"keel_my_plugin.plugin\"")
    version = project.get("version")
    out = []
    for name, value in sorted(points.items()):
        module, _, attr = str(value).partition(":")
        top = module.strip().split(".")[0]
        base = folder / "src" if (folder / "src" / top).exists() or (folder / "src" / f"{top}.py").exists() \
            else folder
        out.append(_module_candidate(name, base, module.strip(), attr.strip() or None, str(folder),
                                     version=str(version) if version else None))
    return out, None


def _module_candidate(name: str, base: Path, module: str, attr: str | None, location: str,
                      version: str | None = None) -> Candidate:
    return Candidate(name, FOLDER, location, version, module.split(".")[0],
                     lambda: import_by_path(base, module, attr))


# -- importing by path ----------------------------------------------------------------------------------

def import_by_path(base: Path, module: str, attr: str | None = None) -> Any:
    """Import `module` whose top-level package or module lives directly in `base`. A name already
    imported or importable from somewhere else is refused: loading ours would shadow it."""
    top = module.split(".")[0]
    base = base.resolve()
    loaded_here = False
    existing = sys.modules.get(top)
    if existing is not None:
        if not _inside(existing, base):
            raise PluginImportError(f"the module name '{top}' is already taken by {_where(existing)}; "
                                    "rename the plugin's package")
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin in (None, "namespace"):
            spec = None  # a bare folder of that name on sys.path (e.g. the CWD): ours is a real package
        if spec is not None and not _origin_inside(spec, base):
            raise PluginImportError(f"the module name '{top}' is already taken by "
                                    f"{spec.origin or 'an installed package'}; rename the plugin's package")
        if spec is None:
            _load_top(top, base)
            loaded_here = True
    try:
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj
    except BaseException:
        if loaded_here:
            forget(top)
        raise


def _load_top(top: str, base: Path) -> ModuleType:
    init = base / top / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(top, init, submodule_search_locations=[str(base / top)])
    elif (base / f"{top}.py").is_file():
        spec = importlib.util.spec_from_file_location(top, base / f"{top}.py")
    else:
        raise PluginImportError(f"no package or module '{top}' in {base}")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[top] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        forget(top)
        raise
    return mod


def forget(top: str) -> None:
    """Drop a package and its submodules from sys.modules (after a failed import, or in tests)."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _inside(mod: ModuleType, base: Path) -> bool:
    paths = list(getattr(mod, "__path__", []) or []) or [getattr(mod, "__file__", None)]
    return any(p and Path(p).resolve().is_relative_to(base) for p in paths)


def _origin_inside(spec: Any, base: Path) -> bool:
    paths = list(spec.submodule_search_locations or []) or [spec.origin]
    return any(p and p not in ("built-in", "frozen") and Path(p).resolve().is_relative_to(base)
               for p in paths)


def _where(mod: ModuleType) -> str:
    return getattr(mod, "__file__", None) or "a built-in module"
