"""Login limits, counted by Flask-Limiter: in Redis when KEEL_REDIS_URL is set (so every web process
sees the same counts), in this process's memory otherwise. Each limit is a list of moving windows
("5 per 15 minutes; 10 per hour; 20 per day"), so a run of failures is a delay that grows and then
expires by itself; nothing is ever locked for good.

Every attempt on the login page or `POST /api/v1/auth/token` is counted *before* its password is looked
at, with the store's atomic increment-and-compare: forty attempts at once get exactly the number the
limit allows, never a few more.

- per address: every attempt from one client address, whatever the username (password spraying).
- per account and address: attempts at one username from one address — the growing delay an attacker
  meets. A successful login from that address forgives them.
- per account: attempts at one username from all addresses together. Used up, the account is under
  attack: an address that has already tried it within the longest of these windows must wait, any other
  address may still try once. So nobody can lock an owner out by guessing from elsewhere: the owner's
  correct password from an address that has not been failing still gets through.

Usernames are counted lower-cased whether they exist or not (the answers do not tell), and only as
hashes (the store never holds a username). Client addresses come from `request.remote_addr`;
KEEL_PROXY_COUNT tells Keel how many proxies in front of it set X-Forwarded-For.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter

from keel.config import LOGIN_LIMITS
from keel.errors import ConfigError

log = logging.getLogger("keel.auth")
# When Redis cannot be reached, count in memory for this long before trying it again (logins go on).
STORE_RETRY_SECONDS = 30.0

SCOPES = {"KEEL_LOGIN_LIMIT_PER_ADDRESS": "address",
          "KEEL_LOGIN_LIMIT_PER_ACCOUNT_AND_ADDRESS": "account and address",
          "KEEL_LOGIN_LIMIT_PER_ACCOUNT": "account"}


@dataclass(frozen=True)
class Refusal:
    """Why an attempt was not let in: `scope` is "address" or "account", `retry_after` whole seconds."""

    scope: str
    retry_after: int


@dataclass(frozen=True)
class Lockout:
    """A limit a failed attempt has just used up, for the audit trail."""

    scope: str
    limit: str
    retry_after: int


def _parse(cfg: dict, key: str) -> list[RateLimitItem]:
    try:
        items = parse_many(str(cfg.get(key) or LOGIN_LIMITS[key]))
    except ValueError:
        raise ConfigError(f"{key} must be a rate limit such as {LOGIN_LIMITS[key]!r}, "
                          f"not {cfg.get(key)!r}") from None
    return sorted(items, key=lambda item: item.get_expiry())


def storage_uri(redis_url: str | None) -> str:
    """The Flask-Limiter storage for a KEEL_REDIS_URL (a private server's `unix://` socket included)."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


def client_address(remote_addr: str | None) -> str:
    """What the limits count as one client: an IPv4 address, or an IPv6 /64 (one subscriber usually
    holds a whole /64, and would otherwise have billions of fresh addresses). Anything that is not an
    address (a proxy header gone wrong) counts as one client, "unknown"."""
    try:
        ip = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _hashed(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginLimits:
    """The three limits of the module doc, for one app, counted in its Flask-Limiter storage. (The
    limiter's route decorators are not used: they cannot forgive an address on success or let a
    fresh address through an account's full windows.)"""

    def __init__(self, app: Flask):
        cfg = app.config
        self.per_address = _parse(cfg, "KEEL_LOGIN_LIMIT_PER_ADDRESS")
        self.per_pair = _parse(cfg, "KEEL_LOGIN_LIMIT_PER_ACCOUNT_AND_ADDRESS")
        self.per_account = _parse(cfg, "KEEL_LOGIN_LIMIT_PER_ACCOUNT")
        # One try per address while an account is under attack, for the longest of its windows.
        self.once = RateLimitItemPerSecond(1, self.per_account[-1].get_expiry())
        # Several Keel instances may share one Redis: each counts apart, keyed by its database.
        instance = _hashed(cfg["KEEL_DATABASE_URL"])[:12]
        cfg.setdefault("RATELIMIT_STORAGE_URI", storage_uri(cfg.get("KEEL_REDIS_URL")))
        # Moving windows, always: a fixed window would let a burst through at each boundary, and the
        # refusals here rely on a full window not counting further attempts.
        cfg["RATELIMIT_STRATEGY"] = "moving-window"
        options = {"key_prefix": f"keel-login-{instance}", "wrap_exceptions": True}
        if not cfg["RATELIMIT_STORAGE_URI"].startswith("memory"):
            options |= {"socket_timeout": 2, "socket_connect_timeout": 2}
        cfg.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
        self.limiter = Limiter(get_remote_address, app=app)  # the key function only serves decorators
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._store_down_until = 0.0

    @property
    def _counts(self) -> RateLimiter:
        if time.monotonic() < self._store_down_until:
            return self._memory
        return self.limiter.limiter

    def _counting(self, work):
        """Run `work(counts)`; if the shared store fails, count in this process for a while (and say so)
        rather than refuse every login or answer 500."""
        try:
            return work(self._counts)
        except StorageError as e:
            log.warning("login limits: %s unreachable (%s); counting in this process for %ss",
                        self.limiter.storage.__class__.__name__, e.storage_error, int(STORE_RETRY_SECONDS))
            self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
            return work(self._memory)

    @staticmethod
    def _account(username: object) -> str:
        return _hashed(str(username).strip().lower())

    @staticmethod
    def _hit(counts: RateLimiter, items: Iterable[RateLimitItem], *key: str) -> RateLimitItem | None:
        """Count one attempt in each window, shortest first; the first window that is full, else None."""
        for item in items:
            if not counts.hit(item, *key):
                return item
        return None

    @staticmethod
    def _wait(counts: RateLimiter, item: RateLimitItem, *key: str) -> int:
        reset = counts.get_window_stats(item, *key).reset_time
        return max(1, int(reset - time.time() + 0.999))

    def _wait_all(self, counts: RateLimiter, items: Iterable[RateLimitItem], *key: str) -> int:
        """Seconds until every full window of a limit has room again (a short window may free up while
        a longer one is still full: the answer names the longer wait)."""
        return max((self._wait(counts, item, *key) for item in items
                    if counts.get_window_stats(item, *key).remaining <= 0), default=1)

    def admit(self, username: object, address: str) -> Refusal | None:
        """Count an attempt: None lets it check its password, a Refusal says why and for how long not."""
        account = self._account(username)
        return self._counting(lambda counts: self._admit(counts, account, address))

    def _admit(self, counts: RateLimiter, account: str, address: str) -> Refusal | None:
        pair = ("pair", account, address)
        if self._hit(counts, self.per_address, "address", address) is not None:
            return Refusal("address", self._wait_all(counts, self.per_address, "address", address))
        if self._hit(counts, self.per_pair, *pair) is not None:
            return Refusal("account", self._wait_all(counts, self.per_pair, *pair))
        attacked = self._hit(counts, self.per_account, "account", account) is not None
        fresh = counts.hit(self.once, "tried", account, address)
        if attacked and not fresh:
            return Refusal("account", min(self._wait_all(counts, self.per_account, "account", account),
                                          self._wait(counts, self.once, "tried", account, address)))
        return None

    def forgive(self, username: object, address: str) -> None:
        """A successful login: this address's failures at this account no longer count."""
        account = self._account(username)

        def clear(counts: RateLimiter) -> None:
            for item in self.per_pair:
                counts.clear(item, "pair", account, address)
            counts.clear(self.once, "tried", account, address)

        self._counting(clear)

    def used_up(self, username: object, address: str) -> list[Lockout]:
        """The limits found full after a failed attempt, each reported once per window of its own
        (for the audit trail: one event per lockout, however many attempts meet it)."""
        account = self._account(username)
        checks = (("KEEL_LOGIN_LIMIT_PER_ADDRESS", self.per_address, ("address", address)),
                  ("KEEL_LOGIN_LIMIT_PER_ACCOUNT_AND_ADDRESS", self.per_pair, ("pair", account, address)),
                  ("KEEL_LOGIN_LIMIT_PER_ACCOUNT", self.per_account, ("account", account)))

        def full(counts: RateLimiter) -> list[Lockout]:
            found = []
            for key, items, ids in checks:
                item = next((i for i in items if counts.get_window_stats(i, *ids).remaining <= 0), None)
                if item is not None and counts.hit(RateLimitItemPerSecond(1, item.get_expiry()),
                                                   "reported", str(item), *ids):
                    found.append(Lockout(SCOPES[key], str(item), self._wait(counts, item, *ids)))
            return found

        return self._counting(full)
