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


def render_problems(notification_id: str, data: Mapping, ctx: CheckContext) -> list[tuple[str, str]]:
    """Each template rendered against the sample context of every workflow that sends it
    (`notify.samples`): unknown names, missing record fields, unsafe attributes and templates over
    their budget are found here, before `apply`, instead of at the final approval."""
    from keel.definitions.model import thaw
    from keel.notify.render import NotificationTemplateError, render_text
    from keel.notify.samples import sample_contexts

    out = []
    contexts = sample_contexts(notification_id, ctx)
    for part in ("subject", "body"):
        for lang, text in (thaw(data.get(part)) or {}).items():
            for sender, context in contexts:
                try:
                    render_text(text, context)
                except NotificationTemplateError as exc:
                    out.append((f"/{part}/{lang}", f"{exc.message} (rendered with the data {sender} sends)"))
                    break
    return out


def _check(d: Definition, ctx: CheckContext) -> Iterator[DefinitionError]:
    problems = notification_problems(d.data, ctx.registries.delivery_channels)
    for where, message in problems:
        yield DefinitionError(d.file, where, message)
    if not any(where.startswith(("/subject", "/body")) for where, _ in problems):
        for where, message in render_problems(d.id, d.data, ctx):
            yield DefinitionError(d.file, where, message)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="notification", folder="notifications", schema=read_schema(__file__),
                           check=_check, label="notifications", order=40)]


@hookimpl
def keel_delivery_channels():
    from keel.notify.channels import builtin_channels

    return builtin_channels()
