"""`keel plugin ...`: a thin layer over scaffold.py and the plugin host. The lead attaches the group to
the `keel` command with `cli.add_command(plugin_group)`."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from keel.config import from_environment
from keel.plugins.manager import KINDS, PluginHost, plugins_path_from


def _default_folder() -> Path:
    from keel.config import from_environment

    return plugins_path_from(from_environment()) or Path("plugins")


@click.group("plugin")
def plugin_group() -> None:
    """Create plugins and see which ones are loaded."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--path", "path", default=None, type=click.Path(file_okay=False),
              help="Folder to create the plugin in (default: the plugins folder, KEEL_PLUGINS_PATH or "
                   "./plugins).")
def plugin_new(name: str, path: str | None) -> None:
    """Create a working, tested plugin project NAME (a lower-case Python identifier)."""
    from keel.plugins.scaffold import PluginNameError, create_plugin, package_name

    try:
        target = create_plugin(name, Path(path) if path else _default_folder())
    except (PluginNameError, OSError) as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(1)
    click.echo(f"created plugin '{name}' in {target}")
    click.echo(f"  hooks:  {target / 'src' / package_name(name) / 'plugin.py'}")
    click.echo(f"  tests:  cd {target} && python -m pytest")
    click.echo("  check:  keel plugin list")


@plugin_group.command("list")
@click.option("--path", "path", default=None, type=click.Path(file_okay=False),
              help="List this plugins folder instead of the configured one.")
def plugin_list(path: str | None) -> None:
    """Show the loaded plugins (name, version, source, what they register) and the failed ones.
    Exits 1 when a plugin failed, so a deployment check can use it."""
    host = PluginHost.load(Path(path)) if path else PluginHost.from_config(from_environment())
    labels = {k.label: k.attr.replace("_", " ") for k in KINDS}
    width = max((len(p.name) for p in host.plugins), default=4)
    folder = host.plugins_path
    missing = folder is not None and not folder.is_dir()
    click.echo(f"plugins folder: {folder or '(none)'}{' (not found)' if missing else ''}")
    for p in host.plugins:
        click.echo(f"{p.name:<{width}}  {p.version or '-':<8}  {p.source:<11}  {p.location}")
        for label, names in p.registers.items():
            click.echo(f"{'':<{width}}    {labels.get(label, label)}: {', '.join(names)}")
    for note in host.skipped:
        click.echo(f"skipped: {note}")
    if host.failures:
        click.echo(click.style(f"{len(host.failures)} failure(s):", fg="red", bold=True))
        for failure in host.failures:
            click.echo(f"  {failure}")
        sys.exit(1)
