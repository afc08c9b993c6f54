"""The org directory: departments (a tree with a head each), users (with roles, a department and a
direct superior) and the Actor a request acts as. HR sync and the approver rules of workflows build on
these functions; every write checks that the actor is an administrator and records an audit event on
the caller's connection, so the change and its event commit together."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from keel.actor import Actor
from keel.auth.passwords import hash_password, password_problems
from keel.auth.sessions import end_all_sessions
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.i18n import LOCALES
from keel.storage.audit import record_event, utcnow
from keel.storage.system import api_tokens, audit_events, departments, record_versions, user_roles, users

# fullmatch, not match with "$": "$" also matches before a trailing newline.
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,150}")
DEPARTMENT_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ROLE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A manager chain longer than this is a data error (a cycle someone typed into HR); stop walking.
MAX_CHAIN = 64


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("only an administrator may change the org directory")


# ---- reading -------------------------------------------------------------------------------------

def find_user(conn: sa.Connection, username: str) -> sa.Row | None:
    """The user row for a username. Usernames are unique regardless of case, so "Alice" finds "alice";
    the exact spelling is tried first because it can use the unique index."""
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        return None
    row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    if row is None:
        row = conn.execute(sa.select(users).where(
            sa.func.lower(users.c.username) == username.lower())).first()
    return row


def get_user(conn: sa.Connection, user_id: int) -> sa.Row | None:
    return conn.execute(sa.select(users).where(users.c.id == user_id)).first()


def find_department(conn: sa.Connection, code: str) -> sa.Row | None:
    if not isinstance(code, str):
        return None
    return conn.execute(sa.select(departments).where(departments.c.code == code)).first()


def roles_of(conn: sa.Connection, user_id: int) -> frozenset[str]:
    return frozenset(conn.execute(sa.select(user_roles.c.role).where(user_roles.c.user_id == user_id))
                     .scalars())


def get_actor(conn: sa.Connection, user_id: int) -> Actor | None:
    """The Actor for a user, read fresh (one query, roles joined) so a role change or a deactivation
    counts on the very next request. None when the user does not exist or is inactive."""
    rows = conn.execute(
        sa.select(users.c.username, users.c.is_admin, users.c.active, users.c.department_id,
                  users.c.locale, user_roles.c.role)
        .select_from(users.outerjoin(user_roles, user_roles.c.user_id == users.c.id))
        .where(users.c.id == user_id)).all()
    if not rows or not rows[0].active:
        return None
    first = rows[0]
    return Actor(user_id=user_id, username=first.username,
                 roles=frozenset(r.role for r in rows if r.role is not None),
                 is_admin=bool(first.is_admin), department_id=first.department_id, locale=first.locale)


def department_head(conn: sa.Connection, code: str) -> int | None:
    """The active head of a department (approver rule `{"rule": "department", "pick": "head"}`)."""
    row = conn.execute(
        sa.select(users.c.id).select_from(departments.join(users, users.c.id == departments.c.head_id))
        .where(departments.c.code == code, users.c.active.is_(True))).first()
    return row.id if row else None


def manager_of(conn: sa.Connection, user_id: int) -> int | None:
    """A user's direct superior: the explicit manager when set and active; otherwise the head of the
    user's department, or (when the user heads it, or it has no head) of the nearest ancestor
    department with a head other than the user. None at the top of the organisation."""
    row = conn.execute(sa.select(users.c.manager_id, users.c.department_id)
                       .where(users.c.id == user_id)).first()
    if row is None:
        return None
    if row.manager_id is not None and _is_active(conn, row.manager_id):
        return row.manager_id
    dept_id, seen = row.department_id, set()
    while dept_id is not None and dept_id not in seen:
        seen.add(dept_id)
        dept = conn.execute(sa.select(departments.c.head_id, departments.c.parent_id)
                            .where(departments.c.id == dept_id)).first()
        if dept is None:
            return None
        if dept.head_id is not None and dept.head_id != user_id and _is_active(conn, dept.head_id):
            return dept.head_id
        dept_id = dept.parent_id
    return None


def manager_chain(conn: sa.Connection, user_id: int) -> list[int]:
    """The superiors of a user, nearest first (for escalation). Stops at a cycle."""
    chain, seen, current = [], {user_id}, user_id
    while len(chain) < MAX_CHAIN:
        boss = manager_of(conn, current)
        if boss is None or boss in seen:
            break
        chain.append(boss)
        seen.add(boss)
        current = boss
    return chain


def _is_active(conn: sa.Connection, user_id: int) -> bool:
    return bool(conn.execute(sa.select(users.c.active).where(users.c.id == user_id)).scalar())


# ---- validation ----------------------------------------------------------------------------------

def _check_text(errors: FieldErrors, field: str, value, max_len: int, required: bool) -> None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add(field, "This field is required.")
        return
    if not isinstance(value, str):
        errors.add(field, "Must be text.")
    elif len(value) > max_len:
        errors.add(field, "Must be at most %(max)s characters long.", max=max_len)


def _check_roles(errors: FieldErrors, roles) -> tuple[str, ...]:
    # A bare string would iterate as its letters and grant roles "a", "d", "m" ...
    if isinstance(roles, str) or not isinstance(roles, Iterable):
        errors.add("roles", "Roles must be a list of role names.")
        return ()
    roles = tuple(roles)
    bad = [r for r in roles if not isinstance(r, str) or not ROLE.fullmatch(r)]
    if bad:
        errors.add("roles", "Invalid role name %(role)s: use letters, digits, '_', '.' or '-' "
                            "(at most 64).", role=repr(bad[0]))
        return ()
    return tuple(sorted(set(roles)))


def _check_username_free(conn: sa.Connection, errors: FieldErrors, username) -> None:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        errors.add("username", "Username must be 1 to 150 characters: letters, digits, "
                               "'_', '.', '@' or '-'.")
    elif find_user(conn, username) is not None:
        errors.add("username", "The username %(username)s is already taken.", username=username)


def _resolve_user(conn, errors: FieldErrors, field: str, username) -> int | None:
    if username is None:
        return None
    row = find_user(conn, username)
    if row is None or not row.active:
        errors.add(field, "No active user named %(username)s.", username=str(username))
        return None
    return row.id


def _resolve_department(conn, errors: FieldErrors, field: str, code) -> int | None:
    if code is None:
        return None
    row = find_department(conn, code)
    if row is None:
        errors.add(field, "No department with code %(code)s.", code=str(code))
        return None
    return row.id


# ---- writing -------------------------------------------------------------------------------------

def add_department(conn: sa.Connection, code: str, name: str, actor: Actor, parent_code: str | None = None,
                   head_username: str | None = None, name_en: str | None = None) -> int:
    _require_admin(actor)
    errors = FieldErrors()
    if not isinstance(code, str) or not DEPARTMENT_CODE.fullmatch(code):
        errors.add("code", "Department code must be 1 to 64 characters: letters, digits, '_', '.' or '-'.")
    elif find_department(conn, code) is not None:
        errors.add("code", "A department with code %(code)s already exists.", code=code)
    _check_text(errors, "name", name, 200, required=True)
    _check_text(errors, "name_en", name_en, 200, required=False)
    parent_id = _resolve_department(conn, errors, "parent_code", parent_code)
    head_id = _resolve_user(conn, errors, "head_username", head_username)
    if errors:
        raise errors
    dept_id = conn.execute(departments.insert().values(
        code=code, name=name.strip(), name_en=(name_en or "").strip() or None, parent_id=parent_id,
        head_id=head_id)).inserted_primary_key[0]
    record_event(conn, actor, "department.add", detail={
        "department_id": dept_id, "code": code, "name": name, "parent": parent_code, "head": head_username})
    return dept_id


def set_department_head(conn: sa.Connection, code: str, head_username: str | None, actor: Actor) -> None:
    """Heads are often users of the department itself, so they are set after both exist."""
    _require_admin(actor)
    errors = FieldErrors()
    dept_id = _resolve_department(conn, errors, "code", code)
    head_id = _resolve_user(conn, errors, "head_username", head_username)
    if errors:
        raise errors
    conn.execute(departments.update().where(departments.c.id == dept_id).values(head_id=head_id))
    record_event(conn, actor, "department.head", detail={"code": code, "head": head_username})


def add_user(conn: sa.Connection, username: str, display_name: str, actor: Actor, password: str | None = None,
             roles: Iterable[str] = (), department_code: str | None = None,
             manager_username: str | None = None, is_admin: bool = False, email: str | None = None,
             locale: str | None = None) -> int:
    """Create a user; every problem with the input is reported at once as FieldErrors (nothing is
    written then). Without a password the user cannot log in with one (tokens or SSO only)."""
    _require_admin(actor)
    errors = FieldErrors()
    _check_username_free(conn, errors, username)
    _check_text(errors, "display_name", display_name, 200, required=True)
    if password is not None:
        for problem in password_problems(password):
            errors.errors.setdefault("password", []).append(problem)
    role_list = _check_roles(errors, roles)
    department_id = _resolve_department(conn, errors, "department_code", department_code)
    manager_id = _resolve_user(conn, errors, "manager_username", manager_username)
    if email is not None and (not isinstance(email, str) or len(email) > 320 or "@" not in email
                              or any(c.isspace() for c in email)):
        errors.add("email", "Not a valid e-mail address.")
    if locale is not None and locale not in LOCALES:
        errors.add("locale", "Unknown locale %(locale)s (use one of %(known)s).", locale=str(locale),
                   known=", ".join(LOCALES))
    if not isinstance(is_admin, bool):
        errors.add("is_admin", "Must be true or false.")
    if errors:
        raise errors
    user_id = conn.execute(users.insert().values(
        username=username, display_name=display_name.strip(), email=email,
        password_hash=hash_password(password) if password is not None else None,
        department_id=department_id, manager_id=manager_id, locale=locale, is_admin=is_admin,
        created_at=utcnow())).inserted_primary_key[0]
    if role_list:
        conn.execute(user_roles.insert(), [{"user_id": user_id, "role": r} for r in role_list])
    record_event(conn, actor, "user.add", detail={
        "user_id": user_id, "username": username, "roles": list(role_list), "department": department_code,
        "manager": manager_username, "is_admin": is_admin, "has_password": password is not None})
    return user_id


def _existing_user(conn: sa.Connection, user_id: int) -> sa.Row:
    row = get_user(conn, user_id)
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    return row


def set_roles(conn: sa.Connection, user_id: int, roles: Iterable[str], actor: Actor) -> None:
    """Replace a user's roles. Bumps auth_version so anything cached for the old roles is dropped."""
    _require_admin(actor)
    user = _existing_user(conn, user_id)
    errors = FieldErrors()
    role_list = _check_roles(errors, roles)
    if errors:
        raise errors
    before = sorted(roles_of(conn, user_id))
    conn.execute(user_roles.delete().where(user_roles.c.user_id == user_id))
    if role_list:
        conn.execute(user_roles.insert(), [{"user_id": user_id, "role": r} for r in role_list])
    _bump_auth_version(conn, user_id)
    record_event(conn, actor, "user.roles", detail={
        "user_id": user_id, "username": user.username, "before": before, "after": list(role_list)})


def set_password(conn: sa.Connection, user_id: int, password: str, actor: Actor) -> None:
    """Set a new password (admin reset, or the CLI). The policy's problems come back as FieldErrors.
    Every page session of the user ends (whoever knew the old password is signed out); API tokens are
    credentials of their own and stay until revoked."""
    _require_admin(actor)
    user = _existing_user(conn, user_id)
    problems = password_problems(password)
    if problems:
        raise FieldErrors({"password": problems})
    conn.execute(users.update().where(users.c.id == user_id).values(password_hash=hash_password(password)))
    ended = end_all_sessions(conn, user_id)
    _bump_auth_version(conn, user_id)
    record_event(conn, actor, "user.password", detail={"user_id": user_id, "username": user.username,
                                                       "sessions_ended": ended})


def deactivate_user(conn: sa.Connection, user_id: int, actor: Actor) -> None:
    """A deactivated user can no longer log in; every token and page session of theirs ends at once, for
    good (reactivating does not bring them back). The row stays: records, versions and audit events still
    name who did what."""
    _require_admin(actor)
    user = _existing_user(conn, user_id)
    now = utcnow()
    conn.execute(users.update().where(users.c.id == user_id).values(active=False))
    revoked = conn.execute(api_tokens.update()
                           .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
                           .values(revoked_at=now)).rowcount
    ended = end_all_sessions(conn, user_id, now)
    _bump_auth_version(conn, user_id)
    record_event(conn, actor, "user.deactivate", at=now, detail={
        "user_id": user_id, "username": user.username, "tokens_revoked": revoked, "sessions_ended": ended})


def _bump_auth_version(conn: sa.Connection, user_id: int) -> None:
    conn.execute(users.update().where(users.c.id == user_id)
                 .values(auth_version=users.c.auth_version + 1))


# ---- synced directories (HR master data) ---------------------------------------------------------

def reactivate_user(conn: sa.Connection, user_id: int, actor: Actor) -> None:
    """Undo a deactivation (a person back in the HR system). Tokens revoked and sessions ended then stay
    so: the person signs in again."""
    _require_admin(actor)
    user = _existing_user(conn, user_id)
    conn.execute(users.update().where(users.c.id == user_id).values(active=True))
    _bump_auth_version(conn, user_id)
    record_event(conn, actor, "user.reactivate", detail={"user_id": user_id, "username": user.username})


def record_directory_history(conn: sa.Connection, actor: Actor, entity: str,
                             changes: Sequence[tuple[int, str, dict[str, list]]], *, audit: bool = True,
                             source: str | None = None, at: dt.datetime | None = None) -> None:
    """History for org directory rows as entity records have it: per (row id, action, {column: [before,
    after]}) a keel_record_versions row (app "keel", entity "user" or "department", version = the row's
    previous version + 1) and, with `audit`, an audit event `<entity>.<action>` naming the version and
    the changed columns (the values are in the version row). Written in bulk (executemany) on the
    caller's connection, because a sync changes thousands of rows at once."""
    _require_admin(actor)
    if entity not in ("user", "department"):
        raise ValueError(f"entity must be 'user' or 'department', not {entity!r}")
    if not changes:
        return
    at = at or utcnow()
    rv = record_versions.c
    ids = sorted({record_id for record_id, _, _ in changes})
    latest: dict[int, int] = {}
    for i in range(0, len(ids), 500):  # only these rows' versions: a sync records thousands, batch by batch
        latest.update(conn.execute(sa.select(rv.record_id, sa.func.max(rv.version))
                                   .where(rv.app == "keel", rv.entity == entity, rv.record_id.in_(ids[i:i + 500]))
                                   .group_by(rv.record_id)).all())
    versions, events = [], []
    for record_id, action, diff in changes:
        version = latest.get(record_id, 0) + 1
        latest[record_id] = version
        versions.append({"app": "keel", "entity": entity, "record_id": record_id, "version": version,
                         "action": action, "changes": diff, "user_id": actor.user_id, "at": at})
        # The shape record_event writes, many at once.
        events.append({"at": at, "user_id": actor.user_id, "action": f"{entity}.{action}", "app": None,
                       "entity": None, "record_id": None,
                       "detail": {"by": actor.username, f"{entity}_id": record_id, "version": version,
                                  "fields": sorted(diff), **({"source": source} if source else {})}})
    conn.execute(record_versions.insert(), versions)
    if audit:
        conn.execute(audit_events.insert(), events)


# ---- administering the org (CLI `keel dept`, REST /departments, the admin pages) -----------------

def list_departments(conn: sa.Connection) -> list[dict]:
    """Every department with its parent's code, its head and how many active people it has, in
    tree order (parents before children, siblings by code)."""
    head = users.alias("head")
    parent = departments.alias("parent")
    members = (sa.select(users.c.department_id, sa.func.count().label("n"))
               .where(users.c.active.is_(True)).group_by(users.c.department_id).subquery())
    rows = conn.execute(
        sa.select(departments.c.id, departments.c.code, departments.c.name, departments.c.name_en,
                  departments.c.active, departments.c.external_key, parent.c.code.label("parent"),
                  head.c.username.label("head"), head.c.display_name.label("head_name"),
                  sa.func.coalesce(members.c.n, 0).label("members"))
        .select_from(departments.outerjoin(parent, parent.c.id == departments.c.parent_id)
                     .outerjoin(head, head.c.id == departments.c.head_id)
                     .outerjoin(members, members.c.department_id == departments.c.id))
        .order_by(departments.c.code)).mappings().all()
    children: dict[str | None, list[dict]] = {}
    for r in rows:
        children.setdefault(r["parent"], []).append(dict(r))
    out: list[dict] = []

    def walk(code: str | None, depth: int) -> None:
        for d in children.get(code, []):
            if len(out) > len(rows):  # a cycle typed into the data: stop rather than loop
                return
            out.append({**d, "depth": depth})
            walk(d["code"], depth + 1)

    walk(None, 0)
    placed = {d["code"] for d in out}
    out += [{**dict(r), "depth": 0} for r in rows if r["code"] not in placed]  # under a cycle
    return out


def move_users(conn: sa.Connection, usernames: Sequence[str], department_code: str, actor: Actor,
               manager_username: str | None = None) -> list[int]:
    """Move people into a department. Their explicit superior is replaced by `manager_username`, or
    cleared so that they report to the new department's head (see `manager_of`): a superior kept from
    the old department would route their approvals there. All or nothing: any unknown name or
    department is reported (every problem at once) and nobody moves."""
    _require_admin(actor)
    errors = FieldErrors()
    if isinstance(usernames, str) or not usernames:
        errors.add("users", "Name at least one user.")
        usernames = []
    dept_id = _resolve_department(conn, errors, "department", department_code)
    manager_id = _resolve_user(conn, errors, "manager", manager_username)
    rows = []
    for name in usernames:
        row = find_user(conn, name) if isinstance(name, str) else None
        if row is None:
            errors.add("users", "No user named %(username)s.", username=str(name)[:150])
        elif manager_id is not None and row.id == manager_id:
            errors.add("manager", "%(username)s cannot be their own superior.", username=row.username)
        else:
            rows.append(row)
    if errors:
        raise errors
    ids = []
    for row in rows:
        conn.execute(users.update().where(users.c.id == row.id)
                     .values(department_id=dept_id, manager_id=manager_id,
                             auth_version=users.c.auth_version + 1))
        ids.append(row.id)
        before = conn.execute(sa.select(departments.c.code).where(departments.c.id == row.department_id)) \
            .scalar() if row.department_id is not None else None
        record_event(conn, actor, "user.move", detail={
            "user_id": row.id, "username": row.username, "from": before, "to": department_code,
            "manager": manager_username})
    return ids


def list_users(conn: sa.Connection, q: str | None = None, department: str | None = None,
               limit: int = 100) -> list[dict]:
    """Users by username with department code, superior, roles and whether they have a password or
    come from a synced directory; `q` matches part of the username or display name."""
    manager = users.alias("manager")
    query = (sa.select(users.c.id, users.c.username, users.c.display_name, users.c.email, users.c.active,
                       users.c.is_admin, users.c.external_key, departments.c.code.label("department"),
                       manager.c.username.label("manager"),
                       (users.c.password_hash.is_not(None)).label("has_password"))
             .select_from(users.outerjoin(departments, departments.c.id == users.c.department_id)
                          .outerjoin(manager, manager.c.id == users.c.manager_id))
             .order_by(users.c.username).limit(limit))
    if q:
        like = f"%{q.strip().lower()[:100]}%"
        query = query.where(sa.or_(sa.func.lower(users.c.username).like(like),
                                   sa.func.lower(users.c.display_name).like(like)))
    if department:
        query = query.where(departments.c.code == department)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    roles: dict[int, list[str]] = {}
    if rows:
        for uid, role in conn.execute(sa.select(user_roles.c.user_id, user_roles.c.role)
                                      .where(user_roles.c.user_id.in_([r["id"] for r in rows]))
                                      .order_by(user_roles.c.role)):
            roles.setdefault(uid, []).append(role)
    for r in rows:
        r["roles"] = roles.get(r["id"], [])
        r["synced"] = r.pop("external_key") is not None
    return rows
