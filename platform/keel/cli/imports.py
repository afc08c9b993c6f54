"""`keel import APP ENTITY FILE [--preview] --user USERNAME`: a spreadsheet into an entity
(keel.connectors.imports), attributed to an administrator's account."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("import")
@click.argument("app_id")
@click.argument("entity_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--user", "username", required=True, help="The administrator the records are attributed to.")
@click.option("--preview", is_flag=True, help="Check every row and report, writing nothing.")
@click.option("--sheet", default=None, help="The sheet of an .xlsx file (default: the first).")
def import_command(app_id: str, entity_id: str, file: str, username: str, preview: bool, sheet: str | None) -> None:
    """Import FILE (.xlsx or .csv) as new ENTITY_ID records of APP_ID; all rows or none."""
    from keel import create_app
    from keel.auth.directory import find_user, get_actor
    from keel.connectors.imports import import_records

    app = create_app()
    runtime = app.extensions["keel"]
    with runtime.engine.connect() as conn:
        row = find_user(conn, username)
        actor = get_actor(conn, row.id) if row is not None else None
    if actor is None:
        click.echo(f"error: no user {username}", err=True)
        sys.exit(1)
    with app.test_request_context():
        result = import_records(runtime.engine, runtime.get(app_id), entity_id, Path(file).name,
                                Path(file).read_bytes(), actor, preview=preview, sheet=sheet)
    click.echo(json.dumps(result.as_dict(), ensure_ascii=False, indent=1, default=str))
    if result.errors:
        sys.exit(1)
