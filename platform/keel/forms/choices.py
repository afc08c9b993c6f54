"""Options of link and user selects. They depend on who is looking (a link lists only the target records
the reader may read), so they are filled per form instance, not memoised with the class."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.forms.build import MAX_CHOICES, form_field, set_choices
from keel.storage.system import users


def _record_label(target, item: Mapping[str, Any]) -> str:
    value = item.get(target.title_field) if target.title_field else None
    return f"{value} (#{item['id']})" if value not in (None, "") else f"#{item['id']}"


def reference_choices(conn: sa.Connection, built, form, who) -> dict[str, list[tuple[str, str]]]:
    """field id -> [(value, label)] for every link and user field of a form instance."""
    from keel.storage import query

    out: dict[str, list[tuple[str, str]]] = {}
    people: list[tuple[str, str]] | None = None
    for fid, spec in form.keel_fields.items():
        if spec.target is None:
            continue
        if spec.target == "user":
            if people is None:
                from keel.formats import pinyin_of

                # by the pinyin of the name, as Chinese readers look names up (the type-ahead, keel.web.pickers,
                # finds anyone past the cap)
                rows = sorted(conn.execute(sa.select(users.c.id, users.c.display_name, users.c.username)
                                           .where(users.c.active.is_(True))).all(),
                              key=lambda r: (pinyin_of(r.display_name or r.username)[0], r.id))[:MAX_CHOICES]
                people = [(str(r.id), f"{r.display_name} ({r.username})") for r in rows]
            out[fid] = people
            continue
        target = built.entity(spec.target)
        page = query.list_records(conn, built, target.id, who, sort=["id"], per_page=query.MAX_PER_PAGE)
        out[fid] = [(str(item["id"]), _record_label(target, item)) for item in page.items]
    return out


def fill_choices(conn: sa.Connection, built, form, who, current: Mapping[str, Any] | None = None) -> None:
    """Set the options of a form instance's link and user selects. A value the record already has stays
    selectable even when it is not listed (past the cap, or no longer readable), so saving an edit
    never silently clears a reference."""
    form.keel_app_id = built.id  # pages add a type-ahead over all records (keel.web.pickers) to these selects
    found = reference_choices(conn, built, form, who)
    for fid, opts in found.items():
        value = (current or {}).get(fid)
        if isinstance(value, Mapping):
            value = value.get("id")
        if value is not None and str(value) not in {v for v, _ in opts}:
            opts = [(str(value), f"#{value}")] + opts
        found[fid] = opts
    set_choices(form, found)
    for fid in found:
        field = form_field(form, fid)
        if field is not None and field.data is not None:
            field.data = str(field.data)
