"""What dashboards bring to Keel, through the same hooks as any plugin: the `dashboard` definition kind, the
built-in widget types (`keel_dashboard_widgets`, as a plugin adds its own), and the Dash pages under /dash/
(`keel_startup`)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from keel.definitions.errors import DefinitionError
from keel.definitions.kinds import DefinitionKind
from keel.definitions.model import thaw
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl

COMMON_KEYS = frozenset({"id", "type", "title", "width", "roles"})


@lru_cache(maxsize=256)
def _validator(widget_type: Any) -> Draft202012Validator:
    return Draft202012Validator(widget_type.params_schema)


def widget_problems(widget: Mapping[str, Any], widget_type: Any, ctx) -> Iterator[tuple[str, str]]:
    """(pointer inside the widget, message): the widget's own keys against its type's params_schema,
    then the type's `check` (fields, rules, settings)."""
    params = {k: thaw(v) for k, v in widget.items() if k not in COMMON_KEYS}
    schema_errors = False
    for err in sorted(_validator(widget_type).iter_errors(params), key=lambda e: list(e.absolute_path)):
        schema_errors = True
        where = "".join(f"/{p}" for p in err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            yield where, f"unknown key(s) {', '.join(map(repr, extra))} for a '{widget_type.name}' widget " \
                         f"(allowed: {', '.join(sorted(widget_type.params_schema.get('properties', {})))})"
        else:
            yield where, err.message
    check = getattr(widget_type, "check", None)
    if check is not None and not schema_errors:
        for item in check(widget, ctx) or ():
            yield item if isinstance(item, tuple) else ("", str(item))


def _check(d, ctx) -> Iterator[DefinitionError]:
    yield from ctx.role_errors(d.file, "/roles", d.data.get("roles"))
    types = ctx.registries.dashboard_widgets
    seen: set[str] = set()
    for i, w in enumerate(d.data.get("widgets") or ()):
        at = f"/widgets/{i}"
        if w["id"] in seen:
            yield DefinitionError(d.file, at + "/id", f"widget id '{w['id']}' is used twice")
        seen.add(w["id"])
        yield from ctx.role_errors(d.file, at + "/roles", w.get("roles"))
        wt = types.get(w["type"])
        if wt is None:
            yield DefinitionError(d.file, at + "/type", f"unknown widget type '{w['type']}' (known: "
                                  f"{', '.join(sorted(types))})")
            continue
        for where, msg in widget_problems(w, wt, ctx):
            yield DefinitionError(d.file, at + where, msg)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="dashboard", folder="dashboards", schema=read_schema(__file__), check=_check,
                           label="dashboards", order=50)]


@hookimpl
def keel_dashboard_widgets():
    from keel.dashboards.widgets import BUILTIN

    return list(BUILTIN)


@hookimpl
def keel_startup(app):
    from keel.dashboards import pages

    pages.init_app(app)
