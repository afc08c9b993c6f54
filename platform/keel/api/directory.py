"""The org directory over REST, for administrators: departments (create, set the head, move people in),
users (list, reset a password). Every write goes through `keel.auth.directory`, which checks the actor
and writes the audit event in the same transaction."""
from __future__ import annotations

import sqlalchemy as sa
from flask import request, url_for

from keel.api import bp
from keel.api.common import json_object, json_response, only_keys, runtime
from keel.auth import directory, require_admin
from keel.errors import FieldErrors, NotFound
from keel.storage.system import users

MAX_USERS = 500



def _department(conn, code: str) -> dict:
    for d in directory.list_departments(conn):
        if d["code"] == code:
            return d
    raise NotFound(f"no department with code {code}")


@bp.get("/departments")
def list_departments():
    """Every department in tree order, with its parent, head and number of active members.

    Responses:
        403: administrators only
    """
    require_admin()
    with runtime().engine.connect() as conn:
        return json_response({"items": directory.list_departments(conn)})


@bp.post("/departments")
def create_department():
    """Create a department (administrators only).

    Body:
        code (string, required): letters, digits, `_`, `.` or `-`; unique
        name (string, required): the name (Chinese)
        name_en (string): the English name
        parent (string): the parent department's code
        head (string): the username of the head
    Responses:
        201: the department, with `Location`
        403: administrators only
    """
    who = require_admin()
    data = only_keys(json_object(), ("code", "name", "name_en", "parent", "head"))
    with runtime().engine.begin() as conn:
        directory.add_department(conn, data.get("code"), data.get("name"), who, parent_code=data.get("parent"),
                                 head_username=data.get("head"), name_en=data.get("name_en"))
        body = _department(conn, data["code"])
    return json_response(body, 201, {"Location": url_for("api.get_department", code=data["code"])})


@bp.get("/departments/<code>")
def get_department(code: str):
    """One department with its members.

    Responses:
        403: administrators only
    """
    require_admin()
    with runtime().engine.connect() as conn:
        body = _department(conn, code)
        body["people"] = [dict(r) for r in conn.execute(
            sa.select(users.c.id, users.c.username, users.c.display_name)
            .where(users.c.department_id == body["id"], users.c.active.is_(True))
            .order_by(users.c.username)).mappings()]
    return json_response(body)


@bp.put("/departments/<code>/head")
def set_department_head(code: str):
    """Set (or clear, with `null`) the head of a department.

    Body:
        head (string): the username of the new head; null for none
    Responses:
        403: administrators only
    """
    who = require_admin()
    data = only_keys(json_object(), ("head",))
    with runtime().engine.begin() as conn:
        if directory.find_department(conn, code) is None:
            raise NotFound(f"no department with code {code}")
        directory.set_department_head(conn, code, data.get("head"), who)
        return json_response(_department(conn, code))


@bp.post("/departments/<code>/members")
def move_into_department(code: str):
    """Move people into a department; they report to its head unless a manager is given.

    All or nothing: an unknown user leaves everyone where they were.

    Body:
        users (array, required): usernames
        manager (string): the username of their new direct superior
    Responses:
        403: administrators only
    """
    who = require_admin()
    data = only_keys(json_object(), ("users", "manager"), ("users",))
    if not isinstance(data["users"], list):
        raise FieldErrors({"users": ["Must be a list of usernames."]})
    with runtime().engine.begin() as conn:
        if directory.find_department(conn, code) is None:
            raise NotFound(f"no department with code {code}")
        moved = directory.move_users(conn, data["users"], code, who, manager_username=data.get("manager"))
        return json_response({"moved": moved, "department": _department(conn, code)})


@bp.get("/users")
def list_users():
    """Users with their department, roles and state (administrators only).

    Query:
        q: part of a username or display name
        department: a department code
        limit (integer): at most this many (default 100, at most 500)
    Responses:
        403: administrators only
    """
    require_admin()
    errors = FieldErrors()
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_USERS:
        errors.add("limit", "Must be a whole number from 1 to %(max)s.", max=MAX_USERS)
    if errors:
        raise errors
    with runtime().engine.connect() as conn:
        return json_response({"items": directory.list_users(conn, request.args.get("q"),
                                                             request.args.get("department"), limit)})


@bp.post("/users/<username>/password")
def reset_password(username: str):
    """Set a new password for a user (synced users too); every page session of theirs ends.

    Body:
        password (string, required): the new password (the password policy applies)
    Responses:
        204: the password is set
        403: administrators only
    """
    who = require_admin()
    data = only_keys(json_object(), ("password",), ("password",))
    with runtime().engine.begin() as conn:
        row = directory.find_user(conn, username)
        if row is None:
            raise NotFound(f"no user named {username}")
        directory.set_password(conn, row.id, data["password"], who)
    return "", 204
