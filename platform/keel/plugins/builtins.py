"""Keel's own field types, connector types and the `connector_sync` job type, registered through the
same hooks as any plugin's (the host registers this module first, as the plugin named `keel`). Read it
as the smallest example plugin."""
from __future__ import annotations

from keel.plugins import hookimpl


@hookimpl
def keel_field_types():
    from keel.fieldtypes.builtin import BUILTIN_TYPES

    return [cls() for cls in BUILTIN_TYPES]


@hookimpl
def keel_connector_types():
    from keel.plugins.connector_types import FileConnector, HttpJsonConnector

    return [HttpJsonConnector(), FileConnector()]


@hookimpl
def keel_job_types():
    from keel.connectors.sync import ConnectorSync

    return [ConnectorSync()]
