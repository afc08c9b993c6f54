"""Configuration from environment variables (the public contract) with defaults for the embedded
set-up. `create_app(config)` lets tests and tools override any key."""
from __future__ import annotations

import os
from pathlib import Path

from keel.errors import ConfigError

# Secrets that must never run in production: the ones any checkout or tutorial would know.
KNOWN_DEFAULT_SECRETS = frozenset({"", "dev", "change-me", "changeme", "secret", "keel-dev-secret"})
ENVIRONMENTS = ("development", "production")
LOGIN_LIMITS = {
    "KEEL_LOGIN_LIMIT_PER_ADDRESS": "30 per minute; 300 per hour",
    "KEEL_LOGIN_LIMIT_PER_ACCOUNT_AND_ADDRESS": "5 per 15 minutes; 10 per hour; 20 per day",
    "KEEL_LOGIN_LIMIT_PER_ACCOUNT": "20 per hour; 50 per day",
}


def seconds_setting(cfg: dict, name: str) -> float | None:
    """A setting giving a number of seconds (None when unset); a clear error for anything else."""
    raw = cfg.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = 0.0
    if not 0 < value <= 3600:
        raise ConfigError(f"{name} must be a number of seconds between 0 and 3600, not {raw!r}")
    return value


def from_environment(env: os._Environ | dict | None = None) -> dict:
    env = os.environ if env is None else env
    instance = Path(env.get("KEEL_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
    return {
        "KEEL_INSTANCE_PATH": str(instance),
        "KEEL_DATABASE_URL": env.get("KEEL_DATABASE_URL") or f"sqlite:///{instance / 'keel.db'}",
        "KEEL_REDIS_URL": env.get("KEEL_REDIS_URL") or None,
        "KEEL_APPS_PATH": env.get("KEEL_APPS_PATH") or "app_definitions",
        "KEEL_SECRET_KEY": env.get("KEEL_SECRET_KEY") or None,
        # production refuses to start without a strong secret; `development` generates one per instance
        "KEEL_ENV": env.get("KEEL_ENV") or "development",
        "KEEL_BASE_URL": env.get("KEEL_BASE_URL") or None,
        # None: the `plugins` folder next to the apps folder; "" turns folder discovery off
        "KEEL_PLUGINS_PATH": env.get("KEEL_PLUGINS_PATH"),
        # Login limits, as Flask-Limiter rate strings (keel.auth.throttle says how they combine)
        **{key: env.get(key) or default for key, default in LOGIN_LIMITS.items()},
        "KEEL_LOGIN_CONCURRENT_HASHES": env.get("KEEL_LOGIN_CONCURRENT_HASHES") or "2",
        # how many reverse proxies in front of Keel set X-Forwarded-For (0: the peer is the client)
        "KEEL_PROXY_COUNT": env.get("KEEL_PROXY_COUNT") or "0",
        # SQLite: how long a write waits for the database's write lock before the request gets a 503
        # (default 10; checked by create_app)
        "KEEL_DB_LOCK_TIMEOUT": env.get("KEEL_DB_LOCK_TIMEOUT") or None,
        # the one zone every page shows times in (keel.formats.display_zone); default: the working
        # calendar's zone, Asia/Shanghai
        "KEEL_TIMEZONE": env.get("KEEL_TIMEZONE") or None,
    }
