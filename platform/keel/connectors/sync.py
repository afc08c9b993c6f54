"""Connector definitions at run time, and the generic sync of connector items into an entity.

A connector definition is `connectors/<id>.json` in an app: `{"id", "type", "config", "secrets",
"allowlist"}`. `type` names a connector type from the plugin host; `config` is checked with that type's
schema; `secrets` names environment variables (never values). What a run may reach is set by
administrators, never by a run's params or a user:

- outbound allowlist (private/loopback destinations the SSRF-safe client may reach): the connector
  definition's `allowlist`, the app setting `outbound_allowlist`, and `KEEL_OUTBOUND_ALLOWLIST`
  (comma-separated, for operators). Entries as `keel.outbound.parse_allow_entry` reads them.
- import folder of the `file` connector: `KEEL_IMPORT_PATH`, default `<KEEL_INSTANCE_PATH>/imports`.
  `config.file` names a file inside it; absolute names, `..` and symlinks leading out are refused.

The `connector_sync` job type upserts items into an entity by an external key field. Its one chunk
reads the whole upstream snapshot first and then writes only what changed:
- knowing what vanished upstream needs the complete snapshot, and a failed fetch must write nothing;
- planning runs inside the run's start transaction, which on SQLite holds the database's write lock,
  so fetching there would block every writer for as long as the upstream takes; a chunk's transaction
  begins at its first statement, after the fetch. A retry fetches a fresh snapshot.
- with `skip_invalid` (the default) the writes are committed as they go (`JobContext.checkpoint`, a few
  times a second), so web requests write between them instead of waiting for the whole sync (SQLite has
  one write lock). Each record's write, version and audit event still commit together. A sync that stops
  half-way has written a part; the retry, or the next run, writes only what still differs;
- `skip_invalid: false` promises nothing written when any item is bad: that sync is one transaction,
  and holds the write lock while it writes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.actor import Actor
from keel.definitions.errors import DefinitionError
from keel.definitions.model import AppDef, EntityDef, FieldDef, thaw
from keel.errors import Conflict, FieldErrors, KeelError, NotFound, PermissionDenied
from keel.jobs.types import JobContext, JobFailed, JobType

log = logging.getLogger("keel.connectors.sync")

MAX_REPORTED = 20  # problems named in a failed run's error or logged per run; the rest are counted
_ON_MISSING = {"oneOf": [{"const": "ignore"}, {
    "type": "object", "required": ["field", "value"], "additionalProperties": False,
    "properties": {"field": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}, "value": {}}}]}


class SyncError(KeelError):
    """A sync that cannot run (unknown connector, invalid config, empty snapshot); says why."""


# -- connector definitions ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectorSpec:
    id: str
    file: str
    type: str
    config: Mapping[str, Any]
    secrets: Any
    allowlist: tuple[str, ...]


def connector_spec(app: AppDef, connector_id: str) -> ConnectorSpec:
    """`app`: an AppDef, or the CheckContext of one being validated (it reads the same)."""
    d = app.definitions_of("connector").get(connector_id)
    if d is None:
        known = ", ".join(sorted(app.definitions_of("connector"))) or "none"
        raise SyncError(f"no connector '{connector_id}' in app '{app.id}' (connectors: {known})")
    data = thaw(d.data)
    allow = data.get("allowlist") or []
    return ConnectorSpec(d.id, d.file, str(data.get("type")), data.get("config") or {}, data.get("secrets"),
                         tuple(str(a) for a in allow) if isinstance(allow, list) else ())


def connector_problems(app: AppDef, connector_id: str) -> list[str]:
    """Every problem of one connector definition as '$.place: message' (config against its type's
    schema, allowlist entries), with the connector types `app` was loaded with. Empty when it can be
    opened."""
    from keel.connectors.types import config_problems
    from keel.outbound import OutboundError, parse_allow_entry

    spec = connector_spec(app, connector_id)
    problems = [p if p.startswith("$.type") else "$.config" + p.removeprefix("$")
                for p in config_problems(app.registries.connector_types, spec.type, spec.config)]
    raw_allow = thaw(app.definitions_of("connector")[connector_id].data).get("allowlist")
    if raw_allow is not None and (not isinstance(raw_allow, list) or not all(isinstance(a, str) for a in raw_allow)):
        problems.append("$.allowlist: must be a list of host[:port], IP[:port] or CIDR entries")
    for i, entry in enumerate(spec.allowlist):
        try:
            parse_allow_entry(entry)
        except OutboundError as exc:
            problems.append(f"$.allowlist[{i}]: {exc.message}")
    return problems


def connector_definition_errors(app, connector_id: str) -> list[DefinitionError]:
    """One connector definition's problems as `file: /pointer: message`, for `keel app validate` (`app`:
    the CheckContext of the app being validated, or an AppDef)."""
    out = []
    file = app.definitions_of("connector")[connector_id].file
    for p in connector_problems(app, connector_id):
        place, _, message = p.partition(": ")
        ptr = place.removeprefix("$").replace(".", "/").replace("[", "/").replace("]", "")
        out.append(DefinitionError(file, ptr, message))
    return out


def outbound_allowlist(app_def: AppDef, spec: ConnectorSpec, environ: Mapping[str, str]) -> list[str]:
    from_app = app_def.settings.get("outbound_allowlist") or ()
    from_env = [e.strip() for e in (environ.get("KEEL_OUTBOUND_ALLOWLIST") or "").split(",") if e.strip()]
    return [*spec.allowlist, *(str(e) for e in from_app if isinstance(e, str)), *from_env]


def import_root(environ: Mapping[str, str]) -> Path:
    from keel.config import from_environment

    if environ.get("KEEL_IMPORT_PATH"):
        return Path(environ["KEEL_IMPORT_PATH"]).resolve()
    return Path(from_environment(dict(environ))["KEEL_INSTANCE_PATH"]) / "imports"


def open_source(app_def: AppDef, connector_id: str, *, environ: Mapping[str, str] | None = None,
                upload: tuple[str, bytes] | None = None, values: Mapping[str, Any] | None = None):
    """The item source of one connector definition, configured as the module docstring says."""
    from keel.connectors.types import ConnectorContext
    from keel.outbound import OutboundClient

    env = os.environ if environ is None else environ
    spec = connector_spec(app_def, connector_id)
    problems = connector_problems(app_def, connector_id)
    if problems:
        raise SyncError(f"connector '{connector_id}' ({spec.file}) is invalid: " + "; ".join(problems))
    context = ConnectorContext(client=OutboundClient(allowlist=outbound_allowlist(app_def, spec, env)),
                               import_root=import_root(env), upload=upload, values=dict(values or {}),
                               environ=environ)
    return app_def.registries.connector_types[spec.type].open(spec.config, spec.secrets, context)


def fetch_items(app_def: AppDef, connector_id: str, **kw: Any) -> list[dict[str, Any]]:
    """Every item of a connector, read completely before anything is written. A missing or unreadable
    import file and a refused destination are SyncErrors (waiting will not fix them: jobs fail at once,
    and the next scheduled run tries again); HTTP failures stay ConnectorErrors, which jobs retry."""
    from keel.connectors.files import ImportPathRefused, TableFileError
    from keel.outbound import DestinationRefused

    try:
        return list(open_source(app_def, connector_id, **kw).iter_items())
    except (ImportPathRefused, TableFileError, DestinationRefused) as exc:
        raise SyncError(f"connector '{connector_id}': {exc}") from None


def run_values(ctx: JobContext) -> dict[str, Any]:
    """What connector templates of a job's run see as `vars`."""
    return {"app": ctx.app_id, "job": ctx.job_id, "run": ctx.run_id,
            "scheduled_for": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None}


def report_problems(ctx: JobContext | None, problems: list[str], skip_invalid: bool, what: str) -> None:
    """Report the problems of a run: kept with the run's record (`JobContext.report`: the API and the
    run's page show them) and logged; without a run, logged here. With skip_invalid false, fail it
    (JobFailed: no retry, the data is wrong, not the connection)."""
    if ctx is not None and skip_invalid:
        for p in problems:
            ctx.report(f"{what}: {p}")
    else:
        for p in problems[:MAX_REPORTED]:
            (ctx.log if ctx is not None else log).warning("%s: %s", what, p)
    if problems and not skip_invalid:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise JobFailed(f"{len(problems)} {what} cannot be synced, nothing was written: "
                        + "; ".join(problems[:MAX_REPORTED]) + more)


# -- items into an entity -----------------------------------------------------------------------------

def _normal(f: FieldDef, raw: Any) -> Any:
    """The JSON form a raw value would be stored as; raises FieldValueError for a bad one."""

    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    ftype = f.ftype
    return ftype.dump(f, ftype.parse(f, raw))


def _stored(f: FieldDef, value: Any) -> Any:

    return None if value is None else f.ftype.dump(f, value)


def _differs(entity: EntityDef, values: Mapping[str, Any], row: Any) -> bool:
    from keel.fieldtypes import FieldValueError

    for fid, raw in values.items():
        f = entity.field(fid)
        try:
            if f is None or _normal(f, raw) != _stored(f, row._mapping[fid]):
                return True
        except FieldValueError:
            return True  # the write path reports it with its message
    return False


@dataclass
class EntitySync:
    """How items become records: `key` is the entity field holding the upstream id; `on_missing` the
    update a record gets when its key vanished upstream (None: leave it)."""

    entity: str
    key: str
    mapping: Mapping[str, Any]
    on_missing: tuple[str, Any] | None = None
    skip_invalid: bool = True
    allow_empty: bool = False


def sync_entity(conn: sa.Connection, built, spec: EntitySync, items: list[Any], actor: Actor,
                ctx: JobContext | None = None) -> dict[str, int]:
    """Upsert `items` into the entity through keel.storage.records, writing only what changed.
    Returns counts. Problems are logged and counted as `invalid`; with skip_invalid false the first
    one fails the sync (JobFailed) before anything is written, or rolls back what was."""
    from keel.connectors.mapping import compile_mapping, map_item
    from keel.fieldtypes import FieldValueError
    from keel.storage import records
    from keel.storage.query import read_condition

    if not items and not spec.allow_empty:
        raise SyncError(f"the connector returned no items; refusing to treat every {spec.entity} record as "
                        "vanished (set allow_empty to sync an empty source)")
    entity, table = built.entity(spec.entity), built.table(spec.entity)
    key_field = entity.field(spec.key)
    compiled = compile_mapping(spec.mapping)
    counts = {"items": len(items), "created": 0, "updated": 0, "unchanged": 0, "missing": 0, "invalid": 0}
    problems: list[str] = []
    keyless = False
    seen: set[Any] = set()
    wanted: list[tuple[int, Any, dict[str, Any]]] = []
    for i, item in enumerate(items):
        values, found = map_item(compiled, item, index=i)
        found = [str(p) for p in found]
        key = None
        try:
            key = _normal(key_field, values.get(spec.key))
        except FieldValueError as exc:
            found.append(f"item {i}: key {spec.key!r}: {exc}")
        if key is None:
            keyless = True  # an item we cannot match: what vanished can no longer be told
        elif key in seen:
            found.append(f"item {i}: key {key!r} appears twice upstream; the later item is skipped")
        else:
            seen.add(key)
        if found:
            problems += found
        else:
            wanted.append((i, key, values))
    counts["invalid"] = len(items) - len(wanted)
    report_problems(ctx, problems, spec.skip_invalid, f"{spec.entity} item(s)")

    existing = {}
    # Committing as it goes, the sync reads on a connection of its own: a read takes no write lock, and
    # the chunk's transaction (which does, on SQLite) begins only at its first write.
    with (ctx.engine.connect() if ctx is not None and spec.skip_invalid else nullcontext(conn)) as reader:
        for row in reader.execute(sa.select(table).where(read_condition(table, entity, actor),
                                                         table.c[spec.key].is_not(None))):
            existing[_stored(key_field, row._mapping[spec.key])] = row

    def write(where: str, fn) -> bool:
        """One record's write; with skip_invalid in a savepoint, so a refused write leaves the
        transaction usable (PostgreSQL aborts it on a constraint error otherwise)."""
        nested = conn.begin_nested() if spec.skip_invalid else None
        try:
            fn()
        except (FieldErrors, Conflict, PermissionDenied, NotFound) as exc:
            if nested is None:
                raise JobFailed(f"{where}: {exc}; nothing was written") from None
            nested.rollback()
            report_problems(ctx, [f"{where}: {exc}"], True, f"{spec.entity} item(s)")
            return False
        if nested is not None:
            nested.commit()
        return True

    for done, (i, key, values) in enumerate(wanted):
        row = existing.get(key)
        if row is None:
            ok = write(f"item {i} (key {key!r})",
                       lambda v=values: records.create(conn, built, spec.entity, v, actor))
            counts["created" if ok else "invalid"] += 1
        elif _differs(entity, values, row):
            ok = write(f"item {i} (key {key!r})", lambda v=values, r=row: records.update(
                conn, built, spec.entity, r.id, v, actor, r.row_version))
            counts["updated" if ok else "invalid"] += 1
        else:
            counts["unchanged"] += 1
        if ctx is not None and spec.skip_invalid:
            ctx.checkpoint()
        if ctx is not None and done % 500 == 0:
            ctx.progress(done, len(wanted))

    if spec.on_missing is not None and keyless:
        why = ("an item has no usable key, so records missing upstream cannot be told apart; none was "
               "marked missing in this run")
        report_problems(ctx, [why], True, "sync")
    elif spec.on_missing is not None:
        field_id, value = spec.on_missing
        target = _normal(entity.field(field_id), value)
        gone = [(key, row) for key, row in existing.items()
                if key not in seen and _stored(entity.field(field_id), row._mapping[field_id]) != target]
        for key, row in gone:
            if write(f"record {row.id} (key {key!r}, missing upstream)", lambda r=row: records.update(
                    conn, built, spec.entity, r.id, {field_id: value}, actor, r.row_version)):
                counts["missing"] += 1
            if ctx is not None and spec.skip_invalid:
                ctx.checkpoint()
    return counts


# -- the job type ---------------------------------------------------------------------------------------

class ConnectorSync(JobType):
    name = "connector_sync"
    label = "Connector sync: upsert a connector's items into an entity by external key"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["connector", "entity", "key"],
        "additionalProperties": False,
        "properties": {
            "connector": {"type": "string", "minLength": 1, "maxLength": 64},
            "entity": {"type": "string", "minLength": 1, "maxLength": 64},
            "key": {"type": "string", "minLength": 1, "maxLength": 63,
                    "description": "a unique entity field holding the upstream id"},
            "mapping": {"type": "object", "description": "default: the connector config's mapping"},
            "on_missing": _ON_MISSING,
            "skip_invalid": {"type": "boolean"},
            "allow_empty": {"type": "boolean"},
        },
    }

    def definition_errors(self, app_def: AppDef, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        from keel.connectors.mapping import mapping_problems

        out: list[tuple[str, str]] = []
        if not app_def.known("connector", params["connector"]):
            out.append(("/connector", f"no connector '{params['connector']}' in app '{app_def.id}'"))
        elif params["connector"] in app_def.definitions_of("connector"):
            out += [("/connector", f"connectors/{params['connector']}.json: {p}")
                    for p in connector_problems(app_def, params["connector"])]
        if not app_def.known("entity", params["entity"]):
            return out + [("/entity", f"no entity '{params['entity']}' in app '{app_def.id}'")]
        entity = app_def.entities.get(params["entity"])
        if entity is None:  # its file is broken, and reported as such
            return out
        key = entity.field(params["key"])
        if key is None or not key.unique:
            out.append(("/key", f"'{params['key']}' must be a unique field of entity '{entity.id}'"))
        mapping = self._mapping(app_def, params)
        if not mapping:
            out.append(("/mapping", "give a mapping here or in the connector's config"))
        if mapping:
            out += [("/mapping", p) for p in mapping_problems(mapping)]
        for fid in mapping or {}:
            f = entity.field(fid)
            if f is None or f.computed:
                out.append((f"/mapping/{fid}", f"no writable field '{fid}' in entity '{entity.id}'"))
        if mapping and params["key"] not in mapping:
            out.append(("/mapping", f"the key field '{params['key']}' must be mapped"))
        missing = params.get("on_missing", "ignore")
        if missing != "ignore" and entity.field(missing["field"]) is None:
            out.append(("/on_missing/field", f"no field '{missing['field']}' in entity '{entity.id}'"))
        return out

    @staticmethod
    def _mapping(app_def: AppDef, params: Mapping[str, Any]) -> dict[str, Any] | None:
        if params.get("mapping"):
            return dict(params["mapping"])
        d = app_def.definitions_of("connector").get(params["connector"])
        return thaw(d.data).get("config", {}).get("mapping") if d is not None else None

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        from keel.storage.permissions import allowed_scope, can_create

        entity = ctx.built.definition.entities.get(params["entity"])
        if entity is None:
            return f"no entity '{params['entity']}' in app '{ctx.app_id}'"
        if not can_create(entity, ctx.actor) or allowed_scope(entity, ctx.actor, "update") == "none":
            return f"user '{ctx.actor.username}' may not create and update {ctx.app_id}/{entity.id}"
        return None

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        built = ctx.built
        mapping = self._mapping(built.definition, params)
        if not mapping:
            raise JobFailed("no mapping: give one in the job's params or the connector's config")
        missing = params.get("on_missing", "ignore")
        spec = EntitySync(params["entity"], params["key"], mapping,
                          None if missing == "ignore" else (missing["field"], missing["value"]),
                          params.get("skip_invalid", True), params.get("allow_empty", False))
        # Fetch before the first statement on ctx.conn: the chunk's transaction starts there.
        try:
            items = fetch_items(built.definition, params["connector"], values=run_values(ctx))
        except SyncError as exc:
            raise JobFailed(str(exc)) from None
        try:
            return sync_entity(ctx.conn, built, spec, items, ctx.actor, ctx)
        except SyncError as exc:
            raise JobFailed(str(exc)) from None
