"""The HTTP JSON connector, its templates and field mapping, against real servers on 127.0.0.1."""
from __future__ import annotations

import email.utils
import logging

import pytest

from keel.connectors.http_json import ConnectorError, HttpJsonSource, validate_config
from keel.connectors.mapping import MappingError, map_item, map_items
from keel.connectors.templates import TemplateError, render
from keel.outbound import DestinationRefused, OutboundClient
from loopback import LoopbackServer, Reply

PEOPLE = [{"id": i, "name": f"员工{i}", "dept": {"code": f"D{i % 2}"}} for i in range(1, 6)]


@pytest.fixture
def hr():
    with LoopbackServer() as s:
        yield s


def source(server, config, *, secrets=None, environ=None, sleeps=None, values=None, extra_allow=(), clock=None):
    client = OutboundClient(allowlist=[server.allow, *extra_allow], timeout=(1, 1))
    kwargs = {"clock": clock} if clock else {}
    return HttpJsonSource({"url": server.url("/people"), **config}, secrets, client, values=values,
                          environ=environ or {}, sleep=(sleeps if sleeps is not None else []).append, **kwargs)


def page_route(items, size_param="per_page"):
    def route(req):
        page, size = int(req.query["page"]), int(req.query.get(size_param, 2))
        return Reply(json={"data": {"items": items[(page - 1) * size: page * size]}})
    return route


# -- pagination ------------------------------------------------------------------------------------------

def test_page_pagination_stops_on_short_page(hr):
    hr.handle("/people", page_route(PEOPLE))
    src = source(hr, {"items": "/data/items",
                      "pagination": {"type": "page", "size_param": "per_page", "page_size": 2}})
    assert [p["id"] for p in src.iter_items()] == [1, 2, 3, 4, 5]
    assert [r.query for r in hr.requests] == [{"page": "1", "per_page": "2"}, {"page": "2", "per_page": "2"},
                                              {"page": "3", "per_page": "2"}]


def test_offset_pagination_stops_on_empty_page(hr):
    hr.handle("/people", lambda req: Reply(json=PEOPLE[:4][int(req.query["skip"]): int(req.query["skip"]) + 2]))
    src = source(hr, {"pagination": {"type": "offset", "offset_param": "skip", "limit_param": "take",
                                     "page_size": 2}})
    assert [p["id"] for p in src.iter_items()] == [1, 2, 3, 4]
    assert [r.query["skip"] for r in hr.requests] == ["0", "2", "4"]


def test_cursor_pagination_follows_next(hr):
    pages = {"": (PEOPLE[:2], "c2"), "c2": (PEOPLE[2:4], "c3"), "c3": (PEOPLE[4:], None)}

    def route(req):
        items, nxt = pages[req.query.get("after", "")]
        return Reply(json={"results": items, "meta": {"next": nxt}})

    hr.handle("/people", route)
    src = source(hr, {"items": "results", "params": {"fields": "id,name"},
                      "pagination": {"type": "cursor", "cursor_param": "after", "next": "meta.next"}})
    assert [p["id"] for p in src.iter_items()] == [1, 2, 3, 4, 5]
    assert [r.query.get("after") for r in hr.requests] == [None, "c2", "c3"]
    assert all(r.query["fields"] == "id,name" for r in hr.requests)


def test_cursor_in_post_body(hr):
    def route(req):
        body = req.json()
        assert body["filter"]["period"] == "2025-09"
        return Reply(json={"items": PEOPLE[:2] if "cursor" not in body else [], "next": "n1"})

    hr.handle("/people", route)
    src = source(hr, {"method": "POST", "body": {"filter": {"period": "{{ vars.period }}"}}, "items": "/items",
                      "pagination": {"type": "cursor", "in": "body", "next": "/next"}},
                 values={"period": "2025-09"})
    assert len(list(src.iter_items())) == 2
    assert [r.json().get("cursor") for r in hr.requests] == [None, "n1"]


def test_repeated_cursor_is_an_error(hr):
    hr.reply("/people", Reply(json={"items": [{"id": 1}], "next": "same"}))
    src = source(hr, {"items": "/items", "pagination": {"type": "cursor", "next": "/next"}})
    with pytest.raises(ConnectorError, match="cursor 'same' twice"):
        list(src.iter_items())


def test_max_pages_cap_is_an_error_not_a_silent_truncation(hr):
    hr.handle("/people", lambda req: Reply(json=[{"id": req.query["page"]}]))
    src = source(hr, {"pagination": {"type": "page", "max_pages": 3}})
    with pytest.raises(ConnectorError, match=r"more than max_pages \(3\)"):
        list(src.iter_items())
    assert len(hr.requests) == 3


# -- failures, retries, rate limits ---------------------------------------------------------------------

def test_500_then_200_is_retried_with_backoff(hr):
    hr.reply("/people", Reply(500, body="boom"), Reply(503), Reply(json=PEOPLE[:1]))
    sleeps: list[float] = []
    src = source(hr, {"retries": {"max": 3, "backoff_seconds": [0.5, 2]}}, sleeps=sleeps)
    assert [p["id"] for p in src.iter_items()] == [1]
    assert sleeps == [0.5, 2]


def test_persistent_500_fails_after_the_retries(hr):
    hr.reply("/people", Reply(500, body="database down"))
    sleeps: list[float] = []
    with pytest.raises(ConnectorError, match="HTTP 500 after 3 attempts: database down") as err:
        list(source(hr, {"retries": {"max": 2, "backoff_seconds": [1]}}, sleeps=sleeps).iter_items())
    assert err.value.status == 500 and sleeps == [1, 1] and len(hr.requests) == 3


# The server's delays are a minute: far beyond each timeout, however busy the machine (the client is gone
# long before, and the server's thread ends by itself).

def test_timeout_is_retried_then_reported(hr):
    hr.reply("/people", Reply(json=[], delay=60))
    sleeps: list[float] = []
    src = source(hr, {"timeout": {"connect": 1, "read": 0.15}, "retries": {"max": 1, "backoff_seconds": [3]}},
                 sleeps=sleeps)
    with pytest.raises(ConnectorError, match="giving up after 2 attempts: no response within 0.15 s"):
        list(src.iter_items())
    assert sleeps == [3]


def test_timeout_then_success(hr):
    hr.reply("/people", Reply(json=[], delay=60), Reply(json=PEOPLE[:2]))
    # A second is long enough for the prompt reply on a busy machine.
    src = source(hr, {"timeout": 1, "retries": {"max": 2, "backoff_seconds": [0]}}, sleeps=[])
    assert len(list(src.iter_items())) == 2


def test_429_waits_for_retry_after_seconds(hr):
    hr.reply("/people", Reply(429, headers={"Retry-After": "7"}), Reply(json=PEOPLE[:1]))
    sleeps: list[float] = []
    assert len(list(source(hr, {}, sleeps=sleeps).iter_items())) == 1
    assert sleeps == [7.0]


def test_429_retry_after_http_date_is_capped(hr):
    now = 1_750_000_000.0
    hr.reply("/people", Reply(429, headers={"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}),
             Reply(429, headers={"Retry-After": email.utils.formatdate(now + 9999, usegmt=True)}),
             Reply(json=[]))
    sleeps: list[float] = []
    src = source(hr, {"rate_limit": {"max_wait_seconds": 60}}, sleeps=sleeps, clock=lambda: now)
    assert list(src.iter_items()) == []
    assert sleeps == [30.0, 60.0]


def test_endless_429_gives_up(hr):
    hr.reply("/people", Reply(429, headers={"Retry-After": "1"}))
    with pytest.raises(ConnectorError, match=r"still rate limited \(HTTP 429\) after 2 waits"):
        list(source(hr, {"rate_limit": {"max_waits": 2}}, sleeps=[]).iter_items())


def test_client_error_is_not_retried(hr):
    hr.reply("/people", Reply(404, body="no such list"))
    with pytest.raises(ConnectorError, match="HTTP 404: no such list"):
        list(source(hr, {}, sleeps=[]).iter_items())
    assert len(hr.requests) == 1


def test_malformed_json_names_position_and_redacted_url(hr):
    hr.reply("/people", Reply(body='{"items": [1, 2,, 3]}'))
    src = source(hr, {"params": {"api_key": "{{ secrets.KEY }}"}}, secrets=["KEY"], environ={"KEY": "key-4711"})
    with pytest.raises(ConnectorError) as err:
        list(src.iter_items())
    text = str(err.value)
    assert "malformed JSON" in text and "line 1 column 17 (char 16)" in text
    assert f"127.0.0.1:{hr.port}/people" in text and "key-4711" not in text


def test_items_path_missing_or_not_a_list(hr):
    hr.reply("/people", Reply(json={"data": {"items": {"id": 1}}}))
    with pytest.raises(ConnectorError, match="'/data/items' holds dict, not a list"):
        list(source(hr, {"items": "/data/items"}).iter_items())
    with pytest.raises(ConnectorError, match="nothing at items path '/data/rows'"):
        list(source(hr, {"items": "/data/rows"}).iter_items())


def test_missing_mapped_field_names_item_and_path(hr):
    rows = [*PEOPLE[:2], {"id": 3, "name": "无部门"}, {"id": 4, "dept": {"code": "D0"}}]
    hr.reply("/people", Reply(json={"items": rows}))
    items = list(source(hr, {"items": "/items"}).iter_items())
    good, problems = map_items({"code": "id", "name": "/name", "dept": "dept.code"}, items)
    assert [g["code"] for g in good] == [1, 2]
    assert [str(p) for p in problems] == [
        "item 2: field 'dept' (path 'dept.code'): value is missing",
        "item 3: field 'name' (path '/name'): value is missing"]


# -- secrets -----------------------------------------------------------------------------------------------

def test_missing_env_var_error_names_the_variable():
    client = OutboundClient()
    src = HttpJsonSource({"url": "https://hr.example.test/p", "headers": {"Authorization": "{{ secrets.HR }}"}},
                         ["HR_TOKEN", "HR"], client, environ={"HR_TOKEN": "present-value"})
    with pytest.raises(ConnectorError, match="environment variable not set: HR ") as err:
        list(src.iter_items())
    assert "present-value" not in str(err.value)


def test_secrets_reach_the_server_but_never_logs_or_errors(hr, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="keel")
    monkeypatch.setenv("HR_TOKEN", "tok-31415")
    monkeypatch.setenv("HR_KEY", "key-27182")
    # The server echoes the token back in its error body: the error message must still not show it.
    hr.reply("/people", Reply(500, body="bad token tok-31415"), Reply(400, body="bad token tok-31415"))
    client = OutboundClient(allowlist=[hr.allow])
    src = HttpJsonSource({"url": hr.url("/people"), "headers": {"Authorization": "Bearer {{ secrets.token }}"},
                          "params": {"key": "{{ secrets.key }}"}, "retries": {"max": 1, "backoff_seconds": [0]}},
                         {"token": "HR_TOKEN", "key": "HR_KEY"}, client, sleep=lambda s: None)
    with pytest.raises(ConnectorError) as err:
        list(src.iter_items())
    assert hr.requests[0].headers["authorization"] == "Bearer tok-31415"
    assert hr.requests[0].query["key"] == "key-27182"
    assert "HTTP 500 from" in caplog.text and "key=***" in caplog.text  # logged, redacted
    for secret in ("tok-31415", "key-27182"):
        assert secret not in str(err.value) and secret not in caplog.text
    assert "HTTP 400: bad token ***" in str(err.value)


def test_secret_header_is_bound_to_the_configured_origin(hr):
    with LoopbackServer() as elsewhere:
        hr.redirect("/people", elsewhere.url("/people"))
        elsewhere.reply("/people", Reply(json=PEOPLE[:1]))
        src = source(hr, {"headers": {"Authorization": "Bearer {{ secrets.T }}", "Accept": "application/json"}},
                     secrets=["T"], environ={"T": "t-1"}, extra_allow=[elsewhere.allow])
        assert len(list(src.iter_items())) == 1
        assert hr.requests[0].headers["authorization"] == "Bearer t-1"
        assert "authorization" not in elsewhere.requests[0].headers
        assert elsewhere.requests[0].headers["accept"] == "application/json"


def test_not_allowlisted_destination_is_refused_not_retried(hr):
    src = HttpJsonSource({"url": hr.url("/people")}, None, OutboundClient(), sleep=[].append, environ={})
    with pytest.raises(DestinationRefused):
        list(src.iter_items())
    assert hr.requests == []


# -- templates ---------------------------------------------------------------------------------------------

def test_record_values_are_data_never_template_text(hr):
    hr.reply("/people/%7B%7B7%2A7%7D%7D", Reply(json=[]))
    src = source(hr, {"url": hr.url("/people/{{ vars.code | urlencode }}"), "params": {"q": "{{ vars.code }}"}},
                 values={"code": "{{7*7}}"})
    assert list(src.iter_items()) == []
    assert hr.requests[0].path == "/people/%7B%7B7%2A7%7D%7D" and hr.requests[0].query["q"] == "{{7*7}}"
    assert render("{{ v }}", {"v": "{{7*7}}"}) == "{{7*7}}"


def test_urlencode_filter_encodes_slashes():
    assert render("/d/{{ v | urlencode }}", {"v": "../admin?x=1"}) == "/d/..%2Fadmin%3Fx%3D1"


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}", "{{ v.__class__.__base__.__subclasses__() }}", "{{ 'a' * 1000000000 }}",
    "{{ 9 ** 99999 }}", "{% for i in range(10) %}{% endfor %}", "{{ v.append(1) }}",
])
def test_unsafe_templates_are_errors(template):
    with pytest.raises(TemplateError):
        render(template, {"v": []})


def test_template_errors_are_clear():
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        render("{{ oops ", {})
    with pytest.raises(TemplateError, match="unknown value"):
        render("{{ nope.x }}", {})


# -- config validation and mapping -------------------------------------------------------------------------

def test_valid_config_has_no_problems():
    assert validate_config({
        "url": "https://hr.example.test/api/{{ vars.version }}/people", "method": "GET",
        "headers": {"Authorization": "Bearer {{ secrets.HR_TOKEN }}"}, "items": "/data",
        "pagination": {"type": "cursor", "next": "/meta/next", "page_size": 100, "size_param": "limit"},
        "timeout": {"connect": 5, "read": 30}, "retries": {"max": 3, "backoff_seconds": [1, 5]},
        "mapping": {"code": "/id", "manager": {"path": "manager.code", "required": False}}}) == []


@pytest.mark.parametrize("config, expected", [
    ({"url": "https://{{ vars.host }}/x"}, "$.url"),
    ({"url": "file:///etc/passwd"}, "$.url"),
    ({"url": "https://h.test/", "headers": {"Authorization": "Bearer abc123"}}, "must take its value from a secret"),
    ({"url": "https://h.test/{{ x "}, "$.url: template syntax error"),
    ({"url": "https://h.test/", "pagination": {"type": "cursor"}}, "'next' is a required property"),
    ({"url": "https://h.test/", "pagination": {"type": "pages"}}, "$.pagination.type"),
    ({"url": "https://h.test/", "mapping": {"code": "a..b"}}, "$.mapping: field 'code' (path 'a..b'): invalid path"),
    ({"url": "https://h.test/", "password": "x"}, "Additional properties are not allowed"),
])
def test_bad_configs_are_reported(config, expected):
    problems = validate_config(config)
    assert any(expected in p for p in problems), problems


def test_mapping_paths_defaults_and_nulls():
    item = {"a": {"b": [{"c": 1}, {"c": None}]}, "x/y": "slash", "list": []}
    values, problems = map_item({
        "one": "a.b[0].c", "pointer": "/a/b/0/c", "escaped": "/x~1y",
        "opt": {"path": "missing.path", "required": False}, "null_opt": {"path": "a.b[1].c", "required": False},
        "dflt": {"path": "a.b[1].c", "default": 0}, "out_of_range": {"path": "list[3]", "default": "-"}}, item)
    assert problems == []
    assert values == {"one": 1, "pointer": 1, "escaped": "slash", "null_opt": None, "dflt": 0, "out_of_range": "-"}
    _, problems = map_item({"v": "a.b[1].c"}, item, index=7)
    assert [str(p) for p in problems] == ["item 7: field 'v' (path 'a.b[1].c'): value is empty (null)"]


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", "a[x]", "a[0", "a]b"])
def test_bad_paths_are_refused(path):
    with pytest.raises(MappingError, match="invalid path"):
        map_item({"f": path}, {})


def test_source_refuses_an_unchecked_config(hr):
    src = HttpJsonSource({"url": "http://{{ vars.host }}/people"}, None, OutboundClient(), environ={},
                         values={"host": f"127.0.0.1:{hr.port}"})
    with pytest.raises(ConnectorError, match=r"invalid http_json config: \$.url"):
        list(src.iter_items())
    assert hr.requests == []
