"""Run the benchmarks: `python bench/run.py [NAME ...]` (all by default). Each bench/bench_*.py module
has `run()` returning one result or a list of results; each is printed as one JSON line:
{"bench": NAME, "figures": {...}, "budget": {...}, "within_budget": true|false|null}."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def main(argv: list[str]) -> int:
    found = modules()
    wanted = argv or list(found)
    unknown = [n for n in wanted if n not in found]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(found)}", file=sys.stderr)
        return 2
    failed = False
    for name in wanted:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", found[name])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        results = module.run()
        for r in results if isinstance(results, list) else [results]:
            print(json.dumps(r, ensure_ascii=False), flush=True)
            failed |= r.get("within_budget") is False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
