"""Password login with a throttle kept in the database, so every web process and worker sees the same
count. Key: the lower-cased username, known or not, so the answer and its timing do not tell whether a
username exists.

Rules: 5 failures within 15 minutes lock the name for 15 minutes; each further lock-out doubles the
time (30, 60 ... at most 24 hours); a day without failures forgets the history; a successful login
clears it. A locked name is refused without looking at the password."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from keel.auth import passwords
from keel.auth.directory import find_user
from keel.storage.audit import utcnow
from keel.storage.system import login_failures, users

MAX_FAILURES = 5
WINDOW = dt.timedelta(minutes=15)
BASE_LOCK = dt.timedelta(minutes=15)
MAX_LOCK = dt.timedelta(hours=24)
FORGET_AFTER = dt.timedelta(hours=24)


@dataclass(frozen=True)
class LoginOutcome:
    user_id: int | None
    locked_until: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.user_id is not None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None

    def retry_after(self, now: dt.datetime | None = None) -> int:
        """Whole seconds until a locked name may try again (for the Retry-After header)."""
        if self.locked_until is None:
            return 0
        left = (self.locked_until - (now or utcnow())).total_seconds()
        return max(1, int(left + 0.999))


def throttle_key(username: object) -> str:
    return str(username).strip().lower()[:255]


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def locked_until(conn: sa.Connection, username: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the lock on a username ends, or None when it is not locked."""
    now = now or utcnow()
    until = _aware(conn.execute(sa.select(login_failures.c.locked_until)
                                .where(login_failures.c.key == throttle_key(username))).scalar())
    return until if until is not None and until > now else None


def _ensure_row(conn: sa.Connection, key: str, now: dt.datetime) -> None:
    """Insert the key's row unless another process already did (no unique-violation race)."""
    values = {"key": key, "count": 0, "first_at": now}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - Keel runs on SQLite and PostgreSQL
        if conn.execute(sa.select(login_failures.c.key).where(login_failures.c.key == key)).first() is None:
            conn.execute(login_failures.insert().values(**values))
        return
    conn.execute(insert(login_failures).values(**values).on_conflict_do_nothing(index_elements=["key"]))


def record_failure(conn: sa.Connection, username: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """Count one failed login; returns when the lock ends if the name is (now) locked."""
    now = now or utcnow()
    key = throttle_key(username)
    _ensure_row(conn, key, now)
    row = conn.execute(sa.select(login_failures).where(login_failures.c.key == key).with_for_update()).one()
    first_at, until = _aware(row.first_at), _aware(row.locked_until)
    if until is not None and until > now:
        return until  # already locked: attempts during a lock neither count nor extend it
    # count = lock-outs so far * MAX_FAILURES + failures in the current window
    lockouts, in_window = divmod(row.count, MAX_FAILURES)
    if now - first_at > FORGET_AFTER:
        lockouts, in_window, first_at = 0, 0, now
    elif now - first_at > WINDOW:
        in_window, first_at = 0, now
    in_window += 1
    locked = None
    if in_window >= MAX_FAILURES:
        lockouts, in_window = lockouts + 1, 0
        locked = now + min(BASE_LOCK * 2 ** min(lockouts - 1, 16), MAX_LOCK)
        first_at = locked  # the next window starts when this lock ends
    conn.execute(login_failures.update().where(login_failures.c.key == key).values(
        count=lockouts * MAX_FAILURES + in_window, first_at=first_at, locked_until=locked or until))
    return locked


def clear_failures(conn: sa.Connection, username: str) -> None:
    conn.execute(login_failures.delete().where(login_failures.c.key == throttle_key(username)))


def forget_stale(conn: sa.Connection, now: dt.datetime | None = None) -> int:
    """Delete failure rows nobody would look at again (for a periodic clean-up): names tried once by a
    scanner should not pile up for ever."""
    now = now or utcnow()
    cutoff = now - FORGET_AFTER
    return conn.execute(login_failures.delete().where(
        login_failures.c.first_at < cutoff,
        sa.or_(login_failures.c.locked_until.is_(None), login_failures.c.locked_until < cutoff))).rowcount


def attempt_login(engine: sa.Engine, username: str, password: str,
                  now: dt.datetime | None = None) -> LoginOutcome:
    """Check a username and password under the throttle. Opens its own short transactions: the argon2
    check (~0.1 s) runs outside them so it never holds a database lock."""
    now = now or utcnow()
    with engine.begin() as conn:
        until = locked_until(conn, username, now)
        if until is not None:
            return LoginOutcome(None, until)
        user = find_user(conn, username) if isinstance(username, str) else None

    # Unknown users, users without a password and inactive users all pay for one argon2 check.
    stored = user.password_hash if user is not None and user.password_hash else None
    matches = passwords.verify_password(stored or passwords.dummy_hash(), password if isinstance(password, str) else "")
    ok = matches and stored is not None and bool(user.active)

    with engine.begin() as conn:
        if not ok:
            return LoginOutcome(None, record_failure(conn, username, now))
        until = locked_until(conn, username, now)  # another process may have locked it meanwhile
        if until is not None:
            return LoginOutcome(None, until)
        clear_failures(conn, username)
        if passwords.needs_rehash(stored):
            # Only if nobody changed the password in between.
            conn.execute(users.update().where(users.c.id == user.id, users.c.password_hash == stored)
                         .values(password_hash=passwords.hash_password(password, check_policy=False)))
    return LoginOutcome(user.id)
