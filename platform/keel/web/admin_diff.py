"""What a change to an app's definition means, for the admin about to apply it: each change named by ids
(a field, a step, a widget — never "item 3 of the list"), in the reader's language, and its effect on
requests already running ("new requests go to …; 3 running ones keep version 4").

`changes(old, new)` compares two bundles and yields `Change`s; `describe` turns them into sentences."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.definitions.model import thaw
from keel.i18n import translate
from keel.storage.workflow_tables import wf_instances
from keel.web.pages import N_

RUNNING = ("pending", "returned")
VALUE_WIDTH = 60


@dataclass(frozen=True)
class Change:
    file: str
    path: tuple[str, ...]   # keys and `#id`s of list items, e.g. ("fields", "#days", "label", "zh")
    kind: str               # added | removed | changed | order
    old: Any = None
    new: Any = None


def _key(item: Any) -> Any:
    """What identifies a list item: its `id`, or the field a form input shows."""
    if not isinstance(item, Mapping):
        return None
    return item.get("id") if "id" in item else item.get("field")


def _ids(items: Any) -> list[str] | None:
    """The ids of a list of objects with unique ids (fields, steps, widgets, options, a form's inputs),
    else None."""
    if not isinstance(items, list) or not items:
        return None
    ids = [_key(i) for i in items]
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids


def _walk(file: str, path: tuple[str, ...], old: Any, new: Any) -> Iterator[Change]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            if key not in new:
                yield Change(file, (*path, key), "removed", old[key], None)
        for key in new:
            if key not in old:
                yield Change(file, (*path, key), "added", None, new[key])
            else:
                yield from _walk(file, (*path, key), old[key], new[key])
        return
    old_ids, new_ids = _ids(old), _ids(new)
    if old_ids is not None and new_ids is not None:
        by_old = dict(zip(old_ids, old, strict=True))
        by_new = dict(zip(new_ids, new, strict=True))
        for i in old_ids:
            if i not in by_new:
                yield Change(file, (*path, f"#{i}"), "removed", by_old[i], None)
        for i in new_ids:
            if i not in by_old:
                yield Change(file, (*path, f"#{i}"), "added", None, by_new[i])
        kept_old = [i for i in old_ids if i in by_new]
        kept_new = [i for i in new_ids if i in by_old]
        if kept_old != kept_new:
            yield Change(file, path, "order", kept_old, kept_new)
        for i in new_ids:
            if i in by_old:
                yield from _walk(file, (*path, f"#{i}"), by_old[i], by_new[i])
        return
    if old != new or type(old) is not type(new):
        yield Change(file, path, "changed", old, new)


def changes(old_bundle: Mapping[str, Any] | None, new_bundle: Mapping[str, Any]) -> list[Change]:
    old_bundle = thaw(old_bundle or {})
    new_bundle = thaw(new_bundle)
    out: list[Change] = []
    for file in sorted(set(old_bundle) | set(new_bundle)):
        if file not in new_bundle:
            out.append(Change(file, (), "removed", old_bundle[file], None))
        elif file not in old_bundle:
            out.append(Change(file, (), "added", None, new_bundle[file]))
        else:
            out.extend(_walk(file, (), old_bundle[file], new_bundle[file]))
    return out


# ---- in words --------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"


def _label(value: Any, lang: str, fallback: str) -> str:
    if isinstance(value, Mapping):
        label = value.get("label")
        if isinstance(label, Mapping):
            return label.get("en" if lang == "en" else "zh") or label.get("zh") or label.get("en") or fallback
        if isinstance(label, str):
            return label
        title = value.get("title")
        if isinstance(title, Mapping):
            return title.get("en" if lang == "en" else "zh") or fallback
    return fallback


def approver_text(rule: Any) -> str:
    """One approver rule as a reader says it."""
    if not isinstance(rule, Mapping):
        return _show(rule)
    kind = rule.get("rule")
    if kind == "manager_of":
        of = rule.get("of", "submitter")
        return translate("the submitter's direct superior") if of == "submitter" else \
            translate("the direct superior of %(field)s", field=of)
    if kind == "department":
        key = N_("the head of department %(code)s") if rule.get("pick", "head") == "head" else \
            N_("everyone in department %(code)s")
        return translate(key, code=rule.get("code", "?"))
    if kind == "role":
        return translate("everyone with the role %(role)s", role=rule.get("role", "?"))
    if kind == "user":
        return translate("the user in field %(field)s", field=rule.get("field", "?"))
    if kind == "fixed":
        return translate("user %(username)s", username=rule.get("username", "?"))
    return _show(rule)


def _approvers(rules: Any) -> str:
    return "; ".join(approver_text(r) for r in rules) if isinstance(rules, list) else _show(rules)


def _thing(file: str, lang: str, doc: Mapping[str, Any] | None) -> str:
    """What a file is, in words: 'entity 请假申请 (leave_request)'."""
    folder, _, name = file.partition("/")
    ident = name[:-5] if name.endswith(".json") else file
    label = _label(doc or {}, lang, ident)
    shown = f"{label} ({ident})" if label != ident else ident
    kinds = {"entities": N_("entity %(name)s"), "forms": N_("form %(name)s"), "workflows": N_("workflow %(name)s"),
             "jobs": N_("job %(name)s"), "dashboards": N_("dashboard %(name)s"),
             "connectors": N_("connector %(name)s"), "notifications": N_("notification %(name)s")}
    if file == "app.json":
        return translate("the app")
    return translate(kinds.get(folder, "%(name)s"), name=shown)


def _item(segment: str, container: str) -> str:
    item = segment[1:]
    kinds = {"fields": N_("field %(id)s"), "steps": N_("step %(id)s"), "widgets": N_("widget %(id)s"),
             "rules": N_("rule %(id)s"), "options": N_("option %(id)s"), "sections": N_("section %(id)s"),
             "permissions": N_("permission %(id)s"), "roles": N_("role %(id)s")}
    return translate(kinds.get(container, "%(id)s"), id=item)


def _where(path: tuple[str, ...]) -> str:
    """A path in words: `field days › label › zh`."""
    parts, previous = [], ""
    for seg in path:
        parts.append(_item(seg, previous) if seg.startswith("#") else seg)
        previous = seg
    return " › ".join(parts)


def sentence(c: Change, lang: str, new_bundle: Mapping[str, Any], old_bundle: Mapping[str, Any]) -> str:
    doc = new_bundle.get(c.file) or old_bundle.get(c.file)
    thing = _thing(c.file, lang, doc)
    if not c.path:
        return translate("%(thing)s added", thing=thing) if c.kind == "added" else \
            translate("%(thing)s removed", thing=thing)
    last = c.path[-1]
    if c.kind == "order":
        return translate("%(thing)s: order of %(where)s: %(old)s → %(new)s", thing=thing, where=_where(c.path),
                         old=", ".join(c.old), new=", ".join(c.new))
    if c.path[0] == "settings" and c.file == "app.json":
        key = ".".join(c.path[1:])
        return translate("setting %(key)s: %(old)s → %(new)s", key=key, old=_show(c.old), new=_show(c.new))
    if last.startswith("#"):
        container = c.path[-2] if len(c.path) > 1 else ""
        item = _item(last, container)
        value = c.new if c.kind == "added" else c.old
        named = _label(value, lang, "")
        item = f"{item} «{named}»" if named else item
        if c.kind == "added":
            extra = f" ({value.get('type')})" if isinstance(value, Mapping) and value.get("type") else ""
            return translate("%(thing)s: %(item)s added", thing=thing, item=item + extra)
        if container == "fields" and c.file.startswith("entities/"):
            return translate("%(thing)s: %(item)s retired (its column and data are kept)", thing=thing, item=item)
        return translate("%(thing)s: %(item)s removed", thing=thing, item=item)
    if last == "approvers":
        return translate("%(thing)s: %(where)s: %(old)s → %(new)s", thing=thing, where=_where(c.path[:-1]) + " › "
                         + translate("approvers"), old=_approvers(c.old), new=_approvers(c.new))
    if c.kind == "added":
        return translate("%(thing)s: %(where)s set to %(new)s", thing=thing, where=_where(c.path), new=_show(c.new))
    if c.kind == "removed":
        return translate("%(thing)s: %(where)s removed (was %(old)s)", thing=thing, where=_where(c.path),
                         old=_show(c.old))
    return translate("%(thing)s: %(where)s: %(old)s → %(new)s", thing=thing, where=_where(c.path),
                     old=_show(c.old), new=_show(c.new))


def describe(old_bundle: Mapping[str, Any] | None, new_bundle: Mapping[str, Any], lang: str) -> list[str]:
    old = thaw(old_bundle or {})
    new = thaw(new_bundle)
    return [sentence(c, lang, new, old) for c in changes(old, new)]


# ---- effect on running requests -----------------------------------------------------------------

def running_requests(conn: sa.Connection, app_id: str) -> dict[int, int]:
    """Running workflow instances of an app by the version they are pinned to."""
    rows = conn.execute(sa.select(wf_instances.c.app_version, sa.func.count())
                        .where(wf_instances.c.app == app_id, wf_instances.c.status.in_(RUNNING))
                        .group_by(wf_instances.c.app_version)).all()
    return {version: n for version, n in rows}


def effects(conn: sa.Connection, app_id: str, old_bundle: Mapping[str, Any] | None,
            new_bundle: Mapping[str, Any], next_version: int, lang: str) -> list[str]:
    """What changes for people: where new requests go, and that running ones keep their version."""
    found = changes(old_bundle, new_bundle)
    out = []
    new = thaw(new_bundle)
    for c in found:
        if c.file.startswith("workflows/") and c.path and c.path[-1] == "approvers" and isinstance(c.new, list):
            step = c.path[-2][1:] if len(c.path) > 1 and c.path[-2].startswith("#") else "?"
            step_doc = next((s for s in (new.get(c.file) or {}).get("steps", []) if s.get("id") == step), {})
            out.append(translate("New requests at step %(step)s go to %(who)s.",
                                 step=_label(step_doc, lang, step), who=_approvers(c.new)))
    if any(c.file.startswith("workflows/") for c in found):
        running = running_requests(conn, app_id)
        if running:
            total = sum(running.values())
            versions = ", ".join(str(v) for v in sorted(running))
            out.append(translate("%(n)s running requests keep version %(versions)s; new ones follow version "
                                 "%(next)s.", n=total, versions=versions, next=next_version))
        else:
            out.append(translate("No request is running; new ones follow version %(next)s.", next=next_version))
    if any(c.file.startswith("entities/") and c.kind == "removed" and len(c.path) == 2 and c.path[0] == "fields"
           for c in found):
        out.append(translate("A retired field disappears from forms, lists and the API; its data stays and "
                             "comes back if the field is added again."))
    return out
