"""The Goal Agility rules an admin changes in `app.json` → `settings` (live after `keel app apply`: every
function here reads the app version the caller holds, never a copy made at start-up).

    "revision":  {"flagged_only": false}          only goals flagged red (h-measure's `flag` field)
    "cascade":   {"derived_children": "resplit" | "confirm"}   children with a target_share
    "revision_guard": {"max_revisions": 3, "window_months": 6, "ticket_owner": {"department": "strategy"}}
    "lead_time_targets": {"approval_days": 2}      the case's average approval time
    "cascade_hours": 24                            approval → everyone notified

Who may request is the revision workflow's `starts_on.who`; the fields only an approval changes are the goal
fields marked `"changed_by": "workflow"` (both general engine features, in the definition files).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

APP = "goal_agility"


def _settings(built) -> Mapping[str, Any]:
    return getattr(built.definition, "settings", None) or {}


def _section(built, key: str) -> Mapping[str, Any]:
    value = _settings(built).get(key)
    return value if isinstance(value, Mapping) else {}


def flagged_only(built) -> bool:
    return bool(_section(built, "revision").get("flagged_only", False))


def derived_children(built) -> str:
    mode = _section(built, "cascade").get("derived_children", "resplit")
    return mode if mode in ("resplit", "confirm") else "resplit"


def guard_limits(built) -> tuple[int, int]:
    g = _section(built, "revision_guard")
    return int(g.get("max_revisions", 3)), int(g.get("window_months", 6))


def ticket_owner_department(built) -> str:
    owner = _section(built, "revision_guard").get("ticket_owner")
    return str(owner.get("department", "strategy")) if isinstance(owner, Mapping) else "strategy"


def approval_target_days(built) -> float:
    return float(_section(built, "lead_time_targets").get("approval_days", 2))


def notify_target_hours(built) -> float:
    return float(_settings(built).get("cascade_hours", 24))
