"""What connectors bring to Keel, through the same hooks as any plugin: the `connector` definition kind
(connectors/<id>.json, its config checked against the installed connector types), the built-in connector
types `http_json` and `file`, and the generic `connector_sync` job type."""
from __future__ import annotations

from keel.definitions.kinds import DefinitionKind
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl


def _check(d, ctx):
    from keel.connectors.sync import connector_definition_errors

    return connector_definition_errors(ctx, d.id)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="connector", folder="connectors", schema=read_schema(__file__), check=_check,
                           label="connectors", order=20)]


@hookimpl
def keel_connector_types():
    from keel.connectors.builtin_types import FileConnector, HttpJsonConnector

    return [HttpJsonConnector(), FileConnector()]


@hookimpl
def keel_job_types():
    from keel.connectors.sync import ConnectorSync

    return [ConnectorSync()]
