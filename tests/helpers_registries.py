"""What tests load definitions with: Keel's built-ins and the repository's plugins folder (the HR plugin),
as `keel` itself finds them from the repository. Built once per test session."""
from __future__ import annotations

from pathlib import Path

from keel.plugins import PluginHost

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
REGISTRIES = PluginHost.load(PLUGINS, entry_points=False).registries()


def typed(entity):
    """An EntityDef built in code, with each field's type resolved as the loader resolves it."""
    from dataclasses import replace

    def field(f):
        return replace(f, ftype=REGISTRIES.field_types[f.type], columns=tuple(field(c) for c in f.columns))

    return replace(entity, fields=tuple(field(f) for f in entity.fields))
