"""Review panels: what plugins show an approver beside a task (`keel_review_panels`, keel.hooks), e.g.
"current → proposed" per dimension and an impact preview, normalised to one shape in the reader's
language:

    {"title": str, "rows": [{"label": str, "old": value, "new": value, "unit": str | None}], "note": str | None}

A plugin whose panel fails does not take the page down: its failure is logged and shown as a panel
saying it could not be built."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor

log = logging.getLogger("keel.workflow")
MAX_ROWS = 200


def _text(value: Any, lang: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return str(value.get(lang) or value.get("zh") or value.get("en") or "")
    return str(value)


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def normalise(panel: Any, lang: str) -> dict[str, Any] | None:
    if not isinstance(panel, Mapping):
        return None
    rows = []
    for row in list(panel.get("rows") or ())[:MAX_ROWS]:
        if isinstance(row, Mapping):
            rows.append({"label": _text(row.get("label"), lang) or "", "old": _value(row.get("old")),
                         "new": _value(row.get("new")), "unit": _text(row.get("unit"), lang)})
    return {"title": _text(panel.get("title"), lang) or "", "rows": rows, "note": _text(panel.get("note"), lang)}


def review_panels(conn: sa.Connection, built, instance: Mapping[str, Any], task: Mapping[str, Any], actor: Actor,
                  lang: str) -> list[dict[str, Any]]:
    """Every plugin's panels for one task, in plugin order."""
    hook = getattr(built.registries, "review_panels", None)
    if hook is None:
        return []
    entity = instance["entity"]
    table = built.table(entity)
    row = conn.execute(sa.select(table).where(table.c.id == instance["record_id"])).first()
    if row is None:
        return []
    record = dict(row._mapping)
    info = {"id": task["id"], "instance_id": instance["id"], "workflow": instance["workflow"], "step": task["step"],
            "status": task["status"], "assignee_id": task["assignee_id"], "submitter_id": instance["submitter_id"]}
    out: list[dict[str, Any]] = []
    for impl in hook.get_hookimpls():  # in registration order (plugin order), unlike a hook call
        try:
            args = {"conn": conn, "app": built, "entity": entity, "record": dict(record), "task": dict(info),
                    "actor": actor}
            result = impl.function(**{k: v for k, v in args.items() if k in impl.argnames})
        except Exception:
            log.exception("review panels of plugin %s failed for task %s", impl.plugin_name, task["id"])
            from keel.i18n import translate

            out.append({"title": translate("This panel could not be shown (%(plugin)s).", plugin=impl.plugin_name),
                        "rows": [], "note": None})
            continue
        for panel in result or ():
            norm = normalise(panel, lang)
            if norm is not None:
                out.append(norm)
    return out
