"""Checking a username and password, for the login page and `POST /api/v1/auth/token` alike: first the
login limits (keel.auth.throttle), then the argon2 check in one of a few hashing slots.

Each argon2 check takes 64 MiB and most of a core for ~0.1 s. Forty at once took a development server
from 104 MB to 2 GB, so a process runs at most KEEL_LOGIN_CONCURRENT_HASHES of them; an attempt that
finds no free slot within HASH_WAIT_SECONDS gets 503 with Retry-After instead of memory. Unknown users,
users without a password and inactive users verify against a dummy hash in the same slots: their answer
takes as long as a wrong password (usernames cannot be told apart by timing) and costs no more memory
than the cap allows."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app

from keel.actor import Actor
from keel.auth import passwords
from keel.auth.directory import find_user
from keel.auth.throttle import LoginLimits, Refusal
from keel.storage.audit import record_event
from keel.storage.system import users

HASH_WAIT_SECONDS = 5.0
BUSY_RETRY_AFTER = 2


@dataclass(frozen=True)
class LoginOutcome:
    """`user_id` when the password matched; else `refusal` when the limits turned the attempt away (429),
    `busy` when no hashing slot came free in time (503), or neither (a wrong username or password)."""

    user_id: int | None
    refusal: Refusal | None = None
    busy: bool = False

    @property
    def ok(self) -> bool:
        return self.user_id is not None


class HashingSlots:
    """A process-wide cap on concurrent password hashes."""

    def __init__(self, size: int, wait: float = HASH_WAIT_SECONDS):
        self._slots = threading.BoundedSemaphore(size)
        self.wait = wait

    @contextmanager
    def slot(self):
        """Yields True holding a slot, or False when none came free within `wait` seconds."""
        got = self._slots.acquire(timeout=self.wait)
        try:
            yield got
        finally:
            if got:
                self._slots.release()


@dataclass
class LoginGate:
    """What a Keel app checks logins with: its limits and its hashing slots."""

    limits: LoginLimits
    slots: HashingSlots


def init_app(app: Flask) -> None:
    app.extensions["keel.login"] = LoginGate(LoginLimits(app),
                                             HashingSlots(int(app.config["KEEL_LOGIN_CONCURRENT_HASHES"])))


def _gate() -> LoginGate:
    return current_app.extensions["keel.login"]


def attempt_login(engine: sa.Engine, username: str, password: str, address: str) -> LoginOutcome:
    """Check a username and password from a client address under the login limits. The argon2 check runs
    outside any transaction, so it never holds a database lock. A lockout this attempt causes is written
    to the audit trail (once per lockout)."""
    gate = _gate()
    refusal = gate.limits.admit(username, address)
    if refusal is not None:
        return LoginOutcome(None, refusal=refusal)
    with engine.connect() as conn:
        user = find_user(conn, username) if isinstance(username, str) else None
    stored = user.password_hash if user is not None and user.password_hash else None
    with gate.slots.slot() as got:
        if not got:
            return LoginOutcome(None, busy=True)
        matches = passwords.verify_password(stored or passwords.dummy_hash(),
                                            password if isinstance(password, str) else "")
        ok = matches and stored is not None and bool(user.active)
        upgraded = passwords.hash_password(password, check_policy=False) \
            if ok and passwords.needs_rehash(stored) else None
    if not ok:
        _audit_lockouts(engine, gate.limits, username, address)
        return LoginOutcome(None)
    gate.limits.forgive(username, address)
    if upgraded is not None:
        with engine.begin() as conn:  # only if nobody changed the password in between
            conn.execute(users.update().where(users.c.id == user.id, users.c.password_hash == stored)
                         .values(password_hash=upgraded))
    return LoginOutcome(user.id)


def _audit_lockouts(engine: sa.Engine, limits: LoginLimits, username: object, address: str) -> None:
    lockouts = limits.used_up(username, address)
    if not lockouts:
        return
    # Nobody is signed in: the event is by the client address. The username is kept as typed (printable
    # characters only, bounded), since it names the account under attack.
    who = Actor(user_id=None, username=f"address:{address}", roles=frozenset())
    typed = "".join(c for c in str(username) if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF)[:150]
    with engine.begin() as conn:
        for lockout in lockouts:
            record_event(conn, who, "auth.lockout", detail={
                "scope": lockout.scope, "limit": lockout.limit, "username": typed, "address": address,
                "retry_after": lockout.retry_after})
