"""`keel api routes`: the route table of docs/api.md, generated from the registered /api/v1 routes and
their docstrings (the same source as the OpenAPI document), printed or written into the file."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click


def routes_markdown() -> str:
    """The generated Markdown for a throwaway instance: routes do not depend on data or settings, so
    nothing is read from or written to the configured database."""
    from keel import create_app
    from keel.api import routedoc
    from keel.api.openapi import route_paths

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"KEEL_INSTANCE_PATH": tmp, "KEEL_DATABASE_URL": f"sqlite:///{tmp}/routes.db",
                          "KEEL_ENV": "development", "KEEL_REDIS_URL": None})
        try:
            missing = routedoc.undocumented(app)
            if missing:
                raise click.ClickException("routes without a docstring (see docs/api.md, 'Documenting a route'):\n  "
                                           + "\n  ".join(missing))
            return routedoc.markdown(route_paths(app))
        finally:
            app.extensions["keel"].engine.dispose()


@click.group("api")
def api_group() -> None:
    """The REST API's own documentation."""


@api_group.command("routes")
@click.option("--update", "target", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rewrite the generated section of this Markdown file (docs/api.md) instead of printing.")
@click.option("--check", is_flag=True, help="With --update: only check the file is current (exit 1 if not).")
def api_routes(target: Path | None, check: bool) -> None:
    """Print every /api/v1 route as Markdown tables, or write them into docs/api.md."""
    from keel.api import routedoc

    generated = routes_markdown()
    if target is None:
        click.echo(generated, nl=False)
        return
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    new = routedoc.update_markdown(text, generated)
    if check:
        if new != text:
            click.echo(f"{target} is out of date: run `keel api routes --update {target}`", err=True)
            sys.exit(1)
        click.echo(f"{target} is current")
        return
    if new != text:
        target.write_text(new, encoding="utf-8")
        click.echo(f"updated {target}")
    else:
        click.echo(f"{target} is current")
