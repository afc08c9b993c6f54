"""What a request may carry, checked once for every request before any view, query or driver sees it:

- text — the path, query arguments, form fields, JSON strings and keys, header and cookie values — holds no NUL
  and no unpaired surrogate (PostgreSQL refuses both with a 500, SQLite cuts a LIKE pattern at NUL so
  `title__contains=%00abc` matched every row);
- JSON integers fit a 64-bit column (every id and integer column is BIGINT);
- `page` and `per_page`, wherever they are used, are whole numbers from 1 to MAX_PAGE;
- `<int:...>` in a route only matches ids a BIGINT can hold (a larger one is simply not found);
- a body sent without Content-Length (chunked) is held to MAX_CONTENT_LENGTH like any other: 413.

Each refusal is a 422 with the place and the reason (`FieldErrors`), rendered by the API as JSON and by
the pages as an error page. Nothing reached the database, so nothing was half-written.
"""
from __future__ import annotations

import io
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from keel.errors import FieldErrors
from keel.json_values import INT64_MAX, text_problem, unstorable
from keel.storage.query import MAX_PAGE

PAGE_ARGS = ("page", "per_page")
_TOO_LARGE = "keel.body_too_large"


class BoundedIntegerConverter(IntegerConverter):
    """Flask's `int` converter, limited to the ids a BIGINT column holds: 99999999999999999999 in a URL
    is a 404 like any id that does not exist, not a driver overflow."""

    def __init__(self, map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", INT64_MAX)
        super().__init__(map, *args, **kwargs)


class ChunkedBodyLimit:
    """WSGI middleware: a body without Content-Length is read here up to MAX_CONTENT_LENGTH + 1 bytes.
    Werkzeug's own limit on such a stream stops reading at the limit and hands the view a body cut
    short (a 400 "Unterminated string" for JSON), never a 413; here the request is marked too large
    and everything after reads an empty body."""

    def __init__(self, wsgi_app, app: Flask):
        self.wsgi_app, self.app = wsgi_app, app

    def __call__(self, environ, start_response):
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        if (limit is not None and not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated")
                and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
            data = _read_up_to(environ["wsgi.input"], limit + 1)
            if len(data) > limit:
                environ[_TOO_LARGE] = True
                data = b""
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            # Now a body of known length, as Werkzeug reads it (chunked would make its length unknown).
            environ.pop("wsgi.input_terminated", None)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.wsgi_app(environ, start_response)


def _read_up_to(stream, n: int) -> bytes:
    """At most `n` bytes of `stream`: a server's de-chunking stream answers a read with one chunk."""
    parts, got = [], 0
    while got < n:
        part = stream.read(min(n - got, 64 * 1024))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _check_text(errors: FieldErrors, place: str, text: str) -> None:
    problem = text_problem(text)
    if problem:
        errors.add(place[:100], problem)


def _check_page_arg(errors: FieldErrors, key: str, raw: str) -> None:
    try:
        n = int(raw.strip())
    except ValueError:
        errors.add(key, "Must be a whole number.")
        return
    if n < 1:
        errors.add(key, "Must be at least %(min)s.", min=1)
    elif n > MAX_PAGE:
        errors.add(key, "Must be at most %(max)s.", max=MAX_PAGE)


def check_request() -> None:
    """The checks above, all problems of a request reported together. Raises FieldErrors."""
    if request.environ.get(_TOO_LARGE):
        raise RequestEntityTooLarge()
    errors = FieldErrors()
    _check_text(errors, "_path", request.path)
    for name, value in request.headers.items():
        _check_text(errors, name, value)
    for name, value in request.cookies.items(multi=True):  # a quoted cookie may spell NUL as \000
        _check_text(errors, "Cookie", name + value)
    for key, values in request.args.lists():
        _check_text(errors, "_query", key)
        for raw in values:
            _check_text(errors, key, raw)
            if key in PAGE_ARGS and not text_problem(raw):
                _check_page_arg(errors, key, raw)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, values in request.form.lists():
            _check_text(errors, "_form", key)
            for raw in values:
                _check_text(errors, key, raw)
        for key, file in request.files.items():
            _check_text(errors, "_form", key)
            _check_text(errors, key, file.filename or "")
    if request.is_json and request.get_data(cache=True).strip():
        from keel.boundary.security import json_body

        for place, problem in unstorable(json_body()):
            errors.add(place[:100], problem)
    if errors:
        raise errors


def init_app(app: Flask) -> None:
    """Called by `security.init_app` before any route is added (a rule binds its converter when added)."""
    app.url_map.converters["int"] = BoundedIntegerConverter
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, app)
