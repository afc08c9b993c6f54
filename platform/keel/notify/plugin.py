"""What notifications bring to Keel, through the same hooks as any plugin: the `notification` definition
kind (notifications/<id>.json) and the built-in delivery channels."""
from __future__ import annotations

from collections.abc import Iterator, Mapping

from keel.definitions.errors import DefinitionError
from keel.definitions.kinds import CheckContext, DefinitionKind
from keel.definitions.model import Definition
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl


def notification_problems(data: Mapping, channels: Mapping) -> list[tuple[str, str]]:
    """What the JSON Schema cannot see in a notification definition, as (JSON pointer, message): a
    template that does not compile or reaches for `_` names, a channel no installed type accepts."""
    from keel.notify.delivery import channel_config_problem
    from keel.notify.render import template_problem

    out = []
    for part in ("subject", "body"):
        for lang, text in (data.get(part) or {}).items():
            problem = template_problem(text) if isinstance(text, str) else None
            if problem:
                out.append((f"/{part}/{lang}", problem))
    for n, entry in enumerate(data.get("channels") or ()):
        if entry == "inbox":
            continue
        problem = channel_config_problem({"type": entry} if isinstance(entry, str) else entry, channels)
        if problem:
            out.append((f"/channels/{n}", problem))
    return out


def _check(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    for where, message in notification_problems(d.data, ctx.registries.delivery_channels):
        yield DefinitionError(d.file, where, message)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="notification", folder="notifications", schema=read_schema(__file__),
                           check=_check, label="notifications", order=40)]


@hookimpl
def keel_delivery_channels():
    from keel.notify.channels import builtin_channels

    return builtin_channels()
