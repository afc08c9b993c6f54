"""Benchmark: adding one field to an entity table that already holds 100,000 rows, through the same
path `keel app apply` takes (lock, plan against the database, ALTER TABLE, store, audit). Adding a
nullable column must not rewrite or touch the rows, so this stays fast however large the table is."""
from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROWS = 100_000
BUDGET_SECONDS = 2.0
BATCH = 10_000


def _bundle(fields: list[dict], version: str) -> dict:
    return {"app.json": {"id": "bench", "version": version, "label": "Bench"},
            "entities/item.json": {"id": "item", "label": "Item", "fields": fields}}


def run() -> dict:
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.definitions.loader import load_bundle
    from keel.plugins import builtin_registries
    from keel.storage.db import create_engine
    from keel.storage.tables import app_tables

    fields = [{"id": "title", "type": "text", "max_length": 200}, {"id": "qty", "type": "integer"},
              {"id": "price", "type": "money"}]
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{Path(folder) / 'bench.db'}")
        try:
            v1 = load_bundle(_bundle(fields, "1"), builtin_registries())
            apply_app(engine, v1, SYSTEM)
            table = app_tables(v1)[1]["item"]
            now = dt.datetime.now(dt.UTC)
            with engine.begin() as conn:
                for start in range(0, ROWS, BATCH):   # executemany, in batches to bound memory
                    conn.execute(table.insert(), [
                        {"created_at": now, "updated_at": now, "title": f"item {i}", "qty": i,
                         "price": i % 1000} for i in range(start, start + BATCH)])

            v2 = load_bundle(_bundle(fields + [{"id": "note", "type": "long_text"}], "2"), builtin_registries())
            started = time.perf_counter()
            result = apply_app(engine, v2, SYSTEM)
            seconds = time.perf_counter() - started

            with engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            if count != ROWS or not result.changed:
                raise RuntimeError(f"the sync lost rows or did nothing: {count} rows, {result}")
        finally:
            engine.dispose()
    return {"bench": "schema_sync_add_field", "figures": {"rows": count, "seconds": round(seconds, 4)},
            "budget": {"seconds": BUDGET_SECONDS}, "within_budget": seconds < BUDGET_SECONDS}


if __name__ == "__main__":
    outcome = run()
    print(json.dumps(outcome))
    sys.exit(0 if outcome["within_budget"] else 1)
