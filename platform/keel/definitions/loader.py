"""Reading an app definition: a folder of JSON files, or the bundle stored as a definition version.

Both roads meet in `_load`, so a stored bundle is validated exactly like a folder on disk:
layout -> JSON Schema per file -> the model (model.py) -> cross-reference checks (checks.py).
Every error of every file is collected and raised together as one `DefinitionErrors`.
Nothing here touches a database.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urldefrag, urljoin

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from keel.definitions import build
from keel.definitions.checks import check_app
from keel.definitions.errors import DefinitionError, DefinitionErrors, pointer
from keel.definitions.kinds import CORE_FOLDERS, SCHEMA_BASE, DefinitionKind
from keel.definitions.model import AppDef, Definition, freeze, thaw
from keel.registries import Registries

APP_FILE = "app.json"
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64  # nesting of one JSON document; real definitions need about ten levels
MAX_MESSAGE = 300
SCHEMA_DIR = Path(__file__).with_name("schemas")


def folders(registries: Registries) -> dict[str, str]:
    """Sub-folder -> the kind of definition each of its files holds: the core's and every registered
    kind's, in the order `keel app validate` lists them."""
    kinds = sorted(registries.definition_kinds.values(), key=lambda k: (k.order, k.name))
    return {**CORE_FOLDERS, **{k.folder: k.name for k in kinds}}


# -- reading a folder --------------------------------------------------------------------------------

def read_bundle(path: str | Path, registries: Registries) -> dict[str, Any]:
    """Every definition file of the app folder at `path`, parsed: relative posix path -> JSON.
    Raises DefinitionErrors for unreadable files (malformed JSON, not UTF-8, too large, a missing
    app.json, a folder no registered kind reads)."""
    bundle, errors = _read_folder(Path(path), folders(registries))
    if errors:
        raise DefinitionErrors(errors)
    return bundle


def _read_folder(root: Path, known: Mapping[str, str]) -> tuple[dict[str, Any], list[DefinitionError]]:
    """Files that do not end in .json (a README, notes) and hidden entries are ignored. A folder Keel
    does not know, or a folder inside a kind folder, is an error: a typo like `entites/` must not
    silently drop every entity."""
    if not root.is_dir():
        return {}, [DefinitionError(str(root), "", "not a folder (an app definition is a folder with app.json)")]
    bundle: dict[str, Any] = {}
    errors: list[DefinitionError] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_symlink():
            errors.append(DefinitionError(name, "", "symbolic links are not followed; copy the file in"))
        elif entry.is_dir():
            if name not in known:
                errors.append(DefinitionError(name + "/", "", "unknown folder; an app folder may contain "
                                              + ", ".join(f"{f}/" for f in known)
                                              + " (other folders come with the plugins that read them)"))
                continue
            for sub in sorted(entry.iterdir()):
                rel = f"{name}/{sub.name}"
                if sub.name.startswith("."):
                    continue
                if sub.is_symlink():
                    errors.append(DefinitionError(rel, "", "symbolic links are not followed; copy the file in"))
                elif sub.is_dir():
                    errors.append(DefinitionError(rel + "/", "", f"folders inside {name}/ are not read; "
                                                  f"put the files directly in {name}/"))
                elif sub.suffix == ".json":
                    _read_file(sub, rel, bundle, errors)
        elif name == APP_FILE:
            _read_file(entry, name, bundle, errors)
        elif entry.suffix == ".json":
            errors.append(DefinitionError(name, "", "unexpected file: only app.json belongs at the top of "
                                          "the app folder; other definitions go in their sub-folder"))
    if APP_FILE not in bundle and not any(e.file == APP_FILE for e in errors):
        errors.append(DefinitionError(APP_FILE, "", "missing: every app folder needs an app.json"))
    return bundle, errors


def _read_file(path: Path, rel: str, bundle: dict[str, Any], errors: list[DefinitionError]) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        errors.append(DefinitionError(rel, "", f"file too large: {size} bytes (at most {MAX_FILE_BYTES})"))
        return
    try:
        bundle[rel] = parse_json(path.read_bytes())
    except ValueError as e:
        errors.append(DefinitionError(rel, "", str(e)))


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8 (a byte-order mark is tolerated), no NaN/Infinity, no key given twice in one
    object (JSON parsers silently keep the last one, which hides a mistake). Raises ValueError with a
    message that says where."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} "
                         f"(save the file as UTF-8)") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"invalid JSON: the key '{key}' appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON: {name} is not a number JSON allows")


# -- loading --------------------------------------------------------------------------------------------

def load_bundle(bundle: Mapping[str, Any], registries: Registries) -> AppDef:
    """Validate a bundle (relative path -> parsed JSON) and build the app model from it, with the field
    types and definition kinds of `registries`."""
    return _load(bundle, [], registries)


def load_app_dir(path: str | Path, registries: Registries) -> AppDef:
    """load_bundle(read_bundle(path)), except that errors from unreadable files are reported together
    with the errors found in the readable ones."""
    bundle, errors = _read_folder(Path(path), folders(registries))
    return _load(bundle, errors, registries)


def _load(bundle: Mapping[str, Any], file_errors: list[DefinitionError], registries: Registries) -> AppDef:
    if not isinstance(bundle, Mapping):
        raise DefinitionErrors([DefinitionError("", "", "a definition bundle maps file paths to JSON documents")])
    errors = list(file_errors)
    # Files that could not be used: a reference to their id is not reported a second time.
    known = folders(registries)
    broken = {(_kind_of(e.file, known) or "", Path(e.file).stem) for e in file_errors}
    docs: dict[str, tuple[str, Any]] = {}
    for path in sorted(bundle, key=str):
        kind = _kind_of(path, known) if isinstance(path, str) else None
        if kind is None:
            errors.append(DefinitionError(str(path), "", "unexpected file: definitions are app.json and "
                                          + ", ".join(f"{f}/<id>.json" for f in known)))
        elif _depth_exceeds(bundle[path], MAX_DEPTH):  # checked before anything recurses into it
            errors.append(DefinitionError(path, "", f"nested more than {MAX_DEPTH} levels deep"))
            broken.add((kind, Path(path).stem))
        else:
            docs[path] = (kind, thaw(bundle[path]))  # a frozen bundle (AppDef.bundle) loads like a fresh one
    frozen = freeze({path: doc for path, (_, doc) in docs.items()})  # once; the model's `raw` views it
    canonical: dict[str, str] = {}
    valid: dict[str, tuple[str, Mapping[str, Any]]] = {}
    removed: dict[str, list[tuple]] = {}  # file -> the parts the schema refused, left out to go on checking
    for path, (kind, doc) in docs.items():
        problems = _document_errors(path, kind, doc, canonical, registries)
        if problems:
            errors.extend(problems)
            # Every problem at once: what is left of an app, entity or form without the parts the schema
            # refused is still checked, and against the others (its links, the forms and workflows
            # naming it). Other kinds' checks already run on their invalid documents (`invalid_others`).
            core = kind in ("app", *CORE_FOLDERS.values()) and path in canonical
            rest, cut = _without_schema_errors(_validator(kind, registries), doc) if core else (None, [])
            if isinstance(rest, dict):
                valid[path] = (kind, freeze(rest))
                removed[path] = cut
                continue
            ident = doc.get("id") if isinstance(doc, dict) else None
            broken.add((kind, ident if isinstance(ident, str) else Path(path).stem))
        else:
            valid[path] = (kind, frozen[path])
    if APP_FILE not in bundle and not any(e.file == APP_FILE for e in errors):
        errors.append(DefinitionError(APP_FILE, "", "missing: every app folder needs an app.json"))

    app_doc = docs.get(APP_FILE, (None, None))[1]
    sources = build.sources(valid, broken, app_doc, registries.field_types)
    sources.invalid_others = [Definition(doc["id"], kind, path, frozen[path]) for path, (kind, doc) in docs.items()
                              if path not in valid and kind in registries.definition_kinds
                              and isinstance(doc, dict) and isinstance(doc.get("id"), str)]
    errors.extend(e for e in check_app(sources, registries, errors)
                  if not _follows_from(e.pointer, removed.get(e.file, ())))
    if errors:
        raise DefinitionErrors(errors)
    return build.app(sources, bundle=frozen, checksum=_checksum(canonical), registries=registries)


def _kind_of(path: str, known: Mapping[str, str]) -> str | None:
    if path == APP_FILE:
        return "app"
    parts = path.split("/")
    if len(parts) == 2 and parts[0] in known and parts[1].endswith(".json") \
            and not parts[1].startswith(".") and len(parts[1]) > len(".json"):
        return known[parts[0]]
    return None


def _document_errors(path: str, kind: str, doc: Any, canonical: dict[str, str],
                     registries: Registries) -> list[DefinitionError]:
    """Size and schema of one document; records its canonical JSON for the checksum."""
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        return [DefinitionError(path, "", f"not a JSON document: {e}"[:MAX_MESSAGE])]
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        return [DefinitionError(path, "", f"file too large (at most {MAX_FILE_BYTES} bytes)")]
    canonical[path] = text
    return list(schema_errors(path, _validator(kind, registries), doc))


MAX_REPAIR_ROUNDS = 5


def _without_schema_errors(validator: Draft202012Validator, doc: Any) -> tuple[Any, list[tuple]]:
    """A copy of `doc` without every part its schema refuses (an unknown key, a value of the wrong type
    or shape, an object missing a required key) and the paths left out; None when the document as a
    whole is refused. Used only to go on checking references; the schema errors themselves are reported
    as they are."""
    current = copy.deepcopy(doc)
    cut: list[tuple] = []
    for _ in range(MAX_REPAIR_ROUNDS):
        found = list(validator.iter_errors(current))
        if not found:
            return current, cut
        doomed: set[tuple] = set()
        for err in found:
            where = tuple(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                doomed |= {(*where, key) for key in set(err.instance) - set(err.schema.get("properties", {}))}
            elif where:
                doomed.add(where)
            else:
                return None, cut
        # Deepest first and, within a list, from the end, so earlier indices stay valid.
        for where in sorted(doomed, key=lambda p: (len(p), [(isinstance(x, str), x) for x in p]), reverse=True):
            parent = current
            try:
                for step in where[:-1]:
                    parent = parent[step]
                del parent[where[-1]]
                cut.append(where)
            except (KeyError, IndexError, TypeError):
                continue  # inside something already removed
    return None, cut


def _follows_from(error_pointer: str, cut: Iterable[tuple]) -> bool:
    """Whether a check's error may only be a consequence of a part left out (a field's default once its
    refused option is gone): errors inside the same
    list item (a field, an option, a permission) as a refused part wait until the schema errors are
    fixed."""
    parts = error_pointer.split("/")[1:] if error_pointer else []
    for where in cut:
        first_index = next((i for i, step in enumerate(where) if isinstance(step, int)), None)
        if first_index is not None:
            owner = [str(step) for step in where[:first_index + 1]]
            if parts[:len(owner)] == owner:
                return True
    return False


def _depth_exceeds(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return False


def _checksum(canonical: Mapping[str, str]) -> str:
    """sha256 of the canonical JSON of the whole bundle (sorted keys, compact, UTF-8), assembled from
    the per-file texts: identical to json.dumps(bundle, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)."""
    body = ",".join(json.dumps(p, ensure_ascii=False) + ":" + canonical[p] for p in sorted(canonical))
    return hashlib.sha256(("{" + body + "}").encode("utf-8")).hexdigest()


# -- JSON Schemas -----------------------------------------------------------------------------------------

@cache
def _core_schemas() -> Mapping[str, Mapping[str, Any]]:
    out = {}
    for p in SCHEMA_DIR.glob("*.json"):
        s = json.loads(p.read_text("utf-8"))
        out[s["$id"]] = s
    return MappingProxyType(out)


def _validator(kind: str, registries: Registries) -> Draft202012Validator:
    if kind in ("app", *CORE_FOLDERS.values()):
        return _core_validator(kind)
    return _kind_validator(registries.definition_kinds[kind])


@cache
def _core_validator(kind: str) -> Draft202012Validator:
    schema_id = f"{SCHEMA_BASE}{kind}.json"
    return _compile(_core_schemas()[schema_id], schema_id, _core_schemas())


@cache
def _kind_validator(kind: DefinitionKind) -> Draft202012Validator:
    """Built once per registered kind (kinds are compared by identity), never per file: building a
    validator costs more than validating a document."""
    schema_id = kind.schema.get("$id") or f"{SCHEMA_BASE}{kind.name}.json"
    return _compile(kind.schema, schema_id, {**_core_schemas(), schema_id: kind.schema})


def _compile(schema: Mapping[str, Any], schema_id: str,
             schemas: Mapping[str, Mapping[str, Any]]) -> Draft202012Validator:
    """References between the schema files are inlined first: a `$ref` lookup per value was half the
    validation time of a large app."""
    # A plugin's schema may leave out `$schema`: it is read as draft 2020-12, like Keel's own.
    registry: Registry = Registry().with_resources(
        (i, Resource.from_contents(s, default_specification=DRAFT202012)) for i, s in schemas.items())
    return Draft202012Validator(_inline(schema, schema_id, schemas, ()), registry=registry,
                                format_checker=FormatChecker())


def _inline(node: Any, base: str, schemas: Mapping[str, dict], expanding: tuple[str, ...]) -> Any:
    """A copy of `node` with each `$ref` replaced by the schema it names. A reference back into the
    schema being expanded (a table field's columns are fields) stays a `$ref`, made absolute."""
    if isinstance(node, list):
        return [_inline(v, base, schemas, expanding) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return {k: _inline(v, base, schemas, expanding) for k, v in node.items()}
    target = urljoin(base, ref)
    doc, fragment = urldefrag(target)
    if target in expanding or doc not in schemas or (not fragment and doc == base):
        return {**node, "$ref": target}
    sub: Any = schemas[doc]
    for part in filter(None, fragment.split("/")):
        sub = sub[part.replace("~1", "/").replace("~0", "~")]
    sub = {k: v for k, v in sub.items() if k not in ("$id", "$schema", "$defs")}
    rest = {k: v for k, v in node.items() if k != "$ref"}
    return {**_inline(sub, doc, schemas, expanding + (target,)), **_inline(rest, base, schemas, expanding)}


def schema_errors(path: str, validator: Draft202012Validator, doc: Any) -> Iterable[DefinitionError]:
    for err in validator.iter_errors(doc):
        where = pointer(*err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                yield DefinitionError(path, where + pointer(key),
                                      f"unknown key '{key}'; allowed here: {', '.join(allowed)}")
        elif err.validator == "pattern" and "x-pattern-message" in err.schema:
            yield DefinitionError(path, where, f"{_short(err.instance)} {err.schema['x-pattern-message']}")
        else:
            yield DefinitionError(path, where, _short_message(_shorten_instance(err.message, err.instance)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shorten_instance(message: str, instance: Any) -> str:
    """jsonschema messages start with the offending value; a long one would push out the reason."""
    text = repr(instance)
    return _short(instance) + message[len(text):] if message.startswith(text) else message


def _short_message(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."
