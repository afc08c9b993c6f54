"""Schemathesis over /api/v1/openapi.json with an admin token, on SQLite and PostgreSQL: whatever it
sends — valid requests and deliberately invalid ones — no answer is a 5xx (`not_a_server_error`).

A real server on 127.0.0.1 (Werkzeug, threaded) serves the app the other bad-input tests use (the
tracker app and an entity with computed fields). The run is bounded in time: KEEL_FUZZ_SECONDS per
database (default 15), shared by every operation in both generation modes; examples are derandomised
so the suite is repeatable. Set KEEL_FUZZ_RANDOM=1 (and a larger KEEL_FUZZ_SECONDS) to explore."""
from __future__ import annotations

import os
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from live_server import serve  # noqa: E402
from test_bad_input import make_hard_world  # noqa: E402

SECONDS = float(os.environ.get("KEEL_FUZZ_SECONDS", "15"))
RANDOM = os.environ.get("KEEL_FUZZ_RANDOM") == "1"
EXAMPLES = 25 if not RANDOM else 1000  # per operation and mode; the time budget usually ends it first


def _seed(w) -> None:
    """A few records, so ids in generated requests sometimes exist and reads return rows."""
    for name in ("Apollo", "Gemini"):
        w.post("/api/v1/apps/tracker/project", {"name": name, "budget": "10.00", "score": 3})
    w.post("/api/v1/apps/tracker/calc", {"title": "one", "n": 3, "target": "14", "actual": "4"})


def _exercise(operation, mode, base: str, admin: dict, deadline: float, tried: dict, failures: list):
    """Hypothesis runs this operation in this mode: requests until `deadline` (at least one)."""
    key = (operation.label, mode.value)
    tried[key] = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def exercise(case):
        if tried[key] and time.monotonic() > deadline:
            return
        tried[key] += 1
        response = case.call(base_url=base, headers=admin, timeout=120)  # a limit for hangs only
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=admin)
        except Exception as failure:  # noqa: BLE001 - every failure is reported by the test
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                            f"{response.text[:300]}\n  {case.as_curl_command(headers=admin)[:600]}\n"
                            f"  {type(failure).__name__}: {str(failure)[:300]}")

    exercise()


def test_no_request_to_the_api_gets_a_server_error(tmp_path, db_url):
    w = make_hard_world(tmp_path, db_url)
    _seed(w)
    admin = {"Authorization": f"Bearer {w.tokens['admin']}"}
    failures: list[str] = []
    tried: dict[tuple[str, str], int] = {}
    started = time.monotonic()
    try:
        with serve(w.app) as base:
            schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", headers=admin)
            operations = [result.ok() for result in schema.get_all_operations()]
            assert operations, "the OpenAPI document lists no operations"
            runs = [(operation, mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                    for operation in operations]
            for n, (operation, mode) in enumerate(runs, 1):
                # Each (operation, mode) gets its share of the budget and at least one request, so a
                # slow machine tries every operation with fewer examples instead of leaving some out.
                _exercise(operation, mode, base, admin, started + SECONDS * n / len(runs), tried, failures)
    finally:
        w.engine.dispose()
    elapsed = time.monotonic() - started
    print(f"schemathesis: {len(operations)} operations, {sum(tried.values())} requests in {elapsed:.1f} s, "
          f"{len(failures)} server errors")
    assert not failures, "\n".join(failures[:20])
    assert all(tried.values()), [k for k, v in tried.items() if not v]
