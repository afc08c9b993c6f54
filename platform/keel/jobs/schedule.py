"""Cron in the definition's time zone, and the idempotency key of a run.

Cron strings are read in the job's own time zone (the demo's monthly snapshot fires at 02:00 in
Asia/Shanghai, which is 18:00 UTC the day before); every time leaving this module is in UTC."""
from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo

from croniter import croniter

from keel.jobs.clock import utc

# A generous look-back for finding missed fire times; beyond it a job is treated as never fired.
KEY_PLACEHOLDER = re.compile(r"\{scheduled:([^{}]*)\}")
# strftime directives that name a period; anything locale-dependent or platform-specific is refused.
SAFE_DIRECTIVES = set("YmdHMjGVuUWwy%")
MAX_KEY = 200


def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def cron_problem(expr: str, tz: str) -> str | None:
    """Why `expr` is not a usable five-field cron string (None when it is)."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        return "must be a cron expression of five fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(expr):
        return f"not a valid cron expression: {expr!r}"
    try:
        croniter(expr, dt.datetime.now(zone(tz))).get_next(dt.datetime)
    except Exception:  # croniter gives up searching: e.g. "0 2 30 2 *" (30 February)
        return f"cron expression {expr!r} never fires"
    return None


def next_fire(expr: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after `after`, in UTC."""
    return utc(croniter(expr, utc(after).astimezone(zone(tz))).get_next(dt.datetime))


def due_times(expr: str, tz: str, after: dt.datetime, until: dt.datetime, cap: int
              ) -> tuple[list[dt.datetime], bool]:
    """Fire times in (after, until], oldest first, at most the `cap` most recent; and whether older
    ones were left out because of the cap. Walks backwards from `until`, so a long downtime of an
    every-minute job costs `cap` steps, not one per missed minute."""
    after, until = utc(after), utc(until)
    # croniter's get_prev is exclusive of its start; a microsecond later includes `until` itself.
    it = croniter(expr, (until + dt.timedelta(microseconds=1)).astimezone(zone(tz)))
    found: list[dt.datetime] = []
    while True:
        t = utc(it.get_prev(dt.datetime))
        if t <= after:
            return list(reversed(found)), False
        if len(found) == cap:
            return list(reversed(found)), True
        found.append(t)


def latest_fire(expr: str, tz: str, at: dt.datetime) -> dt.datetime:
    """The last fire time at or before `at` (the period a manual run of a `period` job belongs to)."""
    it = croniter(expr, (utc(at) + dt.timedelta(microseconds=1)).astimezone(zone(tz)))
    return utc(it.get_prev(dt.datetime))


def key_template_problem(template: str) -> str | None:
    if not KEY_PLACEHOLDER.search(template):
        return ("must be 'period', 'run' or a key template with a {scheduled:FORMAT} placeholder, "
                "e.g. 'snapshot-{scheduled:%Y-%m}'")
    rest = KEY_PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        return "the only placeholder a key template may use is {scheduled:FORMAT}"
    for fmt in KEY_PLACEHOLDER.findall(template):
        for directive in re.findall(r"%(.)", fmt):
            if directive not in SAFE_DIRECTIVES:
                return (f"%{directive} is not allowed in a key template "
                        f"(use %{', %'.join(sorted(SAFE_DIRECTIVES - {'%'}))})")
    if len(template) > MAX_KEY // 2:
        return f"a key template may be at most {MAX_KEY // 2} characters long"
    return None


def idempotency_key(policy: str, tz: str, scheduled_for: dt.datetime | None, manual: bool) -> str:
    """The key that makes a run happen once.

    - `period`: the fire time it belongs to (a manual run takes the latest fire time), so a period
      runs once however many schedulers or admins ask;
    - `run`: a scheduled run is still keyed by its fire time (two schedulers must not both run it),
      a manual run gets a fresh key every time;
    - a template: `{scheduled:%Y-%m}` and the like, formatted in the job's time zone."""
    if policy == "run" and (manual or scheduled_for is None):
        return f"manual:{uuid.uuid4().hex}"
    assert scheduled_for is not None
    local = utc(scheduled_for).astimezone(zone(tz))
    if policy in ("period", "run"):
        return "at:" + local.isoformat(timespec="minutes")
    return KEY_PLACEHOLDER.sub(lambda m: local.strftime(m.group(1)), policy)[:MAX_KEY]
