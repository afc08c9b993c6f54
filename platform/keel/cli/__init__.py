"""The `keel` command: a thin layer over create_app, the loader, apply and the directory. Errors are
printed as messages (never a traceback) and exit non-zero."""
from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from keel.actor import Actor
from keel.errors import KeelError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def cli_actor() -> Actor:
    """Who runs a CLI command: recorded in the audit trail as `cli:<os user>`."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = "unknown"
    return Actor(user_id=None, username=f"cli:{who}", roles=frozenset(), is_admin=True)


def _app():
    from keel import create_app

    return create_app()


def _engine():
    return _app().extensions["keel"].engine


def _fail(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(1)


def _registries():
    """The registries of this process's plugins (Keel's built-ins, entry points, the plugins folder), for
    commands that need no database; configured from the environment like `create_app`."""
    from keel.config import from_environment
    from keel.plugins import PluginHost

    return PluginHost.from_config(from_environment()).registries()


def _load(path: str, registries=None):
    from keel.definitions.loader import load_app_dir

    return load_app_dir(Path(path), registries or _registries())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keel")
def cli() -> None:
    """Keel: a metadata-driven low-code platform.

    Configuration comes from KEEL_DATABASE_URL, KEEL_REDIS_URL, KEEL_APPS_PATH, KEEL_SECRET_KEY and
    KEEL_INSTANCE_PATH (see README)."""


# -- instance ---------------------------------------------------------------------------------------

@cli.command()
@click.option("--apps", "apps_path", default=None, help="Folder of app definitions (default: KEEL_APPS_PATH).")
def init(apps_path: str | None) -> None:
    """Create the database and apply every app found in the apps folder."""
    app = _app()
    for line in apply_all(app, apps_path or app.config["KEEL_APPS_PATH"]):
        click.echo(line)
    click.echo(f"instance ready: {app.config['KEEL_INSTANCE_PATH']}")


def apply_all(app, apps_path: str) -> list[str]:
    from keel.apply import apply_app

    root = Path(apps_path)
    if not root.is_dir():
        raise KeelError(f"apps folder not found: {root}")
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / "app.json").is_file()):
        runtime = app.extensions["keel"]
        result = apply_app(runtime.engine, _load(str(folder), runtime.registries), cli_actor(), note="keel init")
        state = f"version {result.version}" if result.changed else "unchanged"
        out.append(f"app {folder.name}: {state}")
    app.extensions["keel"].refresh()
    return out


def _serve(app, host: str, port: int) -> None:
    from keel.jobs.embedded import start_background_services

    # Jobs run even without KEEL_REDIS_URL: a private redis-server, or in process (logged).
    start_background_services(app)
    click.echo(f"Keel is running at http://{host}:{port}/  (Ctrl+C to stop)")
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@cli.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the web app and API (development server; use gunicorn `keel.wsgi:app` in production)."""
    _serve(_app(), host, port)


@cli.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--no-serve", is_flag=True, help="Create the demo instance and exit.")
def demo(host: str, port: int, no_serve: bool) -> None:
    """Create an instance with the Goal Agility demo data and users, then serve it."""
    from keel.demo import DEMO_PASSWORD, seed_demo

    app = _app()
    for line in apply_all(app, app.config["KEEL_APPS_PATH"]):
        click.echo(line)
    users = seed_demo(app)
    click.echo("")
    click.echo(f"Demo logins (password for all: {DEMO_PASSWORD}):")
    for username, title in users:
        click.echo(f"  {username:<14} {title}")
    click.echo("")
    click.echo(f"Dashboards: http://{host}:{port}/dash/  (the demo's: /dash/goal_agility/goals_overview)")
    click.echo("")
    if not no_serve:
        _serve(app, host, port)


# -- app definitions --------------------------------------------------------------------------------

@cli.group("app")
def app_group() -> None:
    """Validate, apply, diff, list and roll back app definitions."""


@app_group.command("validate")
@click.argument("path", type=click.Path(file_okay=False))
def app_validate(path: str) -> None:
    """Check an app folder; print every error as `file: /pointer: message`."""
    registries = _registries()
    d = _load(path, registries)
    kinds = sorted(registries.definition_kinds.values(), key=lambda k: (k.order, k.name))
    counts = [f"{len(d.entities)} entities", f"{len(d.forms)} forms",
              *(f"{len(d.definitions_of(k.name))} {k.plural}" for k in kinds)]
    click.echo(f"ok: app '{d.id}' version {d.version}: " + ", ".join(counts))
    from keel.definitions.kinds import definition_warnings

    for w in definition_warnings(d, registries):
        click.echo(f"warning: {w}")


@app_group.command("apply")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--note", default="", help="Why this version (stored with it).")
def app_apply(path: str, note: str) -> None:
    """Validate PATH, store it as a new version and sync the database schema."""
    from keel.apply import apply_app

    runtime = _app().extensions["keel"]
    d = _load(path, runtime.registries)
    result = apply_app(runtime.engine, d, cli_actor(), note=note)
    for step in result.plan.steps:
        click.echo(f"  {step.description}")
    if result.changed:
        click.echo(f"applied: app '{d.id}' is now at version {result.version}")
    else:
        click.echo(f"unchanged: app '{d.id}' already matches version {result.version}")


@app_group.command("diff")
@click.argument("path", type=click.Path(file_okay=False))
def app_diff(path: str) -> None:
    """Show what `apply` would change, without changing anything."""
    from keel.apply import diff_app

    runtime = _app().extensions["keel"]
    d = _load(path, runtime.registries)
    result = diff_app(runtime.engine, d)
    click.echo(f"app '{d.id}': current version {result.current_version or 'none'}")
    for line in result.changes:
        click.echo(f"  {line}")
    for step in result.plan.steps:
        click.echo(f"  schema: {step.description}")
    for refusal in result.plan.refusals:
        click.echo(f"  refused: {refusal}")
    if not (result.changes or result.plan.steps or result.plan.refusals):
        click.echo("  no changes")
    if result.plan.refusals:
        sys.exit(1)


@app_group.command("history")
@click.argument("app_id")
def app_history(app_id: str) -> None:
    """List the stored versions of an app."""
    from keel.storage import versions

    with _engine().connect() as conn:
        rows = versions.history(conn, app_id)
    if not rows:
        _fail(f"no versions of app '{app_id}'")
    for r in rows:
        click.echo(f"v{r['version']:<4} {r['created_at']}  {r['label']:<10} {r.get('created_by') or '-':<16} "
                   f"{r['checksum'][:12]}  {r['note']}")


@app_group.command("rollback")
@click.argument("app_id")
@click.argument("version", type=int)
def app_rollback(app_id: str, version: int) -> None:
    """Re-apply an earlier VERSION of APP as a new version."""
    from keel.apply import rollback_app

    runtime = _app().extensions["keel"]
    result = rollback_app(runtime.engine, app_id, version, cli_actor(), runtime.registries)
    if result.changed:
        click.echo(f"rolled back: app '{app_id}' is now at version {result.version} (content of v{version})")
    else:
        click.echo(f"unchanged: app '{app_id}' already matches version {version} (current: v{result.version})")


@app_group.command("export")
@click.argument("app_id")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--version", type=int, default=None, help="A stored version (default: the current one).")
def app_export(app_id: str, path: str, version: int | None) -> None:
    """Write the current version of APP back to files in PATH (what `apply` reads), so a change made on
    the admin pages or by a rollback is not undone by the next apply from an old folder."""
    from keel.apply import export_app

    runtime = _app().extensions["keel"]
    result = export_app(runtime.engine, app_id, path, runtime.registries, version)
    for rel in result.removed:
        click.echo(f"  removed {rel}")
    click.echo(f"exported: app '{app_id}' version {result.version} to {path} ({len(result.written)} files)")


# -- users ------------------------------------------------------------------------------------------

@cli.group("user")
def user_group() -> None:
    """Manage users and API tokens."""


@user_group.command("add")
@click.argument("username")
@click.option("--name", "display_name", default=None, help="Display name (default: the username).")
@click.option("--password", default=None, help="Omit to be prompted (never echoed).")
@click.option("--no-password", is_flag=True, help="API-token or SSO-only user.")
@click.option("--role", "roles", multiple=True, help="Role id; repeat for several.")
@click.option("--department", default=None, help="Department code.")
@click.option("--manager", default=None, help="Username of the direct superior.")
@click.option("--email", default=None)
@click.option("--admin", "is_admin", is_flag=True, help="Platform administrator.")
def user_add(username, display_name, password, no_password, roles, department, manager, email, is_admin):
    """Add a user to the org directory."""
    from keel.auth.directory import add_user

    if not no_password and password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _engine().begin() as conn:
        uid = add_user(conn, username, display_name or username, cli_actor(),
                       password=None if no_password else password, roles=roles, department_code=department,
                       manager_username=manager, is_admin=is_admin, email=email)
    click.echo(f"user '{username}' added (id {uid})")


@user_group.command("token")
@click.argument("username")
@click.option("--name", default="cli", show_default=True, help="A label to recognise the token by.")
def user_token(username: str, name: str) -> None:
    """Issue an API token for USERNAME (shown once; stored hashed)."""
    from keel.auth.directory import find_user
    from keel.auth.tokens import issue_token

    with _engine().begin() as conn:
        row = find_user(conn, username)
        if row is None:
            _fail(f"no user '{username}'")
        token = issue_token(conn, row.id, name=name)
    click.echo(token)


def _attach_subcommands() -> None:
    from keel.cli.api import api_group
    from keel.cli.directory import dept_group, user_passwd
    from keel.cli.jobs import jobs_group, scheduler, worker
    from keel.cli.plugins import plugin_group

    for command in (plugin_group, worker, scheduler, jobs_group, api_group, dept_group):
        cli.add_command(command)
    user_group.add_command(user_passwd)


_attach_subcommands()


def main() -> None:
    from keel.definitions.errors import DefinitionErrors
    from keel.errors import FieldErrors

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DefinitionErrors as e:
        for err in e.errors:
            click.echo(str(err), err=True)
        click.echo(f"{len(e.errors)} error(s)", err=True)
        sys.exit(1)
    except FieldErrors as e:
        _fail("; ".join(f"{k}: {' '.join(v)}" for k, v in e.rendered().items()))
    except KeelError as e:
        _fail(_message(e))
    except OSError as e:
        _fail(str(e))
    except Exception as e:  # database unreachable and the like: a message, not a traceback
        import sqlalchemy.exc

        if isinstance(e, sqlalchemy.exc.OperationalError):
            _fail(f"database error: {e.orig}")
        raise


def _message(e: KeelError) -> str:
    msgs = getattr(e, "refusals", None) or getattr(e, "messages", None)
    if msgs:
        return "\n  ".join([str(e.__class__.__doc__ or "refused").strip().splitlines()[0], *map(str, msgs)])
    return str(e) or e.__class__.__name__


if __name__ == "__main__":  # pragma: no cover
    main()
