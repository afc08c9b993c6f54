"""Keel's plugin SDK (pluggy). A plugin is a module with hook functions marked `@hookimpl`:

    from keel.plugins import hookimpl

    @hookimpl
    def keel_connector_types():
        return [MeetingNotesConnector()]

The hooks are in keel/hooks.py, the shapes in types.py, discovery in discovery.py, the host that loads
and indexes everything in manager.py; docs/plugins.md is the author's guide. Importing this package
loads no plugin: the composition root (`create_app`, the CLI, a test) builds a `PluginHost` and hands
its `registries()` down.
"""
from __future__ import annotations

from functools import cache

from keel.hooks import hookimpl
from keel.plugins.discovery import PluginFailure
from keel.plugins.manager import LoadedPlugin, PluginHost, UnknownPluginObject
from keel.plugins.types import CheckContext, ConnectorContext, ConnectorType, DefinitionKind, ItemSource
from keel.registries import Registries

__all__ = ["CheckContext", "ConnectorContext", "ConnectorType", "DefinitionKind", "ItemSource", "LoadedPlugin",
           "PluginFailure", "PluginHost", "Registries", "UnknownPluginObject", "builtin_registries", "hookimpl",
           "init_app"]


def init_app(app) -> PluginHost:
    """Load the app's plugins (config KEEL_PLUGINS_PATH) and call their keel_startup(app). Failures are on
    `host.failures`; the app starts anyway."""
    host = PluginHost.from_config(app.config)
    app.extensions["keel_plugins"] = host
    host.start(app)
    return host


@cache
def builtin_registries() -> Registries:
    """Keel's own registries and nothing else (no entry points, no plugins folder): what a tool or a
    test that wants exactly Keel's built-ins loads definitions with."""
    return PluginHost.load(None, entry_points=False).registries()
