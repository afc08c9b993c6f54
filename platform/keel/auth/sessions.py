"""Page sessions kept on the server. The signed cookie holds a random secret; the database keeps its
sha256 (like API tokens), so a session ends for good when its user logs out, is deactivated or gets a new
password, and a copy of the cookie made before then is worth nothing. Reactivating a user does not bring
an ended session back: a new one needs a new login."""
from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa

from keel.auth.tokens import token_hash
from keel.storage.audit import utcnow
from keel.storage.system import page_sessions, users

_ENDED = page_sessions.c.ended_at.is_(None)


def start_session(conn: sa.Connection, user_id: int, lifetime: dt.timedelta) -> str | None:
    """A new session for an active user; returns its secret (for the cookie only), or None when the user
    is gone or inactive. Reads the user row under a lock, so a deactivation committing meanwhile cannot
    leave a live session behind. Drops the user's sessions older than `lifetime` on the way."""
    active = conn.execute(sa.select(users.c.active).where(users.c.id == user_id).with_for_update()).scalar()
    if not active:
        return None
    now = utcnow()
    conn.execute(page_sessions.delete().where(page_sessions.c.user_id == user_id,
                                              page_sessions.c.created_at < now - lifetime))
    secret = secrets.token_urlsafe(32)
    conn.execute(page_sessions.insert().values(user_id=user_id, secret_hash=token_hash(secret), created_at=now))
    return secret


def session_user(conn: sa.Connection, secret: object, lifetime: dt.timedelta) -> int | None:
    """The user a session secret belongs to: known, not ended, younger than `lifetime`, its user active."""
    if not isinstance(secret, str) or not 20 <= len(secret) <= 100:
        return None
    return conn.execute(
        sa.select(page_sessions.c.user_id)
        .select_from(page_sessions.join(users, users.c.id == page_sessions.c.user_id))
        .where(page_sessions.c.secret_hash == token_hash(secret), _ENDED, users.c.active.is_(True),
               page_sessions.c.created_at > utcnow() - lifetime)).scalar()


def end_session(conn: sa.Connection, secret: object) -> bool:
    """End one session (logging out); False when it was unknown or had ended already."""
    if not isinstance(secret, str):
        return False
    return conn.execute(page_sessions.update().where(page_sessions.c.secret_hash == token_hash(secret), _ENDED)
                        .values(ended_at=utcnow())).rowcount > 0


def end_all_sessions(conn: sa.Connection, user_id: int, at: dt.datetime | None = None) -> int:
    """End every open session of a user (deactivation, a new password); returns how many."""
    return conn.execute(page_sessions.update().where(page_sessions.c.user_id == user_id, _ENDED)
                        .values(ended_at=at or utcnow())).rowcount
