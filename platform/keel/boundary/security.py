"""Request-level security: security headers on every response, the request size limit, and JSON bodies
that are checked for depth before any parser recurses into them.

Configuration (all optional):
- `KEEL_CSP`: the Content-Security-Policy of every response (strict default below).
- `KEEL_CSP_BY_PREFIX`: {path prefix: policy} for parts that need a looser one; the longest matching
  prefix wins. The Dash pages will register theirs with `register_csp(app, "/dash/", ...)`, because
  Dash renders inline scripts.
- `KEEL_JSON_MAX_DEPTH`: nesting of arrays/objects a JSON body may have (default 64).
- `MAX_CONTENT_LENGTH`: bytes a request body may have (2 MB unless configured).
"""
from __future__ import annotations

import json
import operator
from decimal import Decimal
from itertools import accumulate, count
from typing import Any

from flask import Flask, Response, current_app, g, has_app_context, jsonify, request
from markupsafe import escape
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from keel import i18n

DEFAULT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
DEFAULT_JSON_MAX_DEPTH = 64
DEFAULT_MAX_CONTENT_LENGTH = 2 * 1024 * 1024

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

# Bracket bytes weighted so that a running sum minus the position is the depth: open 2, close 0.
_BRACKET_WEIGHTS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_A_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")


class JSONBodyError(BadRequest):
    """A request body that is not acceptable JSON. Renders as `{"error": message}` with its status
    (400, or 415 for a body that is not declared as JSON) wherever it is raised."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(description=message)
        self.code = status

    def get_response(self, environ=None, scope=None) -> Response:
        return _json_error(self.description, self.code)


def translate(msgid: str, **params: Any) -> str:
    # keel.i18n.translate needs Flask-Babel on the app; these errors must render even without it.
    if has_app_context() and "babel" not in current_app.extensions:
        return msgid % params if params else msgid
    return i18n.translate(msgid, **params)


def _json_error(message: str, status: int) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


# ---------------------------------------------------------------------------------------------
# JSON bodies

def json_depth_exceeds(data: bytes, limit: int) -> bool:
    """True when arrays/objects in `data` nest deeper than `limit`. Linear, with every step in C:
    escapes are removed (pairs of backslashes first, exactly as JSON reads a run of them, then escaped
    quotes), strings are cut out so brackets inside them do not count, and the depth is a running sum
    over the remaining brackets. Malformed input is left for the parser to report."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the usual body: it cannot nest deeper than it has openers
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    weights = outside_strings.translate(_BRACKET_WEIGHTS, _NOT_A_BRACKET)
    if not weights:
        return False
    # After the i-th bracket (1-based): depth = 2 * opens so far - i = running sum of weights - i.
    return max(map(operator.sub, accumulate(weights), count(1))) > limit


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, max_depth: int = DEFAULT_JSON_MAX_DEPTH) -> Any:
    """Parse a JSON document with Keel's rules: depth checked before parsing, numbers with a fraction
    or exponent as exact Decimal (never float), NaN/Infinity refused. Raises JSONBodyError."""
    if not data.strip():
        raise JSONBodyError(translate("The request body is empty; a JSON document was expected."))
    if json_depth_exceeds(data, max_depth):
        raise JSONBodyError(translate("JSON nested deeper than %(n)s levels.", n=max_depth))
    try:
        return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise JSONBodyError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})") \
            from None
    except UnicodeDecodeError as e:
        raise JSONBodyError(f"malformed JSON: not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # e.g. NaN, or an integer with more than 4,300 digits
        raise JSONBodyError(f"malformed JSON: {e}") from None


def _max_depth() -> int:
    return int(current_app.config.get("KEEL_JSON_MAX_DEPTH", DEFAULT_JSON_MAX_DEPTH))


def json_body() -> Any:
    """The request's JSON body, parsed with the checks above (size by MAX_CONTENT_LENGTH → 413, depth,
    malformed → 400, not declared as JSON → 415). Decimal for non-integer numbers. Parsed once per
    request."""
    if "keel_json_body" in g:
        return g.keel_json_body
    if not request.is_json:
        raise JSONBodyError(translate("Send the body as JSON (Content-Type: application/json)."), 415)
    g.keel_json_body = parse_json(request.get_data(cache=True), _max_depth())
    return g.keel_json_body


# ---------------------------------------------------------------------------------------------
# Headers

def register_csp(app: Flask, prefix: str, policy: str) -> None:
    """Use `policy` instead of KEEL_CSP for paths under `prefix` (e.g. Dash's inline scripts)."""
    app.config.setdefault("KEEL_CSP_BY_PREFIX", {})[prefix] = policy


def csp_for(app: Flask, path: str) -> str:
    by_prefix = app.config.get("KEEL_CSP_BY_PREFIX") or {}
    matches = [p for p in by_prefix if path.startswith(p)]
    if matches:
        return by_prefix[max(matches, key=len)]
    return app.config.get("KEEL_CSP") or DEFAULT_CSP


# ---------------------------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    from keel.boundary import inputs

    inputs.init_app(app)
    app.config.setdefault("KEEL_CSP", DEFAULT_CSP)
    app.config.setdefault("KEEL_CSP_BY_PREFIX", {})
    app.config.setdefault("KEEL_JSON_MAX_DEPTH", DEFAULT_JSON_MAX_DEPTH)
    # Flask's own defaults already hold MAX_CONTENT_LENGTH = None, so a `setdefault` elsewhere never
    # takes effect: unless a limit was configured explicitly, this is where the 2 MB limit is set.
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = DEFAULT_MAX_CONTENT_LENGTH

    @app.before_request
    def _limit_request_body():
        # Refuse an announced oversized body before anything reads it (Werkzeug would only refuse
        # on the first read, and a view that never reads the body would accept it). A body sent
        # without Content-Length is still cut off at the limit when read.
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge()
        # Every JSON body is depth-checked here, so code that calls request.get_json() directly
        # (Dash callbacks, Flask-WTF) is protected too, not only callers of json_body().
        if request.is_json:
            data = request.get_data(cache=True)
            depth = _max_depth()
            if json_depth_exceeds(data, depth):
                raise JSONBodyError(translate("JSON nested deeper than %(n)s levels.", n=depth))
        inputs.check_request()  # text, integers and pages, before any view or hook reads them

    @app.errorhandler(JSONBodyError)
    def _json_body_error(e: JSONBodyError):
        return e.get_response()

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        message = translate("The request body is larger than the limit of %(n)s bytes.", n=limit)
        if _is_api(request.path):
            return _json_error(message, 413)
        # A fixed page (the web part's error pages replace it when installed); nothing from the
        # request is echoed, and the translated texts are escaped all the same.
        title, message = escape(translate("Request too large")), escape(message)
        return Response(f'<!doctype html><html><head><meta charset="utf-8"><title>413 {title}</title>'
                        f"</head><body><h1>{title}</h1><p>{message}</p></body></html>",
                        status=413, mimetype="text/html")

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", csp_for(app, request.path))
        return response
