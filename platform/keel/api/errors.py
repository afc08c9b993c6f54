"""JSON errors for /api/ paths: the one place where Keel's error values become HTTP responses.

FieldErrors → 422 {"errors": {field: [message]}} in the request's language; NotFound → 404,
PermissionDenied → 403, Conflict → 409, any other KeelError → 400, HTTP errors keep their status;
a database lock timeout → 503 with Retry-After; anything unexpected → 500 {"error": "internal error", "id": ...} with the traceback in the log only.

Handlers are registered on the blueprint for every HTTP status code as well as by class, because
Flask prefers a code-specific handler of the *app* (e.g. an HTML 404 page) over a class handler of
the blueprint. App-level handlers cover /api/ URLs that match no route at all."""
from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, default_exceptions

from keel.auth import AuthenticationRequired
from keel.errors import Conflict, FieldErrors, KeelError, NotFound, PermissionDenied
from keel.i18n import translate
from keel.storage.db import is_lock_timeout

log = logging.getLogger("keel.api")
RETRY_AFTER_SECONDS = 5


class BadRequestBody(KeelError):
    """A body that is not what the endpoint takes (not a JSON object, ...): 400 with the reason."""


class PreconditionRequired(KeelError):
    """A write that must say which version it is based on and did not (428)."""


class StaleVersion(Conflict):
    """A write based on an older version than the stored one; carries the stored version."""

    def __init__(self, message: str, current_version: int | None):
        super().__init__(message)
        self.current_version = current_version


STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (AuthenticationRequired, 401),
    (FieldErrors, 422),
    (NotFound, 404),
    (PermissionDenied, 403),
    (PreconditionRequired, 428),
    (Conflict, 409),
    (KeelError, 400),
)


def is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def keel_error_response(e: KeelError) -> Response:
    if isinstance(e, FieldErrors):
        return error_response(422, {"errors": e.rendered()})
    status = next(code for cls, code in STATUS_BY_ERROR if isinstance(e, cls))
    body: dict[str, Any] = {"error": _message(e, status)}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(e, StaleVersion) and e.current_version is not None:
        body["current_version"] = e.current_version
        headers["ETag"] = etag(e.current_version)
    return error_response(status, body, headers)


def http_error_response(e: HTTPException) -> Response:
    status = e.code or 500
    headers = {}
    description = e.description or e.name
    if isinstance(e, RequestEntityTooLarge):
        description = translate("The request body is larger than the limit of %(n)s bytes.",
                                n=current_app.config.get("MAX_CONTENT_LENGTH"))
    if status == 405 and getattr(e, "valid_methods", None):
        headers["Allow"] = ", ".join(e.valid_methods)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="keel"'
    return error_response(status, {"error": description}, headers)


def internal_error_response(e: BaseException) -> Response:
    # The id ties the client's report to the logged traceback; the traceback never leaves the server.
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", error_id, request.method, request.path, exc_info=e)
    return error_response(500, {"error": "internal error", "id": error_id})


def busy_response() -> Response:
    """A write that waited too long for the database's lock: rolled back whole, so trying again is safe."""
    return error_response(503, {"error": translate("The database is busy; nothing was changed. Try again in a "
                                                   "few seconds.")},
                          {"Retry-After": str(RETRY_AFTER_SECONDS)})


def handle(e: BaseException) -> Response:
    if isinstance(e, KeelError):
        return keel_error_response(e)
    if isinstance(e, HTTPException):
        original = getattr(e, "original_exception", None)
        if e.code == 500 and original is not None:
            return handle(original) if is_lock_timeout(original) else internal_error_response(original)
        return http_error_response(e)
    if is_lock_timeout(e):
        return busy_response()
    return internal_error_response(e)


def etag(version: int) -> str:
    return f'W/"{version}"'


def _message(e: KeelError, status: int) -> str:
    text = str(e)
    if text:
        return text
    return {404: "not found", 403: "permission denied", 409: "conflict", 428: "precondition required"} \
        .get(status, "bad request")


def init_app(app: Flask) -> None:
    from keel.api import bp

    if not getattr(bp, "_keel_error_handlers", False):
        # A blueprint can only be set up before its first registration; the handlers are the same
        # for every app, so they are attached once.
        for code in default_exceptions:
            bp.register_error_handler(code, handle)
        bp.register_error_handler(Exception, handle)
        bp._keel_error_handlers = True

    # /api/ URLs that match no route never reach the blueprint: answer them in JSON too, and leave
    # every other path to whatever handler the app had (an HTML page) or Flask's default.
    for code in (404, 405, 413):
        previous = app.error_handler_spec[None][code].get(default_exceptions[code])
        app.register_error_handler(code, _api_or(previous))


def _api_or(previous):
    def handler(e: HTTPException):
        if is_api_request():
            return http_error_response(e)
        return previous(e) if previous is not None else e
    return handler
