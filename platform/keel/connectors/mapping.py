"""Field mappings: where each entity field's value sits in a source item (a JSON object or a table row).

A mapping is `{"field_id": PATH}` or `{"field_id": {"path": PATH, "default": ..., "required": bool}}`.
PATH is a JSON pointer (`/data/0/name`, RFC 6901) when it starts with "/" (or is "" for the whole
item), otherwise a small dot syntax: `a.b[0].c`. A column name containing "." or "[" needs a pointer.

A plain PATH is required: a missing or null value is a problem, reported with the item index and the
path, so the sync can skip the item or fail the run — never write half of it. With a `default`, or with
`"required": false`, a field is optional; an optional field that is absent is left out of the values
(the sync does not overwrite it), one that is present and null maps to None.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import KeelError

MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$", "maxLength": 63},
    "additionalProperties": {
        "oneOf": [
            {"type": "string", "maxLength": 500},
            {"type": "object", "required": ["path"], "additionalProperties": False,
             "properties": {"path": {"type": "string", "maxLength": 500}, "default": {},
                            "required": {"type": "boolean"}}},
        ]
    },
}

MISSING = object()
_DOT_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]|(\.)")


@dataclass(frozen=True)
class MappingProblem:
    """One field of one item that could not be mapped. `index` is the item's position in the source
    (0-based; None when mapping a single item outside a run)."""

    field: str
    path: str
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"item {self.index}: " if self.index is not None else ""
        return f"{where}field {self.field!r} (path {self.path!r}): {self.message}"


class MappingError(KeelError):
    def __init__(self, problems: Iterable[MappingProblem]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class FieldPath:
    """A parsed path: steps are ("key", str), ("index", int) or ("token", str) for pointer tokens,
    which name a key of an object or an index of an array depending on what they meet."""

    text: str
    steps: tuple[tuple[str, Any], ...]

    def lookup(self, item: Any) -> Any:
        """The value at this path, or the module's MISSING sentinel."""
        current = item
        for kind, step in self.steps:
            if kind == "index" or (kind == "token" and isinstance(current, list)):
                if kind == "token" and not re.fullmatch(r"0|[1-9]\d*", step):
                    return MISSING
                i = int(step)
                if not isinstance(current, list) or i >= len(current):
                    return MISSING
                current = current[i]
            elif isinstance(current, Mapping) and step in current:
                current = current[step]
            else:
                return MISSING
        return current


def parse_path(text: str) -> FieldPath:
    """Parse a JSON pointer or a dot path; raises ValueError with the reason."""
    if not isinstance(text, str):
        raise TypeError("a path must be a string")
    if text == "" or text.startswith("/"):
        tokens = text.split("/")[1:] if text else []
        return FieldPath(text, tuple(("token", t.replace("~1", "/").replace("~0", "~")) for t in tokens))
    steps: list[tuple[str, Any]] = []
    pos, expect_name = 0, True
    while pos < len(text):
        m = _DOT_TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unexpected {text[pos]!r} at position {pos}")
        name, index, dot = m.groups()
        if dot:
            if expect_name:
                raise ValueError(f"empty name at position {pos}")
            expect_name = True
        elif name is not None:
            if not expect_name:
                raise ValueError(f"missing '.' before position {pos}")
            steps.append(("key", name))
            expect_name = False
        else:
            if expect_name and steps:
                raise ValueError(f"empty name at position {pos}")
            steps.append(("index", int(index)))
            expect_name = False
        pos = m.end()
    if expect_name:
        raise ValueError("path ends with '.'")
    return FieldPath(text, tuple(steps))


@dataclass(frozen=True)
class FieldRule:
    field: str
    path: FieldPath
    required: bool
    default: Any = MISSING


@dataclass(frozen=True)
class CompiledMapping:
    rules: tuple[FieldRule, ...]


def compile_mapping(mapping: Mapping[str, Any] | CompiledMapping) -> CompiledMapping:
    """Parse every path once; raises MappingError listing every bad entry."""
    if isinstance(mapping, CompiledMapping):
        return mapping
    rules, problems = [], []
    for field_id, spec in mapping.items():
        if isinstance(spec, Mapping):
            path_text, has_default = spec.get("path"), "default" in spec
            required = bool(spec.get("required", not has_default))
            default = spec["default"] if has_default else MISSING
        else:
            path_text, required, default = spec, True, MISSING
        try:
            rules.append(FieldRule(field_id, parse_path(path_text), required, default))
        except (ValueError, TypeError) as exc:
            problems.append(MappingProblem(field_id, str(path_text), f"invalid path: {exc}"))
    if problems:
        raise MappingError(problems)
    return CompiledMapping(tuple(rules))


def mapping_problems(mapping: Mapping[str, Any]) -> list[str]:
    """Syntax problems of a mapping as text, for validating a definition."""
    try:
        compile_mapping(mapping)
    except MappingError as exc:
        return [str(p) for p in exc.problems]
    return []


def map_item(mapping: Mapping[str, Any] | CompiledMapping, item: Any, *,
             index: int | None = None) -> tuple[dict[str, Any], list[MappingProblem]]:
    """The entity values of one source item and the problems found. An item with problems must not
    be written (its values are incomplete)."""
    compiled = compile_mapping(mapping)
    values: dict[str, Any] = {}
    problems: list[MappingProblem] = []
    for rule in compiled.rules:
        value = rule.path.lookup(item)
        if value is MISSING or value is None:
            if rule.default is not MISSING:
                values[rule.field] = rule.default
            elif rule.required:
                what = "value is missing" if value is MISSING else "value is empty (null)"
                problems.append(MappingProblem(rule.field, rule.path.text, what, index))
            elif value is None:
                values[rule.field] = None
            continue
        values[rule.field] = value
    return values, problems


def map_items(mapping: Mapping[str, Any] | CompiledMapping,
              items: Iterable[Any]) -> tuple[list[dict[str, Any]], list[MappingProblem]]:
    """Map every item; returns the values of the items without problems and all problems. The caller
    decides, per its configuration, to skip the reported items or to fail the whole run."""
    compiled = compile_mapping(mapping)
    good, problems = [], []
    for i, item in enumerate(items):
        values, found = map_item(compiled, item, index=i)
        if found:
            problems.extend(found)
        else:
            good.append(values)
    return good, problems
