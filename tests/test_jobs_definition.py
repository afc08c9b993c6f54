"""Job definitions and schedules, without a database: the checks of `jobs/*.json`, cron read in the
definition's time zone, and the idempotency keys that make a period run once."""
from __future__ import annotations

import datetime as dt

from helpers_registries import REGISTRIES
from keel.definitions.errors import DefinitionErrors
from keel.definitions.loader import load_bundle
from keel.definitions.model import AppDef
from keel.hooks import hookimpl
from keel.jobs import schedule
from keel.jobs.definition import job_spec
from keel.jobs.types import JobType
from keel.plugins import PluginHost

UTC = dt.UTC
SHANGHAI = schedule.zone("Asia/Shanghai")


def app_bundle(**jobs: dict) -> dict:
    from keel.definitions.loader import read_bundle
    from test_jobs_helpers import TRACKER

    base = read_bundle(TRACKER, REGISTRIES)
    base = {k: v for k, v in base.items() if not k.startswith("jobs/")}
    return {**base, **{f"jobs/{jid}.json": {"id": jid, **body} for jid, body in jobs.items()}}


def app_with_jobs(**jobs: dict) -> AppDef:
    return load_bundle(app_bundle(**jobs), REGISTRIES)


def errors_of(**jobs: dict) -> list[str]:
    """The job files' errors, as `keel app validate` reports them (the jobs kind checks each file against
    the installed job types)."""
    try:
        app_with_jobs(**jobs)
    except DefinitionErrors as e:
        return [str(x) for x in e.errors if x.file.startswith("jobs/")]
    return []


KNOWN_TYPES = ", ".join(sorted(REGISTRIES.job_types))


def test_a_valid_definition_has_no_errors_and_gets_its_defaults():
    body = {"type": "touch_records", "cron": "0 2 1 * *", "timezone": "Asia/Shanghai",
            "params": {"entity": "project"}, "idempotency": "snap-{scheduled:%Y-%m}", "catch_up": "all",
            "retries": {"max": 3, "backoff_seconds": [60, 300, 900]}, "run_as": "mia"}
    assert errors_of(snapshot=body) == []
    spec = job_spec("tracker", app_with_jobs(snapshot=body).definitions_of("job")["snapshot"])
    assert (spec.max_attempts, spec.backoff_seconds, spec.timeout_seconds) == (4, (60, 300, 900), 600)
    plain = job_spec("tracker", app_with_jobs(d={"type": "diagnostic"}).definitions_of("job")["d"])
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
        # the schema's findings come in the same run as the job checks'
        "jobs/bad.json: /retries/jitter: unknown key 'jitter'; allowed here: backoff_seconds, max",
        "jobs/bad.json: /retries/max: 50 is greater than the maximum of 20",
        "jobs/bad.json: /retries/backoff_seconds/1: 'soon' is not of type 'integer'",
        "jobs/bad.json: /idempotency: %c is not allowed in a key template",
        "jobs/bad.json: /catch_up: must be one of latest, all, none",
        "jobs/bad.json: /chunk_size: must be a whole number from 1",
        "jobs/bad.json: /run_as: must be a username",
        f"jobs/unknown.json: /type: unknown job type 'no_such_type' (known: {KNOWN_TYPES})",
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


def test_the_host_refuses_bad_job_type_names_and_two_plugins_claiming_one_name():
    class A(JobType):
        name = "same"

    class B(JobType):
        name = "same"

    class Bad(JobType):
        name = "Not Valid"

    class First:
        @hookimpl
        def keel_job_types(self):
            return [A()]

    class Second:
        @hookimpl
        def keel_job_types(self):
            return [B()]

    class Broken:
        @hookimpl
        def keel_job_types(self):
            return [Bad()]

    host = PluginHost.load(None, entry_points=False, extra=[("first", First()), ("second", Second()),
                                                            ("broken", Broken())])
    assert type(host.registries().job_types["same"]) is A
    errors = {f.name: f.error for f in host.failures}
    assert errors["second"] == "job type 'same' is already registered by plugin 'first'; this one is ignored"
    assert "needs a `name` of lower-case letters" in errors["broken"]


def test_builtin_types_come_through_the_plugin_hook():
    host = PluginHost.load(None, entry_points=False)
    jobs = next(p for p in host.plugins if p.name == "keel.jobs")
    assert jobs.registers["job type"] == ["diagnostic", "touch_records"]
    assert jobs.registers["definition kind"] == ["job"]
    assert host.owner("job_types", "workflow_timers") == "keel.workflow"
