"""Keel: a metadata-driven low-code platform. Importing this package opens no database and starts
no thread; `create_app` builds everything from configuration."""
from __future__ import annotations

__version__ = "0.1.0"


def create_app(config: dict | None = None):
    from keel.app import create_app as _create_app

    return _create_app(config)


__all__ = ["create_app", "__version__"]
