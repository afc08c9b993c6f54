"""Request-level security: headers on every response, body size → 413, JSON depth and malformed JSON
→ 400 with a JSON error, and the linear-time regex engine behind the `pattern` constraint."""
from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
import re2

from helpers_timing import cpu_seconds
from keel.boundary.security import DEFAULT_CSP, json_body, json_depth_exceeds, register_csp

MB = 1024 * 1024


class LazyBody(io.RawIOBase):
    """`size` bytes produced on demand, counting what the server actually read, so a 100 MB request
    never exists in memory. Seekable only because Werkzeug's test client measures the stream."""

    def __init__(self, size: int):
        self.size, self.pos, self.read_bytes = size, 0, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def readinto(self, buf):
        n = max(0, min(len(buf), self.size - self.pos))
        buf[:n] = b"[" * n
        self.pos += n
        self.read_bytes += n
        return n


@pytest.fixture
def echo(app):
    """A test-only API route that parses its body with json_body() and echoes what it got."""
    received = []

    def echo_view():
        body = json_body()
        received.append(body)
        return {"type": type(body).__name__, "repr": repr(body)}

    def plain_view():
        return "ok"

    echo_view.keel_public = True
    plain_view.keel_public = True
    app.add_url_rule("/api/v1/_test/echo", "test_echo", echo_view, methods=["POST"])
    app.add_url_rule("/_test/upload", "test_upload", plain_view, methods=["POST"])
    csrf = app.extensions.get("csrf")  # Flask-WTF, if installed globally by then: not what we test
    if csrf is not None:
        csrf.exempt(echo_view)
        csrf.exempt(plain_view)
    return received


EN = {"Accept-Language": "en"}  # messages are asserted in English; zh_CN is the default locale


def post_json_text(client, path, text: str | bytes, content_type="application/json", lang="en"):
    data = text.encode() if isinstance(text, str) else text
    return client.post(path, data=data, headers={"Content-Type": content_type, "Accept-Language": lang})


# ---------------------------------------------------------------------------------------------
# Headers

def test_security_headers_on_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    csp = r.headers["Content-Security-Policy"]
    assert csp == DEFAULT_CSP
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
                      "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert r.headers["X-Frame-Options"] == "DENY"


def test_security_headers_on_errors_too(client, echo):
    for r in (client.get("/no/such/page"), post_json_text(client, "/api/v1/_test/echo", "{")):
        assert r.status_code in (400, 401, 403, 404)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Security-Policy"] == DEFAULT_CSP


def test_csp_is_configurable_and_a_prefix_can_loosen_it(tmp_path, sqlite_url):
    from tests.conftest import make_app

    app = make_app(tmp_path, sqlite_url, KEEL_CSP="default-src 'none'")
    try:
        dash_policy = "default-src 'self'; script-src 'self' 'unsafe-inline'"
        register_csp(app, "/dash/", dash_policy)
        register_csp(app, "/dash/admin/", "default-src 'none'; frame-ancestors 'none'")
        client = app.test_client()
        assert client.get("/healthz").headers["Content-Security-Policy"] == "default-src 'none'"
        assert client.get("/dash/x").headers["Content-Security-Policy"] == dash_policy
        assert client.get("/dash/admin/x").headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert client.get("/dashboard").headers["Content-Security-Policy"] == "default-src 'none'"
    finally:
        app.extensions["keel"].engine.dispose()


# ---------------------------------------------------------------------------------------------
# Body size

def test_100_mb_body_is_413_json_on_the_api_without_reading_it(client, echo):
    body = LazyBody(100 * MB)
    with cpu_seconds() as spent:  # the test client serves on this thread
        r = client.post("/api/v1/_test/echo", input_stream=body,
                        headers={"Content-Type": "application/json", "Content-Length": str(100 * MB), **EN})
    assert r.status_code == 413
    assert r.is_json and "limit" in r.get_json()["error"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert body.read_bytes <= 2 * MB  # refused from the header, not after buffering 100 MB
    assert spent.seconds < 2
    assert echo == []  # the view never ran


def test_too_large_body_is_a_plain_page_outside_the_api(client, echo):
    body = LazyBody(3 * MB)
    r = client.post("/_test/upload", input_stream=body,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(3 * MB)})
    assert r.status_code == 413
    assert r.mimetype == "text/html"
    assert b"Request too large" in r.data or b"413" in r.data


def test_body_at_the_limit_is_accepted(client, echo):
    payload = json.dumps({"note": "x" * (2 * MB - 100)})
    r = post_json_text(client, "/api/v1/_test/echo", payload)
    assert r.status_code == 200
    assert len(echo[0]["note"]) == 2 * MB - 100


def test_default_limit_is_2_mb_and_a_configured_limit_is_kept(app, tmp_path, sqlite_url):
    from tests.conftest import make_app

    assert app.config["MAX_CONTENT_LENGTH"] == 2 * MB
    small = make_app(tmp_path / "small", sqlite_url, MAX_CONTENT_LENGTH=1000)
    try:
        def view():
            return {"n": len(json_body())}

        view.keel_public = True
        small.add_url_rule("/api/v1/_test/small", "test_small", view, methods=["POST"])
        client = small.test_client()
        assert post_json_text(client, "/api/v1/_test/small", json.dumps(["x" * 900])).status_code == 200
        r = post_json_text(client, "/api/v1/_test/small", json.dumps(["x" * 1100]))
        assert r.status_code == 413 and "1000" in r.get_json()["error"]
    finally:
        small.extensions["keel"].engine.dispose()


# ---------------------------------------------------------------------------------------------
# JSON depth and malformed JSON

def test_10000_deep_json_is_400_quickly(client, echo):
    deep = "[" * 10_000 + "]" * 10_000
    with cpu_seconds() as spent:
        r = post_json_text(client, "/api/v1/_test/echo", deep)
    assert spent.seconds < 1
    assert r.status_code == 400
    assert r.get_json() == {"error": "JSON nested deeper than 64 levels."}
    assert echo == []


def test_body_errors_are_translated(client, echo):
    r = post_json_text(client, "/api/v1/_test/echo", "[" * 100 + "]" * 100, lang="zh-CN")
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert "64" in error and "nested" not in error


def test_deep_json_is_refused_even_for_views_that_parse_it_themselves(app, client):
    seen = []

    def raw_view():
        from flask import request

        seen.append(request.get_json())
        return "ok"

    raw_view.keel_public = True
    app.add_url_rule("/_test/raw", "test_raw", raw_view, methods=["POST"])
    r = post_json_text(client, "/_test/raw", '{"a":' * 5000 + "1" + "}" * 5000)
    assert r.status_code == 400 and "deeper than 64" in r.get_json()["error"]
    assert seen == []


def test_depth_64_is_accepted_and_65_refused(client, echo):
    ok = post_json_text(client, "/api/v1/_test/echo", "[" * 64 + "]" * 64)
    assert ok.status_code == 200
    too_deep = post_json_text(client, "/api/v1/_test/echo", "[" * 65 + "]" * 65)
    assert too_deep.status_code == 400


def test_brackets_inside_strings_do_not_count(client, echo):
    text = json.dumps({"note": "[" * 1000 + '\\"{' * 100, "tags": ["a]", "{b"]})
    r = post_json_text(client, "/api/v1/_test/echo", text)
    assert r.status_code == 200
    assert echo[0]["note"].startswith("[[[")


@pytest.mark.parametrize("data,limit,deep", [
    (b'{"a": [1, {"b": []}]}', 4, False),
    (b'{"a": [1, {"b": []}]}', 3, True),
    (b'["]]]]", "\\"[[[["]', 1, False),   # escaped quote inside a string
    (b"[" * 10 + b'"unterminated', 5, True),
    (b"", 1, False),
])
def test_json_depth_scan(data, limit, deep):
    assert json_depth_exceeds(data, limit) is deep


def test_depth_scan_agrees_with_the_parsed_depth_on_random_documents():
    import random

    rnd = random.Random(20251018)
    tricky = '[]{}"\\ab'  # brackets, quotes and backslashes inside strings and keys

    def text():
        return "".join(rnd.choice(tricky) for _ in range(rnd.randint(0, 6)))

    def doc(levels):
        if levels == 0 or rnd.random() < 0.3:
            return text() if rnd.random() < 0.7 else rnd.randint(0, 9)
        if rnd.random() < 0.5:
            return [doc(levels - 1) for _ in range(rnd.randint(0, 3))]
        return {text(): doc(levels - 1) for _ in range(rnd.randint(0, 3))}

    def depth(x):
        children = x if isinstance(x, list) else x.values() if isinstance(x, dict) else None
        return 0 if children is None else 1 + max((depth(c) for c in children), default=0)

    for _ in range(2000):
        value = doc(8)
        data = json.dumps(value, ensure_ascii=rnd.random() < 0.5).encode()
        d = depth(value)
        assert json_depth_exceeds(data, d) is False, data
        if d:
            assert json_depth_exceeds(data, d - 1) is True, data


def test_depth_scan_is_linear_on_a_large_flat_body():
    data = b"[" + b'"x[{",' * 300_000 + b"[]" * 100_000 + b"1]"
    with cpu_seconds() as spent:
        assert json_depth_exceeds(data, 64) is False
    assert spent.seconds < 1


@pytest.mark.parametrize("text,position", [
    ('{"a": 1,}', "line 1 column 9 (char 8)"),
    ("{", "line 1 column 2 (char 1)"),
    ('{"a": 1}\n  x', "line 2 column 3 (char 11)"),
])
def test_malformed_json_is_400_with_its_position(client, echo, text, position):
    r = post_json_text(client, "/api/v1/_test/echo", text)
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert error.startswith("malformed JSON: ") and error.endswith(position)
    assert echo == []


@pytest.mark.parametrize("data,words", [
    (b'{"a": NaN}', "malformed JSON"),
    (b'[Infinity]', "malformed JSON"),
    (b'"\xff\xfe\xfa"', "malformed JSON"),
    (b"1" * 5000, "malformed JSON"),      # beyond Python's int-parsing limit: an error, not a 500
    (b"   ", "empty"),
])
def test_other_bad_json_is_400(client, echo, data, words):
    r = post_json_text(client, "/api/v1/_test/echo", data)
    assert r.status_code == 400 and words in r.get_json()["error"]


def test_body_not_declared_as_json_is_415(client, echo):
    r = post_json_text(client, "/api/v1/_test/echo", '{"a": 1}', content_type="text/plain")
    assert r.status_code == 415
    assert "application/json" in r.get_json()["error"]
    assert echo == []


def test_numbers_with_a_fraction_are_exact_decimals(client, echo):
    r = post_json_text(client, "/api/v1/_test/echo", '{"target": 800000.10, "count": 40, "ok": true}')
    assert r.status_code == 200
    assert echo == [{"target": Decimal("800000.10"), "count": 40, "ok": True}]
    assert type(echo[0]["count"]) is int


# ---------------------------------------------------------------------------------------------
# The `pattern` constraint runs on RE2: a pattern that is catastrophic for backtracking engines
# stays linear.

def test_re2_is_linear_on_catastrophic_pattern():
    text = "a" * 100_000 + "!"
    with cpu_seconds() as spent:
        assert re2.search("(a+)+$", text) is None
    assert spent.seconds < 0.5  # linear: milliseconds; Python's re takes longer than the universe's age here


def test_text_field_pattern_check_uses_re2():
    from keel.fieldtypes import builtin

    assert builtin.re2 is re2  # the admin-supplied `pattern` is never given to Python's `re`
