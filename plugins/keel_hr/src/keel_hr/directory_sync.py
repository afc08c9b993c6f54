"""Bringing the org directory (keel_users, keel_departments) in line with an HR snapshot.

Rows are matched by external key; a row without one whose username (users) or code (departments) is
the upstream one is adopted, so a directory typed in by hand joins the sync instead of clashing with it.
The whole directory is read once and compared in memory; only rows whose synced columns differ are
written, in bulk, each change with a version row and an audit event (`record_directory_history`) in the
same batch. A repeated sync with no upstream change therefore writes nothing at all.

Order matters: departments exist (with their parents) before people join them; a new hire is written
after their manager when the manager is a new hire too (waves), so their one "create" version names the
manager; heads are set once everyone exists; someone gone from upstream is deactivated (their tokens
revoked), never deleted; is_admin and passwords are never touched (synced people log in through SSO or
tokens: no password is hashed here).

Writes go in batches of `BATCH` rows, and `checkpoint` (the job's `JobContext.checkpoint`) may commit
between them: on SQLite one writer holds the database at a time, and a sync of 200,000 people written in
one transaction stalled every user for as long. Each batch carries its own history, so whatever was
committed is complete; a sync that stops half-way is finished by the next one, which writes only what
still differs. With skip_invalid false the caller commits nothing until the end (no checkpoint), and
any problem rolls everything back.

A reference that cannot be resolved (an unknown department, a manager who is not upstream, a parent that
would make a cycle) leaves that one value unchanged and is reported; an item whose own values are wrong
is skipped and reported.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.auth.directory import deactivate_user, reactivate_user, record_directory_history
from keel.connectors.sync import SyncError
from keel.storage.audit import utcnow
from keel.storage.system import departments, user_roles, users

USER_COLUMNS = ("username", "display_name", "email", "department_id", "manager_id", "external_key")
DEPARTMENT_COLUMNS = ("code", "name", "name_en", "parent_id", "head_id", "external_key")
SOURCE = "hr.sync_directory"
BATCH = 500

Report = Callable[[list[str]], None]
Change = tuple[int, str, dict]   # (row id, action, {column: [before, after]})


@dataclass(frozen=True)
class Options:
    default_roles: tuple[str, ...] = ()
    deactivate_missing: bool = True
    allow_empty: bool = False


def _bulk_update(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[dict]) -> None:
    """UPDATE ... WHERE id = ? for many rows at once (executemany): every row gives every column."""
    if rows:
        stmt = table.update().where(table.c.id == sa.bindparam("_id")).values(
            {c: sa.bindparam(f"_{c}") for c in columns})
        conn.execute(stmt, [{"_id": r["id"], **{f"_{c}": r[c] for c in columns}} for r in rows])


def _diff(before: Mapping[str, Any] | None, after: Mapping[str, Any], columns) -> dict[str, list]:
    return {c: [None if before is None else before.get(c), after.get(c)] for c in columns
            if (None if before is None else before.get(c)) != after.get(c)}


def _batches(rows: list, size: int = BATCH) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


class DirectorySync:
    def __init__(self, conn: sa.Connection, actor: Actor, options: Options, report: Report,
                 checkpoint: Callable[[], None] | None = None, reader: sa.Engine | None = None):
        """`checkpoint` may commit between batches; `reader` (with it) reads the directory on a connection
        of its own, so that reading it (seconds, for 200,000 people) takes no write lock."""
        self.conn, self.actor, self.options, self.report = conn, actor, options, report
        self.checkpoint = checkpoint or (lambda: None)
        self.reader = reader
        self.problems: list[str] = []
        self.done: dict[tuple[str, str], set[int]] = {}   # (entity, action) -> row ids
        self.now = utcnow()

    # -- reading ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        with self.reader.connect() if self.reader is not None else nullcontext(self.conn) as c:
            self._read(c)

    def _read(self, c: sa.Connection) -> None:
        self.users = {r.id: dict(r._mapping) for r in c.execute(sa.select(
            users.c.id, users.c.active, *(users.c[n] for n in USER_COLUMNS)))}
        self.roles: dict[int, tuple[str, ...]] = {}
        for uid, role in c.execute(sa.select(user_roles.c.user_id, user_roles.c.role).order_by(user_roles.c.role)):
            self.roles[uid] = (*self.roles.get(uid, ()), role)
        self.depts = {r.id: dict(r._mapping) for r in c.execute(sa.select(
            departments.c.id, departments.c.active, *(departments.c[n] for n in DEPARTMENT_COLUMNS)))}

    # -- the whole sync --------------------------------------------------------------------------------
    def run(self, people, depts) -> dict[str, int]:
        self._load()
        synced = [u for u in self.users.values() if u["external_key"] is not None and u["active"]]
        if not people.items and synced and not self.options.allow_empty:
            raise SyncError(f"the HR source returned no people; refusing to deactivate all {len(synced)} "
                            "synced users (set allow_empty to sync an empty source)")
        self.problems += people.problems + (depts.problems if depts else [])
        self.report(list(self.problems))
        if depts is not None:
            self._departments(depts)
        self._users(people)
        if depts is not None:
            self._department_heads(depts, people)
        return self._counts(people)

    def _counts(self, people) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entity in ("department", "user"):
            done = {action: self.done.get((entity, action), set())
                    for action in ("create", "update", "deactivate", "reactivate")}
            # A row created in this run and then linked (a department's head, a manager in a cycle of new
            # hires) counts as created, not also as updated.
            done["update"] = done["update"] - done["create"]
            for action, ids in done.items():
                counts[f"{entity}s_{action}d"] = len(ids)
        touched = set().union(*(ids for (entity, _), ids in self.done.items() if entity == "user"))
        counts["users_unchanged"] = sum(1 for _, _, after in self.plans if after["id"] not in touched)
        counts["items"] = len(people.items)
        counts["problems"] = len(self.problems)
        return counts

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self.report([text])

    def _history(self, entity: str, changes: list[Change], audit: bool = True) -> None:
        """Version rows (and audit events) for changes written in the current batch."""
        record_directory_history(self.conn, self.actor, entity, changes, audit=audit, source=SOURCE, at=self.now)
        for record_id, action, _ in changes:
            self.done.setdefault((entity, action), set()).add(record_id)

    # -- departments -----------------------------------------------------------------------------------
    def _departments(self, snap) -> None:
        """New and changed departments, then their parents (every department exists by then), with their
        history, in one batch: departments are few."""
        by_key = {d["external_key"]: d for d in self.depts.values() if d["external_key"] is not None}
        by_code = {d["code"]: d for d in self.depts.values()}
        claimed: dict[str, str] = {}
        new, changed = [], []
        for dept in sorted(snap.valid.values(), key=lambda d: d.index):
            v = dept.values
            row = by_key.get(dept.key)
            if row is None and v["code"] in by_code and by_code[v["code"]]["external_key"] is None:
                row = by_code[v["code"]]
            holder = by_code.get(v["code"])
            if (holder is not None and holder is not row) or v["code"] in claimed:
                self._problem(f"item {dept.index}: department code {v['code']!r} is already taken by another "
                              "department; skipped")
                continue
            claimed[v["code"]] = dept.key
            after = {**(row or {"parent_id": None, "head_id": None, "name_en": None}), "code": v["code"],
                     "name": v["name"], "external_key": dept.key}
            if "name_en" in v:
                after["name_en"] = v["name_en"]
            if row is None:
                new.append(after)
            elif _diff(row, after, DEPARTMENT_COLUMNS) or not row["active"]:
                changed.append((row, after))
        if new:
            self.conn.execute(departments.insert(), [{c: d[c] for c in DEPARTMENT_COLUMNS} for d in new])
        _bulk_update(self.conn, departments, DEPARTMENT_COLUMNS[:3] + ("external_key",),
                     [{"id": r["id"], **a} for r, a in changed])
        reactivate = [r["id"] for r, _ in changed if not r["active"]]
        if reactivate:
            self.conn.execute(departments.update().where(departments.c.id.in_(reactivate)).values(active=True))
        changes: dict[int, tuple[str, dict]] = {}
        for r, a in changed:
            diff = _diff(r, a, DEPARTMENT_COLUMNS)
            if not r["active"]:
                diff["active"] = [False, True]
            changes[r["id"]] = ("update", diff)
        fresh = dict(self.conn.execute(sa.select(departments.c.external_key, departments.c.id)
                                       .where(departments.c.external_key.is_not(None))).all())
        for d in new:
            d["id"], d["active"] = fresh[d["external_key"]], True
            self.depts[d["id"]] = d
            changes[d["id"]] = ("create", _diff(None, d, DEPARTMENT_COLUMNS))
        for r, a in changed:
            self.depts[r["id"]] = {**r, **a, "active": True}
        self._department_links(snap, changes, "parent_code")
        self._history("department", [(i, a, d) for i, (a, d) in changes.items()])
        self.checkpoint()

    def _department_links(self, snap, changes: dict[int, tuple[str, dict]], link: str, people=None) -> None:
        """Set each department's parent (`parent_code`) or head (`head_key`) as upstream says; merged into
        `changes` (what this batch records)."""
        by_key = {d["external_key"]: d for d in self.depts.values() if d["external_key"] is not None}
        by_code = {d["code"]: d for d in self.depts.values()}
        parents = {d["id"]: d["parent_id"] for d in self.depts.values()}
        column = "parent_id" if link == "parent_code" else "head_id"
        updates = []
        for dept in sorted(snap.valid.values(), key=lambda d: d.index):
            row, v = by_key.get(dept.key), dept.values
            if row is None or link not in v:  # skipped above, or not synced
                continue
            if link == "parent_code":
                parent = by_code.get(v["parent_code"]) if v["parent_code"] else None
                if v["parent_code"] and parent is None:
                    self._problem(f"item {dept.index}: parent department {v['parent_code']!r} does not exist; "
                                  "parent left unchanged")
                    continue
                if self._makes_cycle(parents, row["id"], parent["id"] if parent else None):
                    self._problem(f"item {dept.index}: parent {v['parent_code']!r} would make a cycle; parent "
                                  "left unchanged")
                    continue
                value = parents[row["id"]] = parent["id"] if parent else None
            else:
                value = self.user_ids.get(v["head_key"]) if v["head_key"] else None
                if v["head_key"] and (value is None or v["head_key"] not in people.valid):
                    self._problem(f"item {dept.index}: head {v['head_key']!r} is not a person in the HR source; "
                                  "head left unchanged")
                    continue
            if row[column] != value:
                action, old = changes.get(row["id"], ("update", {}))
                changes[row["id"]] = (action, {**old, column: [row[column], value]})
                row[column] = value
                updates.append(row)
        _bulk_update(self.conn, departments, (column,), updates)

    def _department_heads(self, snap, people) -> None:
        """Heads once every person exists; then departments gone upstream."""
        changes: dict[int, tuple[str, dict]] = {}
        self._department_links(snap, changes, "head_key", people)
        self._history("department", [(i, a, d) for i, (a, d) in changes.items()])
        if snap.keyless or not self.options.deactivate_missing:
            self.checkpoint()
            return
        # Upstream departments and their ancestors stay: read from the people's rows, a parent with
        # nobody directly in it appears only as someone's parent.
        by_key = {d["external_key"]: d for d in self.depts.values() if d["external_key"] is not None}
        parents = {d["id"]: d["parent_id"] for d in self.depts.values()}
        kept: set[int] = set()
        for key in snap.seen:
            current = by_key[key]["id"] if key in by_key else None
            while current is not None and current not in kept:
                kept.add(current)
                current = parents.get(current)
        gone = [d for d in self.depts.values() if d["external_key"] is not None and d["active"]
                and d["id"] not in kept]
        if gone:
            self.conn.execute(departments.update().where(departments.c.id.in_([d["id"] for d in gone]))
                              .values(active=False))
            self._history("department", [(d["id"], "deactivate", {"active": [True, False]}) for d in gone])
        self.checkpoint()

    @staticmethod
    def _makes_cycle(parents: dict[int, int | None], dept_id: int, parent_id: int | None) -> bool:
        seen, current = {dept_id}, parent_id
        while current is not None:
            if current in seen:
                return True
            seen.add(current)
            current = parents.get(current)
        return False

    # -- people ----------------------------------------------------------------------------------------
    def _users(self, snap) -> None:
        self.plans = self._plan_users(snap)
        # external key -> user id: the keyed rows and the adopted ones; new people join as they are written.
        self.user_ids = {u["external_key"]: u["id"] for u in self.users.values() if u["external_key"] is not None}
        self.user_ids.update({p.key: row["id"] for p, row, _ in self.plans if row is not None})
        late = self._insert_new(snap, [(p, after) for p, row, after in self.plans if row is None])
        self._update_existing(snap, [(p, row, after) for p, row, after in self.plans if row is not None] + late)
        self._lifecycle(snap)

    def _plan_users(self, snap) -> list[tuple[Any, dict | None, dict]]:
        """(person, current row or None, the row as upstream wants it), for every person that can be
        synced; the manager is resolved later, once every new person has an id."""
        by_key = {u["external_key"]: u for u in self.users.values() if u["external_key"] is not None}
        by_name = {u["username"].lower(): u for u in self.users.values()}
        dept_ids = {d["code"]: d["id"] for d in self.depts.values()}
        claimed: set[str] = set()
        plans = []
        for p in sorted(snap.valid.values(), key=lambda p: p.index):
            v, name = p.values, p.values["username"].lower()
            row = by_key.get(p.key)
            if row is None and name in by_name and by_name[name]["external_key"] is None:
                row = by_name[name]
            holder = by_name.get(name)
            if (holder is not None and holder is not row) or name in claimed:
                self._problem(f"item {p.index} (external key {p.key!r}): username {v['username']!r} is taken by "
                              "another user; skipped")
                continue
            claimed.add(name)
            after = dict(row) if row else {"email": None, "department_id": None, "manager_id": None}
            after.update(username=v["username"], display_name=v["display_name"], external_key=p.key)
            if "email" in v:
                after["email"] = v["email"]
            if "department_code" in v:
                code = v["department_code"]
                if code is not None and code not in dept_ids:
                    self._problem(f"item {p.index} (external key {p.key!r}): no department {code!r}; "
                                  "department left unchanged")
                else:
                    after["department_id"] = dept_ids.get(code) if code else None
            plans.append((p, row, after))
        return plans

    def _resolve_manager(self, snap, p, after: dict) -> None:
        mk = p.values.get("manager_key", ...)
        if mk is ...:
            return
        if mk is not None and (mk not in snap.valid or mk not in self.user_ids):
            why = "is not in the HR source" if mk not in snap.seen else "could not be synced"
            self._problem(f"item {p.index} (external key {p.key!r}): manager {mk!r} {why}; manager left unchanged")
        else:
            after["manager_id"] = self.user_ids[mk] if mk is not None else None

    def _roles_of(self, p, uid: int | None, is_new: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(roles before, roles upstream wants) of a person."""
        before = self.roles.get(uid, ()) if uid is not None else ()
        return before, tuple(p.values.get("roles", before if not is_new else self.options.default_roles))

    def _set_roles(self, role_sets: dict[int, tuple[str, ...]]) -> None:
        if not role_sets:
            return
        ids = list(role_sets)
        self.conn.execute(user_roles.delete().where(user_roles.c.user_id.in_(ids)))
        rows = [{"user_id": uid, "role": r} for uid, roles in role_sets.items() for r in roles]
        if rows:
            self.conn.execute(user_roles.insert(), rows)
        # Cached permissions of the old roles are dropped, as set_roles does.
        self.conn.execute(users.update().where(users.c.id.in_(ids)).values(auth_version=users.c.auth_version + 1))

    def _insert_new(self, snap, new: list[tuple[Any, dict]]) -> list[tuple[Any, dict, dict]]:
        """New people in waves: a wave holds those whose manager already has an id (or has none, or will
        never have one), so each gets one "create" version naming the manager. People whose managers
        form a cycle are written without one and returned, to be linked like existing rows."""
        pending, late = new, []
        while pending:
            waiting = {p.key for p, _ in pending}
            wave = [(p, a) for p, a in pending if p.values.get("manager_key") not in waiting]
            cycle = not wave  # new hires managing each other: written now, their managers linked after
            wave, pending = (pending, []) if cycle else (
                wave, [(p, a) for p, a in pending if p.values.get("manager_key") in waiting])
            for batch in _batches(wave):
                if not cycle:
                    for p, after in batch:
                        self._resolve_manager(snap, p, after)
                self.conn.execute(users.insert(), [
                    {**{c: a[c] for c in USER_COLUMNS}, "created_at": self.now, "active": True} for _, a in batch])
                ids = dict(self.conn.execute(sa.select(users.c.external_key, users.c.id).where(
                    users.c.external_key.in_([a["external_key"] for _, a in batch]))).all())
                changes, role_sets = [], {}
                for p, after in batch:
                    after["id"] = self.user_ids[p.key] = ids[after["external_key"]]
                    diff = _diff(None, after, USER_COLUMNS)
                    before_roles, roles = self._roles_of(p, None, is_new=True)
                    if roles != before_roles:
                        diff["roles"] = [list(before_roles), list(roles)]
                        role_sets[after["id"]] = roles
                    self.roles[after["id"]] = roles
                    changes.append((after["id"], "create", diff))
                    if cycle:
                        late.append((p, dict(after), after))
                self._set_roles(role_sets)
                self._history("user", changes)
                self.checkpoint()
        return late

    def _update_existing(self, snap, plans: list[tuple[Any, dict, dict]]) -> None:
        changed: list[tuple[dict, dict, tuple[str, ...]]] = []
        for p, row, after in plans:
            self._resolve_manager(snap, p, after)
            diff = _diff(row, after, USER_COLUMNS)
            before_roles, roles = self._roles_of(p, after["id"], is_new=False)
            if roles != before_roles:
                diff["roles"] = [list(before_roles), list(roles)]
            if diff:
                changed.append((after, diff, roles))
        for batch in _batches(changed):
            _bulk_update(self.conn, users, USER_COLUMNS, [after for after, diff, _ in batch if set(diff) - {"roles"}])
            self._set_roles({after["id"]: roles for after, diff, roles in batch if "roles" in diff})
            self._history("user", [(after["id"], "update", diff) for after, diff, _ in batch])
            self.checkpoint()

    def _lifecycle(self, snap) -> None:
        """Who upstream marks (in)active or no longer lists: deactivated (tokens revoked) or reactivated
        through the directory's own helpers, which audit each; the versions are written here."""
        moves = []
        for p, row, after in self.plans:
            wanted = p.values.get("active", True)
            if wanted != (row["active"] if row else True):
                moves.append((after["id"], wanted))
        if self.options.deactivate_missing and not snap.keyless:
            moves += [(u["id"], False) for u in self.users.values()
                      if u["active"] and u["external_key"] is not None and u["external_key"] not in snap.seen]
        for batch in _batches(moves, BATCH // 5):
            for uid, active in batch:
                (reactivate_user if active else deactivate_user)(self.conn, uid, self.actor)
            self._history("user", [(uid, "reactivate" if active else "deactivate", {"active": [not active, active]})
                                   for uid, active in batch], audit=False)
            self.checkpoint()
