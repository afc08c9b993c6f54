"""Upstream HR items (JSON objects or CSV rows) read into people and departments, with every problem.

A mapping names where each directory field sits in an item (keel.connectors.mapping format). A field the
mapping leaves out, or an optional field an item does not carry, is not synced (the directory keeps its
value); a field present but empty clears it. Keys are compared as text, so 1001 and "1001" are one person.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.auth.directory import DEPARTMENT_CODE, ROLE, USERNAME
from keel.connectors.mapping import compile_mapping, map_item

USER_FIELDS = ("external_key", "username", "display_name", "email", "department_code", "manager_key", "roles",
               "active")
USER_REQUIRED = ("external_key", "username", "display_name")
DEPARTMENT_FIELDS = ("external_key", "code", "name", "name_en", "parent_code", "head_key")
DEPARTMENT_REQUIRED = ("code", "name")
_TRUE = {"1", "true", "yes", "y", "active", "在职"}
_FALSE = {"0", "false", "no", "n", "inactive", "离职"}


@dataclass(frozen=True)
class Person:
    index: int
    key: str
    values: Mapping[str, Any]   # the synced fields this item gives: username, display_name, email, ...


@dataclass(frozen=True)
class Department:
    index: int
    key: str
    values: Mapping[str, Any]   # code, name, name_en, parent_code, head_key (those the item gives)


@dataclass
class Snapshot:
    """What upstream says. `seen` holds every key an item carried, valid or not, so a person whose row
    is broken this time is not mistaken for one who left; `keyless` says some item had no key at all,
    and then nobody can be told to have vanished."""

    items: list[Any]
    valid: dict[str, Any] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    keyless: bool = False
    problems: list[str] = field(default_factory=list)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # Excel hands 1001 back as 1001.0
        value = int(value)
    text = str(value).strip()
    return text or None


def _length(problems: list[str], where: str, name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        problems.append(f"{where}: {name} is longer than {limit} characters")


def _roles(value: Any) -> tuple[str, ...] | str:
    """A list, or text split on ',', ';' or '|'; a message string when it is neither."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = [p.strip() for chunk in value.split(";") for sub in chunk.split("|") for p in sub.split(",")]
    elif isinstance(value, list):
        parts = [_text(p) or "" for p in value]
    else:
        return "roles must be a list or comma-separated text"
    parts = [p for p in parts if p]
    bad = [p for p in parts if not ROLE.fullmatch(p)]
    return f"invalid role name {bad[0]!r}" if bad else tuple(sorted(set(parts)))


def _active(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = (_text(value) or "").lower()
    return True if text in _TRUE else False if text in _FALSE else None


def read_people(items: Iterable[Any], mapping: Mapping[str, Any]) -> Snapshot:
    compiled = compile_mapping(mapping)
    snap = Snapshot(list(items))
    for i, item in enumerate(snap.items):
        raw, found = map_item(compiled, item, index=i)
        problems = [str(p) for p in found]
        key = _text(raw.get("external_key"))
        where = f"item {i}" + (f" (external key {key!r})" if key else "")
        if key is None:
            snap.keyless = True
        elif key in snap.seen:
            problems.append(f"{where}: the external key appears twice upstream; the later item is skipped")
        else:
            snap.seen.add(key)
        values: dict[str, Any] = {}
        for name in ("username", "display_name", "email", "department_code", "manager_key"):
            if name in raw:
                values[name] = _text(raw[name])
        _length(problems, where, "external_key", key, 200)
        if values.get("username") is not None and not USERNAME.fullmatch(values["username"]):
            problems.append(f"{where}: username {values['username']!r} must be 1 to 150 letters, digits, "
                            "'_', '.', '@' or '-'")
        _length(problems, where, "display_name", values.get("display_name"), 200)
        email = values.get("email")
        if email is not None and (len(email) > 320 or "@" not in email or any(c.isspace() for c in email)):
            problems.append(f"{where}: {email!r} is not a valid e-mail address")
        if "roles" in raw:
            roles = _roles(raw["roles"])
            if isinstance(roles, str):
                problems.append(f"{where}: {roles}")
            values["roles"] = roles
        if "active" in raw:
            active = _active(raw["active"])
            if active is None:
                problems.append(f"{where}: active must be true/false (or yes/no, 1/0), not {raw['active']!r}")
            values["active"] = active
        if key is not None and values.get("manager_key") == key:
            problems.append(f"{where}: a person cannot be their own manager")
        if problems:
            snap.problems += problems
        elif key is not None:
            snap.valid[key] = Person(i, key, values)
    return snap


def read_departments(items: Iterable[Any], mapping: Mapping[str, Any]) -> Snapshot:
    """Departments, keyed by external_key (the code when not mapped). Read from the people's own items,
    the same department appears on many rows: they must agree."""
    compiled = compile_mapping(mapping)
    snap = Snapshot(list(items))
    for i, item in enumerate(snap.items):
        raw, found = map_item(compiled, item, index=i)
        problems = [str(p) for p in found]
        values = {name: _text(raw[name]) for name in DEPARTMENT_FIELDS[1:] if name in raw}
        key = _text(raw["external_key"]) if "external_key" in raw else values.get("code")
        where = f"item {i}" + (f" (department {key!r})" if key else "")
        if key is None and all(v is None for v in values.values()):
            continue  # a row that carries no department (a person's row, when read from the people)
        if key is None:
            snap.keyless = True
        code = values.get("code")
        if code is not None and not DEPARTMENT_CODE.fullmatch(code):
            problems.append(f"{where}: department code {code!r} must be 1 to 64 letters, digits, '_', '.' "
                            "or '-'")
        _length(problems, where, "name", values.get("name"), 200)
        _length(problems, where, "name_en", values.get("name_en"), 200)
        _length(problems, where, "external_key", key, 200)
        if code is not None and values.get("parent_code") == code:
            problems.append(f"{where}: a department cannot be its own parent")
        if key is not None:
            first = snap.valid.get(key)
            if first is not None and first.values != values:
                problems.append(f"{where}: says otherwise about the department than item {first.index} "
                                f"({_difference(first.values, values)})")
            snap.seen.add(key)
        if problems:
            snap.problems += problems
        elif key is not None and key not in snap.valid:
            snap.valid[key] = Department(i, key, values)
    return snap


def _difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{n}: {a.get(n)!r} vs {b.get(n)!r}" for n in names)
