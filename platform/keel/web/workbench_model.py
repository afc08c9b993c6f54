"""What a workbench section is and what it shows: the shapes a plugin uses to add a section to /workbench
through the `keel_workbench_sections` hook (the engine's approvals, changed items and inbox use them too).

A section renders to a `SectionView` of `Card`s; the page draws every section the same way (a board of
cards with progress bars, status colours, yellow for a changed record and its acknowledge button), so a
plugin writes no HTML.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

COLOURS = ("red", "amber", "green", "blue", "grey")
AUTO = "auto"              # on every user's workbench
DEFINITION = "definition"  # where an app's workbench/*.json places it by name


@dataclass(frozen=True)
class Card:
    """One thing on the board. `progress`: 0..100 (drawn capped at 100; `progress_text` says the real
    figure); `highlight`: why it is yellow (a changed record), with `ack` naming the record to
    acknowledge ({"app", "entity", "record_id"})."""

    title: str
    href: str | None = None
    subtitle: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    progress: float | None = None
    progress_text: str | None = None
    colour: str = "blue"
    badge: str | None = None
    due: str | None = None
    overdue: bool = False
    highlight: str | None = None
    ack: Mapping[str, Any] | None = None
    key: tuple[str, str, int] | None = None  # (app, entity, record id) when the card is a record
    trail: tuple[tuple[str, str], ...] = ()  # (title, href) of the parents, top down (a goal's chain)


@dataclass(frozen=True)
class SectionView:
    title: str
    cards: tuple[Card, ...] = ()
    count: int | None = None          # the total when the cards are only the first few
    more_href: str | None = None
    empty_text: str | None = None     # shown when there are no cards; None hides an empty section
    kind: str = "cards"               # "cards" or "list" (compact rows: messages, approvals)
    ack_all: Mapping[str, Any] | None = None  # {"app": ...}: an "acknowledge all" button


@dataclass(frozen=True)
class WorkbenchContext:
    """What a section's `render` gets. `app`: the BuiltApp whose workbench file placed the section (None
    for an auto section); `definition`: that file's JSON (None for auto); `params`: its "params"."""

    conn: Any
    actor: Any
    lang: str
    runtime: Any
    app: Any = None
    definition: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.app.definition.settings if self.app is not None else {}


@dataclass(frozen=True)
class WorkbenchSection:
    """A kind of section. `render(ctx)` returns a SectionView, or None to show nothing for this user."""

    name: str
    render: Callable[[WorkbenchContext], SectionView | None]
    placement: str = DEFINITION
    order: int = 100


def mark_text(entity, mark, lang: str) -> str:
    """Why a record is yellow, in the reader's language: the changed fields' labels when the mark names
    them (the write path's marks), else the reason its maker wrote (a cascade's own sentence)."""
    from keel.i18n import translate

    detail = mark.get("detail")
    fields = detail.get("fields") if isinstance(detail, Mapping) else None
    known = [entity.field(f) for f in fields or ()] if entity is not None else []
    if known and all(f is not None for f in known):
        sep = ", " if lang == "en" else "、"
        return translate("Changed: %(fields)s", fields=sep.join(f.label.get(lang) for f in known))
    return mark.get("reason") or translate("Changed since you last looked")
