"""The job type `hr.sync_directory`: read people (and departments) from a connector, bring the org
directory in line (directory_sync.py).

    {"id": "hr_sync", "type": "hr.sync_directory", "cron": "0 3 * * *", "timezone": "Asia/Shanghai",
     "params": {"connector": "hr_directory",
                "users": {"external_key": "emp_id", "username": "login", "display_name": "name",
                          "email": {"path": "email", "required": false},
                          "department_code": "dept_code", "manager_key": {"path": "manager_id", "required": false}},
                "departments": {"mapping": {"code": "dept_code", "name": "dept_name",
                                            "parent_code": {"path": "parent_dept", "required": false}}},
                "default_roles": ["employee"]}}

`departments.connector` names a connector of its own (an HR API's departments endpoint); without it the
departments are read from the people's items (a CSV export with department columns on every row).

One chunk: the snapshot is fetched before the chunk's transaction begins (see keel.connectors.sync), and
the directory is written in batches committed as they go (directory_sync.py says why and how a stopped
sync is finished by the next); with skip_invalid false, in one transaction, so any problem leaves the
directory as it was.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from keel.auth.directory import ROLE
from keel.connectors.mapping import MAPPING_SCHEMA, mapping_problems
from keel.connectors.sync import SyncError, connector_problems, fetch_items, report_problems, run_values
from keel.jobs.types import JobContext, JobFailed, JobType
from keel_hr.directory_sync import DirectorySync, Options
from keel_hr.snapshot import (
    DEPARTMENT_FIELDS,
    DEPARTMENT_REQUIRED,
    USER_FIELDS,
    USER_REQUIRED,
    read_departments,
    read_people,
)

_PATH = MAPPING_SCHEMA["additionalProperties"]
_CONNECTOR = {"type": "string", "minLength": 1, "maxLength": 64}


def _mapping_schema(fields: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "additionalProperties": False,
            "properties": {f: _PATH for f in fields}}


class SyncDirectory(JobType):
    name = "hr.sync_directory"
    label = "HR master data: sync users, departments and managers into the org directory"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["connector", "users"],
        "additionalProperties": False,
        "properties": {
            "connector": _CONNECTOR,
            "users": _mapping_schema(USER_FIELDS, USER_REQUIRED),
            "departments": {"type": "object", "required": ["mapping"], "additionalProperties": False,
                            "properties": {"connector": _CONNECTOR,
                                           "mapping": _mapping_schema(DEPARTMENT_FIELDS, DEPARTMENT_REQUIRED)}},
            "default_roles": {"type": "array", "uniqueItems": True, "maxItems": 50,
                              "items": {"type": "string", "pattern": ROLE.pattern.join("^$")},
                              "description": "roles of a new person when `users.roles` is not mapped"},
            "skip_invalid": {"type": "boolean", "description": "skip bad items (default) or fail the run"},
            "allow_empty": {"type": "boolean", "description": "accept an empty source (deactivates everyone)"},
            "deactivate_missing": {"type": "boolean", "description": "deactivate who vanished (default true)"},
        },
    }

    def definition_errors(self, app_def, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        connectors = [("/connector", params["connector"])]
        if "connector" in params.get("departments", {}):
            connectors.append(("/departments/connector", params["departments"]["connector"]))
        for ptr, cid in connectors:
            if not app_def.known("connector", cid):
                out.append((ptr, f"no connector '{cid}' in app '{app_def.id}'"))
            elif cid in app_def.definitions_of("connector"):  # not a broken file, which is reported on its own
                out += [(ptr, f"connectors/{cid}.json: {p}") for p in connector_problems(app_def, cid)]
        out += [("/users", p) for p in mapping_problems(params["users"])]
        if "departments" in params:
            out += [("/departments/mapping", p) for p in mapping_problems(params["departments"]["mapping"])]
        return out

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        if not ctx.actor.is_admin:
            return "only an administrator may change the org directory"
        return None

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        app_def = ctx.built.definition
        departments = params.get("departments")
        # Everything upstream is read before the first statement on ctx.conn opens the transaction.
        try:
            people_items = fetch_items(app_def, params["connector"], values=run_values(ctx))
            dept_items = people_items
            if departments and departments.get("connector"):
                dept_items = fetch_items(app_def, departments["connector"], values=run_values(ctx))
        except SyncError as exc:
            raise JobFailed(str(exc)) from None
        ctx.progress(0, len(people_items))
        people = read_people(people_items, params["users"])
        depts = read_departments(dept_items, departments["mapping"]) if departments else None
        skip_invalid = params.get("skip_invalid", True)
        options = Options(tuple(params.get("default_roles", ())), params.get("deactivate_missing", True),
                          params.get("allow_empty", False))
        # With skip_invalid false any problem must leave the directory as it was: one transaction.
        sync = DirectorySync(ctx.conn, ctx.actor, options,
                             lambda problems: report_problems(ctx, problems, skip_invalid, "HR item(s)"),
                             checkpoint=ctx.checkpoint if skip_invalid else None,
                             reader=ctx.engine if skip_invalid else None)
        try:
            counts = sync.run(people, depts)
        except SyncError as exc:
            raise JobFailed(str(exc)) from None
        ctx.progress(len(people_items), len(people_items))
        return counts
