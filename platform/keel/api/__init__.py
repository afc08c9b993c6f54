"""REST API under /api/v1 and the OpenAPI 3.1 document generated from the definitions.

Every route is generic over the apps the runtime holds: an app or entity id in the URL is looked up
in the runtime (404 JSON for unknown ones), so no route is ever written per entity. Authentication is
`keel.auth`'s deny-by-default hook: bearer tokens only under /api/, so no CSRF applies here."""
from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def init_app(app: Flask) -> None:
    # Importing the modules attaches their routes to `bp`; the blueprint object is module-level so
    # every app built by `create_app` (one per test) registers the same, complete set of routes.
    from keel.api import (  # noqa: F401
        audit,
        dashboards,
        directory,
        errors,
        forms,
        inbox,
        jobs,
        openapi,
        records,
        workflows,
    )

    errors.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(jobs.bp)
