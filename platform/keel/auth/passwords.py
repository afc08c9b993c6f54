"""Passwords: argon2id hashes (argon2-cffi's recommended parameters) and the password policy.
A plaintext password is never stored, logged or put into an audit event."""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from keel.errors import Message

MIN_LENGTH = 8
# argon2 hashes whatever it gets; a cap keeps a megabyte "password" from costing a request its time.
MAX_LENGTH = 1024

_hasher = PasswordHasher()


def password_problems(password: object) -> list[Message]:
    """What is wrong with a new password under the policy; empty when it is acceptable."""
    if not isinstance(password, str):
        return [Message.of("Password must be text.")]
    if len(password) < MIN_LENGTH:
        return [Message.of("Password must be at least %(min)s characters long.", min=MIN_LENGTH)]
    if len(password) > MAX_LENGTH:
        return [Message.of("Password must be at most %(max)s characters long.", max=MAX_LENGTH)]
    if not password.strip():
        return [Message.of("Password must not be only spaces.")]
    return []


def hash_password(password: str, *, check_policy: bool = True) -> str:
    """The argon2id hash of a password that passes the policy (ValueError otherwise: callers that take
    user input check `password_problems` first and report them as field errors). `check_policy=False`
    is for re-hashing a password that was accepted under an older policy."""
    problems = password_problems(password) if check_policy else []
    if problems:
        raise ValueError(problems[0].render())
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches. A missing or malformed hash never matches (and never raises)."""
    if not password_hash or not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when a hash was made with weaker parameters than today's: after a successful login the
    caller stores `hash_password(password)` in its place (see `keel.auth.credentials.attempt_login`)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


_dummy_hash: str | None = None


def dummy_hash() -> str:
    """A hash to verify against when the user is unknown or has no password, so a wrong username
    costs the same time as a wrong password and usernames cannot be told apart by timing."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("keel-dummy-password-for-timing")
    return _dummy_hash
