"""The job types Keel ships, registered through the same `keel_job_types` hook a plugin uses (jobs/plugin.py).

- `diagnostic`: counts to `items` in chunks, optionally sleeping and failing its first attempts. It
  checks a deployment end to end (scheduler, queue, workers, retries) without touching any data.
- `touch_records`: reads every record of an entity the acting user may read, chunk by chunk (id
  ranges), with optional per-record work; each chunk's counts are its result row. Used by the
  benchmark and as a template for jobs over records.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.jobs.types import JobContext, JobType

DEFAULT_CHUNK_SIZE = 1000


class DiagnosticFailure(Exception):
    """Raised on purpose by `diagnostic` (params.fail_attempts) to exercise retries."""


class Diagnostic(JobType):
    name = "diagnostic"
    label = "Diagnostic: count items in chunks (checks workers and retries)"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "items": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
            "sleep_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
            "sleep_attempts": {"type": "integer", "minimum": 0, "maximum": 20,
                               "description": "sleep only on the first N attempts of a chunk (default: all)"},
            "fail_attempts": {"type": "integer", "minimum": 0, "maximum": 20,
                              "description": "the first N attempts of every chunk fail halfway"},
        },
        "additionalProperties": False,
    }

    def plan(self, ctx: JobContext, params: Mapping[str, Any]) -> list[Any]:
        items = params.get("items", 1)
        size = ctx.chunk_size or DEFAULT_CHUNK_SIZE
        return [{"start": i, "stop": min(i + size, items)} for i in range(0, items, size)]

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        n = chunk["stop"] - chunk["start"]
        ctx.progress(0, n)
        if ctx.attempt <= params.get("sleep_attempts", ctx.attempt):
            time.sleep(params.get("sleep_seconds", 0))
        if ctx.attempt <= params.get("fail_attempts", 0):
            raise DiagnosticFailure(f"diagnostic failure on attempt {ctx.attempt} "
                                    f"(fail_attempts={params['fail_attempts']})")
        ctx.progress(n, n)
        return {"items": n}


class TouchRecords(JobType):
    name = "touch_records"
    label = "Touch records: read every record of an entity in chunks and count them"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["entity"],
        "properties": {
            "entity": {"type": "string", "minLength": 1, "maxLength": 64},
            "work_rounds": {"type": "integer", "minimum": 0, "maximum": 10_000,
                            "description": "SHA-256 rounds per record: simulated per-record work"},
        },
        "additionalProperties": False,
    }

    def definition_errors(self, app_def, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        entity = params.get("entity")
        if isinstance(entity, str) and not app_def.known("entity", entity):
            return [("/entity", f"no entity '{entity}' in app '{app_def.id}'")]
        return []

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        from keel.storage.permissions import allowed_scope

        entity = ctx.built.definition.entities.get(params["entity"])
        if entity is None:
            return f"no entity '{params['entity']}' in app '{ctx.app_id}'"
        if allowed_scope(entity, ctx.actor, "read") == "none":
            return f"user '{ctx.actor.username}' may not read {ctx.app_id}/{entity.id}"
        return None

    def _table_and_filter(self, ctx: JobContext, params: Mapping[str, Any]):
        from keel.storage.query import read_condition

        built = ctx.built
        entity, table = built.entity(params["entity"]), built.table(params["entity"])
        return table, read_condition(table, entity, ctx.actor)

    def plan(self, ctx: JobContext, params: Mapping[str, Any]) -> list[Any]:
        table, readable = self._table_and_filter(ctx, params)
        lo, hi = ctx.conn.execute(sa.select(sa.func.min(table.c.id), sa.func.max(table.c.id))
                                  .where(readable)).one()
        if lo is None:
            return []
        size = ctx.chunk_size or DEFAULT_CHUNK_SIZE
        return [{"from_id": start, "to_id": min(start + size, hi + 1)} for start in range(lo, hi + 1, size)]

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        table, readable = self._table_and_filter(ctx, params)
        rounds = params.get("work_rounds", 0)
        rows = ctx.conn.execute(sa.select(table).where(
            readable, table.c.id >= chunk["from_id"], table.c.id < chunk["to_id"]).order_by(table.c.id))
        count = 0
        for row in rows:
            digest = repr(tuple(row)).encode()
            for _ in range(rounds):
                digest = hashlib.sha256(digest).digest()
            count += 1
        return {"records": count}

