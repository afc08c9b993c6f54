"""A job definition (`jobs/<id>.json`) read into a `JobSpec`, and the checks the generic JSON Schema
cannot make: the type is known, the params fit the type's params schema, the cron string parses and
fires, the time zone exists, the retries and idempotency make sense.

    {"id": "monthly_snapshot", "type": "snapshot", "label": {...},
     "cron": "0 2 1 * *", "timezone": "Asia/Shanghai",
     "timeout_seconds": 600, "retries": {"max": 3, "backoff_seconds": [60, 300, 900]},
     "idempotency": "period" | "run" | "snapshot-{scheduled:%Y-%m}",
     "catch_up": "latest" | "all" | "none", "chunk_size": 1000,
     "params": {...}, "run_as": "username", "enabled": true}
"""
from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from keel.definitions.errors import DefinitionError, pointer
from keel.definitions.model import AppDef, Definition, Label, thaw
from keel.jobs import schedule

DEFAULT_TIMEZONE = "UTC"
DEFAULT_TIMEOUT = 600
DEFAULT_RETRIES = {"max": 2, "backoff_seconds": [30, 300]}
CATCH_UP = ("latest", "all", "none")
MAX_CHUNK_SIZE = 1_000_000
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,150}")


@dataclass(frozen=True)
class JobSpec:
    app_id: str
    id: str
    file: str
    type: str
    label: Label
    cron: str | None
    timezone: str
    timeout_seconds: int
    max_retries: int
    backoff_seconds: tuple[float, ...]
    idempotency: str
    catch_up: str
    chunk_size: int | None
    params: Mapping[str, Any]
    run_as: str | None
    enabled: bool

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_retries

    def options(self) -> dict[str, Any]:
        """What a run keeps of its definition (stored with the run)."""
        return {"timeout_seconds": self.timeout_seconds, "max_attempts": self.max_attempts,
                "backoff_seconds": list(self.backoff_seconds), "chunk_size": self.chunk_size,
                "run_as": self.run_as, "timezone": self.timezone, "catch_up": self.catch_up}


def job_spec(app_id: str, definition: Definition) -> JobSpec:
    """The spec of a job definition that passed `job_definition_errors` (defaults filled in)."""
    d = definition.data
    retries = d.get("retries") or {}
    cron = d.get("cron")
    return JobSpec(
        app_id=app_id, id=definition.id, file=definition.file, type=d["type"],
        label=Label.parse(thaw(d.get("label")), definition.id), cron=cron,
        timezone=d.get("timezone") or DEFAULT_TIMEZONE,
        timeout_seconds=int(d.get("timeout_seconds") or DEFAULT_TIMEOUT),
        max_retries=int(retries.get("max", DEFAULT_RETRIES["max"])),
        backoff_seconds=tuple(retries.get("backoff_seconds", DEFAULT_RETRIES["backoff_seconds"])),
        idempotency=d.get("idempotency") or ("period" if cron else "run"),
        catch_up=d.get("catch_up") or "latest", chunk_size=d.get("chunk_size"),
        params=thaw(d.get("params") or {}), run_as=d.get("run_as"), enabled=d.get("enabled", True))


def app_job_specs(app_def: AppDef) -> dict[str, JobSpec]:
    return {job_id: job_spec(app_def.id, d) for job_id, d in sorted(app_def.definitions_of("job").items())}


def _params_validator(job_type) -> Draft202012Validator:
    return Draft202012Validator(dict(job_type.params_schema), format_checker=FormatChecker())


def params_errors(job_type, params: Any) -> list[tuple[str, str]]:
    """(JSON pointer inside params, message) for every way `params` breaks the type's schema."""
    errors = []
    for e in sorted(_params_validator(job_type).iter_errors(params), key=lambda e: list(e.absolute_path)):
        errors.append((pointer(*e.absolute_path), e.message))
    return errors


def job_definition_errors(app, definition: Definition) -> list[DefinitionError]:
    """Every problem of one job definition, as `file: /pointer: message`, checked against the job types
    `app` was loaded with (`app`: the CheckContext of the app being validated, or an AppDef)."""
    return _errors_of(app, definition, app.registries.job_types)


def _errors_of(app_def, definition: Definition, job_types: Mapping[str, Any]) -> list[DefinitionError]:
    d, file = definition.data, definition.file
    errors: list[DefinitionError] = []

    def err(ptr: str, message: str) -> None:
        errors.append(DefinitionError(file, ptr, message))

    job_type = job_types.get(d.get("type")) if isinstance(d.get("type"), str) else None
    if job_type is None:
        err("/type", f"unknown job type '{d.get('type')}' (known: {', '.join(sorted(job_types)) or 'none'})")
    params = thaw(d.get("params", {}))
    if not isinstance(params, dict):
        err("/params", "params must be an object")
    elif job_type is not None:
        problems = params_errors(job_type, params)
        for ptr, message in problems:
            err("/params" + ptr, message)
        if not problems:
            for ptr, message in job_type.definition_errors(app_def, params):
                err("/params" + ptr, message)

    tz = d.get("timezone", DEFAULT_TIMEZONE)
    tz_ok = isinstance(tz, str) and _zone_exists(tz)
    if not tz_ok:
        err("/timezone", f"unknown time zone {tz!r} (use an IANA name such as 'Asia/Shanghai' or 'UTC')")
    cron = d.get("cron")
    if cron is not None:
        problem = schedule.cron_problem(cron, tz if tz_ok else DEFAULT_TIMEZONE)
        if problem:
            err("/cron", problem)
    elif "catch_up" in d:
        err("/catch_up", "catch_up only applies to a job with a cron schedule")

    timeout = d.get("timeout_seconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        err("/timeout_seconds", "must be a whole number of seconds from 1 to 86400")

    idem = d.get("idempotency", "period" if cron else "run")
    if not isinstance(idem, str):
        err("/idempotency", "must be 'period', 'run' or a key template such as 'x-{scheduled:%Y-%m}'")
    elif idem == "period" and cron is None:
        err("/idempotency", "'period' needs a cron schedule (use 'run' or a key template)")
    elif idem not in ("period", "run"):
        problem = schedule.key_template_problem(idem)
        if problem:
            err("/idempotency", problem)

    if d.get("catch_up", "latest") not in CATCH_UP:
        err("/catch_up", f"must be one of {', '.join(CATCH_UP)}")
    size = d.get("chunk_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 1 <= size <= MAX_CHUNK_SIZE):
        err("/chunk_size", f"must be a whole number from 1 to {MAX_CHUNK_SIZE}")
    run_as = d.get("run_as")
    if run_as is not None and (not isinstance(run_as, str) or not USERNAME.fullmatch(run_as)):
        err("/run_as", "must be a username (letters, digits, '_', '.', '@' or '-')")
    if not isinstance(d.get("enabled", True), bool):
        err("/enabled", "must be true or false")
    return errors


def _zone_exists(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
