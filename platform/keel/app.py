"""The Flask app factory."""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, jsonify, request

from keel.config import ENVIRONMENTS, KNOWN_DEFAULT_SECRETS, from_environment, seconds_setting
from keel.errors import ConfigError
from keel.runtime import Runtime
from keel.storage.db import create_engine, create_system_tables

log = logging.getLogger("keel")


__all__ = ["ConfigError", "create_app", "runtime_of"]


def _check(cfg: dict) -> None:
    """Refuse settings that would otherwise be misread. `KEEL_ENV=Production` or `prod` used to run as
    development (a generated secret, cookies without Secure), silently: every unknown value is an error."""
    if cfg["KEEL_ENV"] not in ENVIRONMENTS:
        raise ConfigError(f"KEEL_ENV must be 'development' or 'production' (exactly, in lower case), "
                          f"not {cfg['KEEL_ENV']!r}")
    for key, low, high in (("KEEL_LOGIN_CONCURRENT_HASHES", 1, 64), ("KEEL_PROXY_COUNT", 0, 5)):
        value = str(cfg.get(key, low)).strip()
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(f"{key} must be a whole number from {low} to {high}, not {value!r}")


def _secret_key(cfg: dict) -> str:
    secret = cfg.get("KEEL_SECRET_KEY")
    if cfg["KEEL_ENV"] == "production":
        if not secret or secret in KNOWN_DEFAULT_SECRETS or len(secret) < 32:
            raise ConfigError("KEEL_SECRET_KEY must be set to a random value of at least 32 characters "
                              "in production (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return secret
    if secret:
        return secret
    # Development: one random secret per instance folder, created on first start, never a constant.
    path = Path(cfg["KEEL_INSTANCE_PATH"]) / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        os.chmod(path, 0o600)
    return path.read_text().strip()


def create_app(config: dict | None = None) -> Flask:
    cfg = from_environment()
    cfg.update(config or {})
    _check(cfg)
    Path(cfg["KEEL_INSTANCE_PATH"]).mkdir(parents=True, exist_ok=True)

    app = Flask("keel", instance_path=cfg["KEEL_INSTANCE_PATH"])
    if int(cfg["KEEL_PROXY_COUNT"]):
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only the hops we were told about: X-Forwarded-For is otherwise whatever the client wrote.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=int(cfg["KEEL_PROXY_COUNT"]))
    app.config.update(cfg)
    app.config["SECRET_KEY"] = _secret_key(cfg)
    app.config["MAX_CONTENT_LENGTH"] = cfg.get("MAX_CONTENT_LENGTH") or 2 * 1024 * 1024
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = cfg["KEEL_ENV"] == "production"

    engine = create_engine(cfg["KEEL_DATABASE_URL"], seconds_setting(cfg, "KEEL_DB_LOCK_TIMEOUT"))
    create_system_tables(engine)
    from keel import api, auth, jobs, plugins, web
    from keel.boundary import security
    from keel.web import i18n_setup

    # The composition root: the plugins (Keel's own subsystems first) decide the field types, definition
    # kinds, job types ... that everything below is handed; stored definitions are loaded with them.
    host = plugins.init_app(app)
    runtime = Runtime(engine, host.registries())
    runtime.refresh()
    app.extensions["keel"] = runtime

    security.init_app(app)
    i18n_setup.init_app(app)
    auth.init_app(app)
    api.init_app(app)
    jobs.init_app(app)
    web.init_app(app)

    @app.before_request
    def _pick_up_new_versions():
        if request.endpoint != "healthz":  # which answers for the database itself, in JSON
            runtime.refresh()

    @app.get("/healthz")
    def healthz():
        try:
            with engine.connect() as conn:  # a read: never waits for a writer's lock
                conn.exec_driver_sql("SELECT 1")
                runtime.refresh(conn)
        except sa.exc.SQLAlchemyError as e:  # a probe reads JSON whatever the state; the log says why
            from keel.storage.db import is_lock_timeout

            log.error("health check: database unavailable: %s", e)
            resp = jsonify(status="unavailable", database="busy" if is_lock_timeout(e) else "unavailable")
            resp.status_code = 503
            resp.headers["Retry-After"] = "5"
            return resp
        from keel.jobs import queue_status

        # The web app keeps serving when Redis is down: the queue's state is reported, not fatal.
        return jsonify(status="ok", apps={a.id: a.version for a in runtime.apps()}, queue=queue_status())

    healthz.keel_public = True
    return app


def runtime_of(app: Flask) -> Runtime:
    return app.extensions["keel"]
