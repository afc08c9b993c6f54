"""`keel dept add/set-head/move/list` and `keel user passwd`: the org directory from the command line,
through the same `keel.auth.directory` functions as the API and the admin pages (each write audited as
`cli:<os user>`)."""
from __future__ import annotations

import click


def _engine():
    from keel.cli import _engine as engine

    return engine()


def _actor():
    from keel.cli import cli_actor

    return cli_actor()


@click.group("dept")
def dept_group() -> None:
    """Manage departments: create, set the head, move people in."""


@dept_group.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--name-en", default=None, help="English name.")
@click.option("--parent", default=None, help="Code of the parent department.")
@click.option("--head", default=None, help="Username of the head (or set it later with set-head).")
def dept_add(code: str, name: str, name_en: str | None, parent: str | None, head: str | None) -> None:
    """Create department CODE called NAME."""
    from keel.auth.directory import add_department

    with _engine().begin() as conn:
        dept_id = add_department(conn, code, name, _actor(), parent_code=parent, head_username=head,
                                 name_en=name_en)
    click.echo(f"department '{code}' added (id {dept_id})")


@dept_group.command("set-head")
@click.argument("code")
@click.argument("username", required=False)
@click.option("--none", "clear", is_flag=True, help="Leave the department without a head.")
def dept_set_head(code: str, username: str | None, clear: bool) -> None:
    """Make USERNAME the head of department CODE (approver rule `department`/`head`)."""
    from keel.auth.directory import set_department_head

    if (username is None) == (not clear):
        raise click.UsageError("give a USERNAME, or --none to clear the head")
    with _engine().begin() as conn:
        set_department_head(conn, code, username, _actor())
    click.echo(f"department '{code}': head {username or '(none)'}")


@dept_group.command("move")
@click.argument("usernames", nargs=-1, required=True)
@click.option("--to", "code", required=True, help="Code of the department they move to.")
@click.option("--manager", default=None,
              help="Username of their new direct superior (default: none, so the department's head).")
def dept_move(usernames: tuple[str, ...], code: str, manager: str | None) -> None:
    """Move USERNAMES into the department --to (all or nothing)."""
    from keel.auth.directory import move_users

    with _engine().begin() as conn:
        moved = move_users(conn, list(usernames), code, _actor(), manager_username=manager)
    click.echo(f"moved {len(moved)} user(s) to '{code}'")


@dept_group.command("list")
def dept_list() -> None:
    """Print the department tree with heads and member counts."""
    from keel.auth.directory import list_departments

    with _engine().connect() as conn:
        rows = list_departments(conn)
    if not rows:
        click.echo("no departments (add one with `keel dept add CODE NAME`)")
    for d in rows:
        head = d["head"] or "-"
        click.echo(f"{'  ' * d['depth']}{d['code']:<20} {d['name']}  head: {head}  members: {d['members']}")


@click.command("passwd")
@click.argument("username")
@click.option("--password", default=None, help="Omit to be prompted (never echoed).")
def user_passwd(username: str, password: str | None) -> None:
    """Set a new password for USERNAME (synced users too); their page sessions end."""
    from keel.auth.directory import find_user, set_password

    engine = _engine()
    with engine.connect() as conn:
        row = find_user(conn, username)
    if row is None:
        raise click.ClickException(f"no user '{username}'")
    if password is None:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with engine.begin() as conn:
        set_password(conn, row.id, password, _actor())
    click.echo(f"password of '{row.username}' set")
