"""API bearer tokens. The raw token is shown once, to whoever asked for it; the database keeps only its
sha256, so a leaked database or backup gives no usable token. (sha256 rather than argon2 is enough:
the token is 256 random bits, not something a person chose.)"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.storage.audit import record_event, utcnow
from keel.storage.system import api_tokens, users

PREFIX = "keel_"  # makes a token recognisable to secret scanners and in a leaked log line
# Writing last_used_at on every request would turn every API read into a write; once a minute says
# enough about whether a token is still in use.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
MAX_TOKEN_LENGTH = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(conn: sa.Connection, user_id: int, name: str = "", actor: Actor | None = None) -> str:
    """A new token for an active user; returns the raw token (the only time it exists in clear).
    `actor` is who asked (the CLI passes SYSTEM or an admin); by default the user themself."""
    errors = FieldErrors()
    if not isinstance(name, str) or len(name) > 200:
        errors.add("name", "Token name must be text of at most %(max)s characters.", max=200)
    if errors:
        raise errors
    # Under a lock: a deactivation committing meanwhile must not leave a live token behind.
    user = conn.execute(sa.select(users.c.username, users.c.active).where(users.c.id == user_id)
                        .with_for_update()).first()
    if user is None or not user.active:
        raise NotFound(f"no active user with id {user_id}")
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = conn.execute(api_tokens.insert().values(
        user_id=user_id, name=name, token_hash=token_hash(token), created_at=utcnow())).inserted_primary_key[0]
    # Neither the token nor its hash goes into the event.
    actor = actor or Actor(user_id=user_id, username=user.username, roles=frozenset())
    record_event(conn, actor, "token.issue", detail={"token_id": token_id, "user_id": user_id, "name": name})
    return token


def find_token(conn: sa.Connection, token: str) -> tuple[int, int, bool] | None:
    """(token id, user id, whether last_used_at is due a touch) for a usable token: known, not revoked,
    its user active. Only reads."""
    if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = conn.execute(
        sa.select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.last_used_at)
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(api_tokens.c.token_hash == token_hash(token), api_tokens.c.revoked_at.is_(None),
               users.c.active.is_(True))).first()
    if row is None:
        return None
    last = row.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive datetimes
        last = last.replace(tzinfo=dt.UTC)
    return row.id, row.user_id, last is None or utcnow() - last >= LAST_USED_RESOLUTION


def touch_token(conn: sa.Connection, token_id: int) -> None:
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id).values(last_used_at=utcnow()))


def lookup_token(conn: sa.Connection, token: str) -> tuple[int, int] | None:
    """(token id, user id) for a usable token; touches last_used_at at most once a minute."""
    found = find_token(conn, token)
    if found is None:
        return None
    token_id, user_id, due = found
    if due:
        touch_token(conn, token_id)
    return token_id, user_id


def resolve_token(conn: sa.Connection, token: str) -> int | None:
    """The user id a bearer token acts for, or None when it is unknown, revoked or its user inactive."""
    found = lookup_token(conn, token)
    return found[1] if found else None


def revoke_token(conn: sa.Connection, token_or_id: str | int, actor: Actor) -> None:
    """Revoke a token given in clear or by id. Its owner or an administrator may; revoking twice is
    harmless (the first revocation time stays)."""
    if isinstance(token_or_id, int) and not isinstance(token_or_id, bool):
        where = api_tokens.c.id == token_or_id
    elif isinstance(token_or_id, str):
        where = api_tokens.c.token_hash == token_hash(token_or_id)
    else:
        raise NotFound("no such token")
    row = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.revoked_at)
                       .where(where)).first()
    if row is None:
        raise NotFound("no such token")
    if not actor.is_admin and actor.user_id != row.user_id:
        raise PermissionDenied("only the token's owner or an administrator may revoke it")
    if row.revoked_at is None:
        conn.execute(api_tokens.update().where(api_tokens.c.id == row.id).values(revoked_at=utcnow()))
        record_event(conn, actor, "token.revoke", detail={"token_id": row.id, "user_id": row.user_id})


def list_tokens(conn: sa.Connection, user_id: int) -> list[dict]:
    """A user's tokens without their secrets (for the CLI and an account page)."""
    rows = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at,
                                  api_tokens.c.last_used_at, api_tokens.c.revoked_at)
                        .where(api_tokens.c.user_id == user_id).order_by(api_tokens.c.id)).all()
    return [dict(r._mapping) for r in rows]
