"""The server-rendered pages: workbench, generated forms, record lists and pages, the admin definition
editor, and the error pages. Templates live in web/templates, CSS and the one small script in
web/static (a strict Content-Security-Policy forbids inline scripts)."""
from __future__ import annotations

from pathlib import Path

from flask import Flask

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def _public(view):
    try:
        from keel.auth import public
    except ImportError:  # auth not set up (unit tests of a part): mark it the way auth reads it
        view.keel_public = True
        return view
    return public(view)


def _serve_static(app: Flask) -> None:
    """Flask registers /static at construction (reading `static_folder` per request) whenever it has a
    static folder setting; add the route only if the app was built without one."""
    app.static_folder = str(STATIC)
    if "static" in app.view_functions:
        return

    def static(filename: str):
        return app.send_static_file(filename)

    # CSS and the script are needed on the login page too, before anyone is signed in.
    app.add_url_rule("/static/<path:filename>", endpoint="static", view_func=_public(static))


def init_app(app: Flask) -> None:
    # Flask("keel") would look for keel/templates; ours are under keel/web. The loader is cached
    # on first use, so drop it in case something rendered before us.
    app.template_folder = str(TEMPLATES)
    app.__dict__.pop("jinja_loader", None)
    _serve_static(app)

    from keel.web import (  # noqa: F401 - routes
        admin_editor,
        admin_pages,
        context,
        forms_pages,
        records_pages,
        workbench,
    )
    from keel.web.pages import bp, register_error_pages

    app.register_blueprint(bp)
    from keel.web import admin_org, jobs_pages, workflow_pages

    app.register_blueprint(workflow_pages.bp)
    app.register_blueprint(jobs_pages.bp)
    app.register_blueprint(admin_org.bp)
    from keel.web import pickers

    app.register_blueprint(pickers.bp)
    from keel.web import language

    app.register_blueprint(language.bp)
    app.jinja_env.globals["picker_url"] = pickers.picker_url
    from keel import formats

    # One formatting module for every page (and for Dash, exports): money, counts, percentages, units,
    # and stored (UTC) times in the one display zone (KEEL_TIMEZONE, default the working calendar's).
    for name, fn in formats.jinja_filters().items():
        app.add_template_filter(fn, name)
    app.jinja_env.globals["zone_label"] = formats.zone_label
    context.init_app(app)
    from keel.web import inbox_pages

    inbox_pages.init_app(app)  # after context: its unread count replaces the header's default
    register_error_pages(app)
