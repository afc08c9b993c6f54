"""Keel's plugin SDK (pluggy). A plugin is a module with hook functions marked `@hookimpl`:

    from keel.plugins import hookimpl

    @hookimpl
    def keel_connector_types():
        return [MeetingNotesConnector()]

The hooks are in hookspecs.py, the shapes in types.py, discovery in discovery.py, the host that loads
and indexes everything in manager.py; docs/plugins.md is the author's guide. Importing this package
loads no plugin: `init_app(app)` and `get_host()` do.
"""
from __future__ import annotations

from keel.plugins.discovery import PluginFailure
from keel.plugins.hookspecs import hookimpl
from keel.plugins.manager import LoadedPlugin, PluginHost, UnknownPluginObject, get_host
from keel.plugins.types import ConnectorContext, ConnectorType, ItemSource

__all__ = ["ConnectorContext", "ConnectorType", "ItemSource", "LoadedPlugin", "PluginFailure", "PluginHost",
           "UnknownPluginObject", "get_host", "hookimpl", "init_app"]


def init_app(app) -> PluginHost:
    """Load the app's plugins (config KEEL_PLUGINS_PATH), put their field types in the field type
    registry and call their keel_startup(app). Failures are on `host.failures`; the app starts anyway."""
    from keel.fieldtypes import registry

    host = PluginHost.from_config(app.config)
    app.extensions["keel_plugins"] = host
    host.install_field_types(registry)
    host.start(app)
    return host
