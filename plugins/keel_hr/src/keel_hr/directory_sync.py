"""Bringing the org directory (keel_users, keel_departments) in line with an HR snapshot.

Rows are matched by external key; a row without one whose username (users) or code (departments) is
the upstream one is adopted, so a directory typed in by hand joins the sync instead of clashing with it.
The whole directory is read once and compared in memory; only rows whose synced columns differ are
written, in bulk, each change with a version row and an audit event (`record_directory_history`). A
repeated sync with no upstream change therefore writes nothing at all.

Order matters and is why this is one pass over the whole snapshot, not chunks: departments exist before
people join them; everyone exists before managers and heads are resolved (a manager may be a new hire
listed after their reports); parents are set after every department exists. Someone gone from upstream
is deactivated (their tokens revoked), never deleted; is_admin and passwords are never touched (synced
people log in through SSO or tokens: no password is hashed here).

A reference that cannot be resolved (an unknown department, a manager who is not upstream, a parent that
would make a cycle) leaves that one value unchanged and is reported; an item whose own values are wrong
is skipped and reported. With skip_invalid false any problem fails the run, and the caller's transaction
rolls everything back.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
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

Report = Callable[[list[str]], None]


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


class DirectorySync:
    def __init__(self, conn: sa.Connection, actor: Actor, options: Options, report: Report):
        self.conn, self.actor, self.options, self.report = conn, actor, options, report
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []
        self.now = utcnow()

    # -- reading ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        c = self.conn
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
        dept_changes: dict[int, tuple[str, dict]] = self._departments(depts) if depts is not None else {}
        user_changes = self._users(people)
        if depts is not None:
            self._department_links(depts, people, dept_changes)
        # Deactivations and reactivations were audited by their directory helpers: versions only.
        for entity, changes in (("department", [(i, a, d) for i, (a, d) in dept_changes.items()]),
                                ("user", user_changes)):
            record_directory_history(self.conn, self.actor, entity,
                                     [c for c in changes if c[1] in ("create", "update")], source=SOURCE, at=self.now)
            record_directory_history(self.conn, self.actor, entity,
                                     [c for c in changes if c[1] not in ("create", "update")], audit=entity != "user",
                                     source=SOURCE, at=self.now)
            for action in ("create", "update", "deactivate", "reactivate"):
                self.counts[f"{entity}s_{action}d"] = sum(1 for c in changes if c[1] == action)
        touched = {c[0] for c in user_changes}
        self.counts["users_unchanged"] = sum(1 for _, _, after in self.plans if after["id"] not in touched)
        self.counts["items"] = len(people.items)
        self.counts["problems"] = len(self.problems)
        return self.counts

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        self.report([text])

    # -- departments -----------------------------------------------------------------------------------
    def _departments(self, snap) -> dict[int, tuple[str, dict]]:
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
        out: dict[int, tuple[str, dict]] = {}
        for r, a in changed:
            diff = _diff(r, a, DEPARTMENT_COLUMNS)
            if not r["active"]:
                diff["active"] = [False, True]
            out[r["id"]] = ("update", diff)
        fresh = dict(self.conn.execute(sa.select(departments.c.external_key, departments.c.id)
                                       .where(departments.c.external_key.is_not(None))).all())
        for d in new:
            d["id"], d["active"] = fresh[d["external_key"]], True
            self.depts[d["id"]] = d
            out[d["id"]] = ("create", _diff(None, d, DEPARTMENT_COLUMNS))
        for r, a in changed:
            self.depts[r["id"]] = {**r, **a, "active": True}
        return out

    def _department_links(self, snap, people, changes: dict[int, tuple[str, dict]]) -> None:
        """Parents and heads once every department and person exists; then departments gone upstream."""
        by_key = {d["external_key"]: d for d in self.depts.values() if d["external_key"] is not None}
        by_code = {d["code"]: d for d in self.depts.values()}
        parents = {d["id"]: d["parent_id"] for d in self.depts.values()}
        updates: dict[int, dict] = {}
        for dept in sorted(snap.valid.values(), key=lambda d: d.index):
            row, v = by_key.get(dept.key), dept.values
            if row is None:  # skipped above
                continue
            after = {}
            if "parent_code" in v:
                parent = by_code.get(v["parent_code"]) if v["parent_code"] else None
                if v["parent_code"] and parent is None:
                    self._problem(f"item {dept.index}: parent department {v['parent_code']!r} does not exist; "
                                  "parent left unchanged")
                elif self._makes_cycle(parents, row["id"], parent["id"] if parent else None):
                    self._problem(f"item {dept.index}: parent {v['parent_code']!r} would make a cycle; parent "
                                  "left unchanged")
                else:
                    after["parent_id"] = parents[row["id"]] = parent["id"] if parent else None
            if "head_key" in v:
                head = self.user_ids.get(v["head_key"]) if v["head_key"] else None
                if v["head_key"] and (head is None or v["head_key"] not in people.valid):
                    self._problem(f"item {dept.index}: head {v['head_key']!r} is not a person in the HR source; "
                                  "head left unchanged")
                else:
                    after["head_id"] = head
            diff = _diff(row, {**row, **after}, ("parent_id", "head_id"))
            if diff:
                updates[row["id"]] = {**row, **after}
                action, old = changes.get(row["id"], ("update", {}))
                changes[row["id"]] = (action, {**old, **diff})
        _bulk_update(self.conn, departments, ("parent_id", "head_id"), list(updates.values()))
        if snap.keyless or not self.options.deactivate_missing:
            return
        # Upstream departments and their ancestors stay: read from the people's rows, a parent with
        # nobody directly in it appears only as someone's parent.
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
            for d in gone:
                changes[d["id"]] = ("deactivate", {"active": [True, False]})

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
    def _users(self, snap) -> list[tuple[int, str, dict]]:
        by_key = {u["external_key"]: u for u in self.users.values() if u["external_key"] is not None}
        by_name = {u["username"].lower(): u for u in self.users.values()}
        dept_ids = {d["code"]: d["id"] for d in self.depts.values()}
        claimed: set[str] = set()
        plans = []  # (person, row or None, after)
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
        new = [after for p, row, after in plans if row is None]
        if new:
            self.conn.execute(users.insert(), [
                {**{c: a[c] for c in USER_COLUMNS if c != "manager_id"}, "created_at": self.now,
                 "active": True} for a in new])
        # external key -> user id: the keyed rows, the adopted ones (keyed only once written) and the new.
        self.user_ids = {k: u["id"] for k, u in by_key.items()}
        self.user_ids.update({p.key: row["id"] for p, row, _ in plans if row is not None})
        if new:  # all keyed ids in one query: an IN list of thousands of new keys hits parameter limits
            fresh = dict(self.conn.execute(sa.select(users.c.external_key, users.c.id)
                                           .where(users.c.external_key.is_not(None))).all())
            self.user_ids.update({a["external_key"]: fresh[a["external_key"]] for a in new})
        for p, _, after in plans:
            after["id"] = self.user_ids[p.key]
            mk = p.values.get("manager_key", ...)
            if mk is ...:
                continue
            if mk is not None and (mk not in snap.valid or mk not in self.user_ids):
                why = "is not in the HR source" if mk not in snap.seen else "could not be synced"
                self._problem(f"item {p.index} (external key {p.key!r}): manager {mk!r} {why}; manager left "
                              "unchanged")
            else:
                after["manager_id"] = self.user_ids[mk] if mk is not None else None
        self.plans = plans
        return self._write_users(snap, plans)

    def _write_users(self, snap, plans) -> list[tuple[int, str, dict]]:
        changes: list[tuple[int, str, dict]] = []
        updates, created, role_sets, lifecycle = [], [], {}, []
        for p, row, after in plans:
            uid = after["id"]
            before_roles = self.roles.get(uid, ())
            roles = tuple(p.values.get("roles", before_roles if row else self.options.default_roles))
            diff = _diff(row, after, USER_COLUMNS)
            if diff:
                updates.append(after)
            if roles != before_roles:
                diff["roles"] = [list(before_roles), list(roles)]
                role_sets[uid] = roles
            if row is None:
                created.append(after)
            if diff:
                changes.append((uid, "create" if row is None else "update", diff))
            wanted_active = p.values.get("active", True)
            if wanted_active != (row["active"] if row else True):
                lifecycle.append((uid, wanted_active))
        # New people were inserted without a manager (who may be a later new hire): set here with the rest.
        _bulk_update(self.conn, users, USER_COLUMNS, updates)
        if role_sets:
            ids = list(role_sets)
            self.conn.execute(user_roles.delete().where(user_roles.c.user_id.in_(ids)))
            rows = [{"user_id": uid, "role": r} for uid, roles in role_sets.items() for r in roles]
            if rows:
                self.conn.execute(user_roles.insert(), rows)
            # Cached permissions of the old roles are dropped, as set_roles does.
            self.conn.execute(users.update().where(users.c.id.in_(ids)).values(auth_version=users.c.auth_version + 1))
        if self.options.deactivate_missing and not snap.keyless:
            lifecycle += [(u["id"], False) for u in self.users.values()
                          if u["active"] and u["external_key"] is not None and u["external_key"] not in snap.seen]
        for uid, active in lifecycle:
            (reactivate_user if active else deactivate_user)(self.conn, uid, self.actor)
            changes.append((uid, "reactivate" if active else "deactivate", {"active": [not active, active]}))
        return changes
