"""Validate and load a 50-entity definition (budget: < 300 ms)."""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

TYPES = [("text", {"max_length": 100}), ("integer", {"min": 0}), ("money", {"currency": "CNY"}),
         ("date", {}), ("select", {"options": [{"id": "a", "zh": "甲", "en": "A"}, {"id": "b", "zh": "乙", "en": "B"}]}),
         ("boolean", {}), ("decimal", {"scale": 2}), ("long_text", {}), ("percent", {}), ("datetime", {})]


def write_app(root: Path, entities: int = 50) -> Path:
    app = root / "big"
    (app / "entities").mkdir(parents=True)
    (app / "forms").mkdir()
    (app / "app.json").write_text(json.dumps({"id": "big", "version": "1", "label": {"zh": "大", "en": "Big"},
                                              "roles": [{"id": "staff", "label": {"zh": "员工", "en": "Staff"}}]}))
    for i in range(entities):
        fields = [{"id": f"f{j}_{t}", "type": t, "label": {"zh": f"字段{j}", "en": f"Field {j}"}, **extra}
                  for j, (t, extra) in enumerate(TYPES)]
        if i:
            fields.append({"id": "up", "type": "link", "entity": f"e{i - 1}", "label": {"zh": "上级", "en": "Up"}})
        (app / "entities" / f"e{i}.json").write_text(json.dumps({
            "id": f"e{i}", "label": {"zh": f"实体{i}", "en": f"Entity {i}"}, "fields": fields,
            "permissions": [{"role": "staff", "read": "all", "create": True, "update": "own"}]}))
        (app / "forms" / f"e{i}.json").write_text(json.dumps({
            "id": f"e{i}", "entity": f"e{i}", "label": {"zh": "表单", "en": "Form"},
            "fields": [{"field": f["id"]} for f in fields[:5]]}))
    return app


def run() -> dict:
    from keel.definitions.loader import load_app_dir
    from keel.plugins import builtin_registries

    with tempfile.TemporaryDirectory() as tmp:
        app = write_app(Path(tmp))
        load_app_dir(app, builtin_registries())  # first load builds the cached validators, as a server start does
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            d = load_app_dir(app, builtin_registries())
            times.append((time.perf_counter() - t0) * 1000)
        assert len(d.entities) == 50
    median = statistics.median(times)
    return {"bench": "definitions_load_50_entities", "figures": {"median_ms": round(median, 1),
            "max_ms": round(max(times), 1), "entities": 50, "fields": 50 * 10 + 49},
            "budget": {"median_ms": 300}, "within_budget": median < 300}


if __name__ == "__main__":
    print(json.dumps(run()))
