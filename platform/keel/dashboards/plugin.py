"""What dashboards bring to Keel, through the same hooks as any plugin: the `dashboard` definition kind."""
from __future__ import annotations

from keel.definitions.kinds import DefinitionKind
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl


def _check(d, ctx):
    return ctx.role_errors(d.file, "/roles", d.data.get("roles"))


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="dashboard", folder="dashboards", schema=read_schema(__file__), check=_check,
                           label="dashboards", order=50)]
