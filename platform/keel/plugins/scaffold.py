"""`keel plugin new NAME`: a working, tested plugin project made from the files in keel/plugin_template.
Template files end in `.tmpl` (so no tool mistakes them for code) and use `${plugin}`, `${package}`,
`${dist}` and `${secret}` (the environment variable of the example's token); a folder named `__package__` becomes the package. The project is written to a temporary
folder first and moved into place at the end, so a failure leaves nothing half-made."""
from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from keel.errors import KeelError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "plugin_template"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


class PluginNameError(KeelError):
    pass


def package_name(plugin: str) -> str:
    """The Python package of a plugin: `keel_<name>`, or the name itself if it starts with keel_."""
    return plugin if plugin.startswith("keel_") else f"keel_{plugin}"


def check_plugin_name(name: str) -> None:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise PluginNameError(f"plugin name {name!r} must be a lower-case Python identifier of at most 50 "
                              "characters: a letter, then letters, digits or _ (e.g. meeting_notes)")
    if name == "keel":
        raise PluginNameError("plugin name 'keel' is taken by Keel's built-ins")


def create_plugin(name: str, root: str | os.PathLike[str]) -> Path:
    """Create the plugin project `root/name`; returns its folder. Refuses a bad name or an existing folder."""
    check_plugin_name(name)
    root = Path(root)
    target = root / name
    if target.exists():
        raise PluginNameError(f"{target} already exists; choose another name or remove it")
    values = {"plugin": name, "package": package_name(name), "dist": package_name(name).replace("_", "-"),
              "secret": f"{name.upper()}_TOKEN"}
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the project is an ordinary folder
    try:
        for source in sorted(TEMPLATE_DIR.rglob("*.tmpl")):
            rel = source.relative_to(TEMPLATE_DIR).with_suffix("")
            parts = (values["package"] if part == "__package__" else part for part in rel.parts)
            dest = staging / Path(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(Template(source.read_text("utf-8")).substitute(values), "utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
