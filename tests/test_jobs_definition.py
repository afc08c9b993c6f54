"""Job definitions and schedules, without a database: the checks of `jobs/*.json`, cron read in the
definition's time zone, and the idempotency keys that make a period run once."""
from __future__ import annotations

import datetime as dt
from types import MappingProxyType

import pytest

from keel.definitions.model import AppDef, Definition, freeze
from keel.jobs import schedule
from keel.jobs.definition import job_definition_errors, job_spec
from keel.jobs.types import JobType, JobTypeRegistry, collect_job_types

UTC = dt.UTC
SHANGHAI = schedule.zone("Asia/Shanghai")


def app_with_jobs(**jobs: dict) -> AppDef:
    from keel.definitions.loader import load_app_dir
    from test_jobs_helpers import TRACKER

    base = load_app_dir(TRACKER)
    defs = {jid: Definition(jid, "job", f"jobs/{jid}.json", freeze({"id": jid, **body})) for jid, body in jobs.items()}
    return AppDef(id=base.id, version=base.version, label=base.label, roles=base.roles, settings=base.settings,
                  entities=base.entities, forms=base.forms, workflows=base.workflows, dashboards=base.dashboards,
                  jobs=MappingProxyType(defs), connectors=base.connectors)


TYPES = collect_job_types()


def errors_of(**jobs: dict) -> list[str]:
    return [str(e) for e in job_definition_errors(app_with_jobs(**jobs), TYPES)]


def test_a_valid_definition_has_no_errors_and_gets_its_defaults():
    body = {"type": "touch_records", "cron": "0 2 1 * *", "timezone": "Asia/Shanghai",
            "params": {"entity": "project"}, "idempotency": "snap-{scheduled:%Y-%m}", "catch_up": "all",
            "retries": {"max": 3, "backoff_seconds": [60, 300, 900]}, "run_as": "mia"}
    assert errors_of(snapshot=body) == []
    spec = job_spec("tracker", app_with_jobs(snapshot=body).jobs["snapshot"])
    assert (spec.max_attempts, spec.backoff_seconds, spec.timeout_seconds) == (4, (60, 300, 900), 600)
    plain = job_spec("tracker", app_with_jobs(d={"type": "diagnostic"}).jobs["d"])
    assert (plain.idempotency, plain.catch_up, plain.timezone, plain.cron) == ("run", "latest", "UTC", None)


def test_every_problem_of_a_definition_is_reported_at_once_with_its_place():
    errors = errors_of(
        bad={"type": "touch_records", "cron": "0 25 * * *", "timezone": "Mars/Olympus",
             "params": {"entity": "project", "work_rounds": -1, "extra": 1},
             "retries": {"max": 50, "backoff_seconds": [10, "soon"], "jitter": True},
             "idempotency": "x-{scheduled:%c}", "catch_up": "some", "chunk_size": 0, "run_as": "no spaces"},
        unknown={"type": "no_such_type", "params": {}},
        wrong_entity={"type": "touch_records", "params": {"entity": "invoice"}},
        never={"type": "diagnostic", "cron": "0 2 30 2 *"},
        period_without_cron={"type": "diagnostic", "idempotency": "period"},
    )
    expected = [
        "jobs/bad.json: /cron: not a valid cron expression: '0 25 * * *'",
        "jobs/bad.json: /timezone: unknown time zone 'Mars/Olympus'",
        "jobs/bad.json: /params: Additional properties are not allowed ('extra' was unexpected)",
        "jobs/bad.json: /params/work_rounds: -1 is less than the minimum of 0",
        "jobs/bad.json: /retries: unknown key(s): jitter",
        "jobs/bad.json: /retries/max: must be a whole number from 0 to 20",
        "jobs/bad.json: /retries/backoff_seconds/1: must be a whole number of seconds",
        "jobs/bad.json: /idempotency: %c is not allowed in a key template",
        "jobs/bad.json: /catch_up: must be one of latest, all, none",
        "jobs/bad.json: /chunk_size: must be a whole number from 1",
        "jobs/bad.json: /run_as: must be a username",
        "jobs/unknown.json: /type: unknown job type 'no_such_type' (known: diagnostic, touch_records)",
        "jobs/wrong_entity.json: /params/entity: no entity 'invoice' in app 'tracker'",
        "jobs/never.json: /cron: cron expression '0 2 30 2 *' never fires",
        "jobs/period_without_cron.json: /idempotency: 'period' needs a cron schedule",
    ]
    for line in expected:
        assert any(e.startswith(line) for e in errors), f"missing: {line}\nin: {errors}"
    assert len(errors) == len(expected)


def test_the_monthly_02_00_in_shanghai_fires_at_18_00_utc_the_day_before():
    before = dt.datetime(2025, 10, 31, 17, 0, tzinfo=UTC)
    nxt = schedule.next_fire("0 2 1 * *", "Asia/Shanghai", before)
    assert nxt == dt.datetime(2025, 10, 31, 18, 0, tzinfo=UTC)
    assert nxt.astimezone(SHANGHAI) == dt.datetime(2025, 11, 1, 2, 0, tzinfo=SHANGHAI)
    # Read in UTC the same cron string would be eight hours later: the zone matters.
    assert schedule.next_fire("0 2 1 * *", "UTC", before) == dt.datetime(2025, 11, 1, 2, 0, tzinfo=UTC)


def test_due_times_lists_missed_fire_times_oldest_first_and_caps_them():
    after = dt.datetime(2025, 11, 1, 0, 30, tzinfo=UTC)
    until = dt.datetime(2025, 11, 1, 5, 0, tzinfo=UTC)  # includes a fire time exactly at `until`
    times, truncated = schedule.due_times("0 * * * *", "UTC", after, until, cap=100)
    assert [t.hour for t in times] == [1, 2, 3, 4, 5] and not truncated
    times, truncated = schedule.due_times("* * * * *", "UTC", after, until, cap=10)
    assert len(times) == 10 and truncated and times[-1] == until
    assert schedule.due_times("0 * * * *", "UTC", until, until, cap=10) == ([], False)


def test_idempotency_keys_name_the_period_in_the_job_time_zone():
    fire = dt.datetime(2025, 10, 31, 18, 0, tzinfo=UTC)  # 2025-11-01 02:00 in Shanghai
    assert schedule.idempotency_key("period", "Asia/Shanghai", fire, manual=False) == "at:2025-11-01T02:00+08:00"
    assert schedule.idempotency_key("snap-{scheduled:%Y-%m}", "Asia/Shanghai", fire, manual=False) == "snap-2025-11"
    assert schedule.idempotency_key("snap-{scheduled:%Y-%m}", "UTC", fire, manual=False) == "snap-2025-10"
    manual = {schedule.idempotency_key("run", "UTC", None, manual=True) for _ in range(3)}
    assert len(manual) == 3  # every manual run of a `run` job is its own run


def test_registry_refuses_bad_names_and_two_types_claiming_one_name():
    class A(JobType):
        name = "same"

    class B(JobType):
        name = "same"

    class Bad(JobType):
        name = "Not Valid"

    registry = JobTypeRegistry([A()])
    registry.register(A())  # the same type twice (a host registering built-ins again) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(B())
    with pytest.raises(ValueError, match="must be lower-case"):
        registry.register(Bad())
    assert registry.names() == ["same"]


def test_builtin_types_come_through_the_plugin_hook():
    import pluggy

    from keel.jobs import builtin_types

    pm = pluggy.PluginManager("keel")

    class Specs:
        @pluggy.HookspecMarker("keel")
        def keel_job_types(self):
            """job types"""

    class Extra(JobType):
        name = "extra"

    class Plugin:
        @pluggy.HookimplMarker("keel")
        def keel_job_types(self):
            return [Extra()]

    pm.add_hookspecs(Specs)
    pm.register(builtin_types)
    pm.register(Plugin())
    assert collect_job_types(pm).names() == ["diagnostic", "extra", "touch_records"]
