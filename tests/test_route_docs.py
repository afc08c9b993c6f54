"""Every /api/v1 route is documented in the OpenAPI document and in docs/api.md, both generated from the
registered routes and their docstrings (keel.api.routedoc), so neither can miss a route."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Blueprint, Flask
from openapi_spec_validator import validate

from test_api import API, make_world

ROOT = Path(__file__).resolve().parent.parent
DOCS_API = ROOT / "docs" / "api.md"


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    yield w
    w.engine.dispose()


def _registered(app):
    from keel.api.routedoc import api_rules, openapi_path

    return [(openapi_path(rule), method.lower(), endpoint) for rule, method, endpoint, _ in api_rules(app)]


def test_every_registered_api_rule_is_in_the_openapi_document(world):
    doc = world.get(f"{API}/openapi.json").get_json()
    validate(doc)
    registered = _registered(world.app)
    assert len(registered) > 30
    missing = [(p, m, e) for p, m, e in registered if m not in doc["paths"].get(p, {})]
    assert not missing, missing
    for path, method, _ in registered:
        assert doc["paths"][path][method]["summary"], (path, method)


def test_every_registered_api_rule_has_a_docstring(world):
    from keel.api.routedoc import undocumented

    assert undocumented(world.app) == []


def test_docs_api_md_lists_every_route_and_is_current(world):
    from keel.api.openapi import route_paths
    from keel.api.routedoc import generated_section, markdown

    text = DOCS_API.read_text(encoding="utf-8")
    section = generated_section(text)
    assert section is not None, "docs/api.md lost its route markers"
    for path, method, _ in _registered(world.app):
        assert f"`{method.upper()} {path}`" in section, (method, path)
    assert section.strip() == markdown(route_paths(world.app)).strip(), \
        "docs/api.md is out of date: run `keel api routes --update docs/api.md`"


def test_a_new_route_is_documented_from_its_docstring_with_defaults():
    from keel.api.openapi import ERROR_RESPONSES
    from keel.api.routedoc import api_routes, markdown, operation

    app = Flask("t")
    bp = Blueprint("t", "t", url_prefix="/api/v1")

    @bp.post("/things/<int:thing_id>/cancel")
    def cancel(thing_id: int):
        """Cancel a thing.

        Only while it runs.

        Path:
            thing_id: the thing
        Query:
            force (boolean): even when it is nearly done
        Body:
            reason (string, required): why
              (kept in the history)
        Responses:
            409: the thing has ended
        """

    @bp.get("/things")
    def things():
        """List things."""

    app.register_blueprint(bp)
    docs = {(d.path, d.method): d for d in api_routes(app)}
    doc = docs[("/things/{thing_id}/cancel", "POST")]
    assert doc.summary == "Cancel a thing." and doc.description == "Only while it runs."
    assert doc.tag == "things"
    assert [(p.name, p.type, p.description) for p in doc.path_params] == [("thing_id", "integer", "the thing")]
    assert [(p.name, p.type) for p in doc.query] == [("force", "boolean")]
    assert doc.body[0].required and doc.body[0].description == "why (kept in the history)"
    assert list(doc.responses) == [200, 401, 404, 409, 422]
    op = operation(doc, ERROR_RESPONSES)
    assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == ["reason"]
    assert op["responses"]["409"]["description"] == "the thing has ended"
    assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
    plain = docs[("/things", "GET")]
    assert list(plain.responses) == [200, 401]
    table = markdown({"/things": {"get": operation(plain, ERROR_RESPONSES)}})
    assert "| `GET /things` | List things. | — | 200, 401 |" in table


@pytest.mark.parametrize("doc, message", [
    ('"""X.\n\nQuery:\n    n (int): count\n"""', "unknown 'int'"),
    ('"""X.\n\nResponses:\n    ok: fine\n"""', "is not 'status: text'"),
    ('"""X.\n\nPath:\n    other: nope\n"""', "'other' is not a parameter"),
])
def test_a_docstring_that_breaks_the_convention_is_reported_with_its_route(doc, message):
    from keel.api.routedoc import RouteDocError, route_doc

    def view():
        pass

    view.__doc__ = eval(doc)  # noqa: S307 - a literal of this test
    with pytest.raises(RouteDocError, match=message) as e:
        route_doc("/api/v1/x/<int:x_id>", "GET", "t.view", view)
    assert "t.view" in str(e.value)


def test_update_markdown_replaces_only_the_generated_section():
    from keel.api.routedoc import BEGIN, END, update_markdown

    text = f"# API\n\nprose\n\n{BEGIN}\n\nold\n{END}\n\nafter\n"
    new = update_markdown(text, "new\n")
    assert new == f"# API\n\nprose\n\n{BEGIN}\n\nnew\n\n{END}\n\nafter\n"
    assert update_markdown(new, "new\n") == new
    assert update_markdown("# API\n", "t\n").endswith(f"{BEGIN}\n\nt\n\n{END}\n")


def test_keel_api_routes_check_fails_on_a_stale_file(tmp_path):
    from click.testing import CliRunner

    from keel.cli import cli

    stale = tmp_path / "api.md"
    stale.write_text("# API\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["api", "routes", "--update", str(stale), "--check"])
    assert r.exit_code == 1 and "out of date" in r.output
    assert stale.read_text() == "# API\n"
    r = runner.invoke(cli, ["api", "routes", "--update", str(stale)])
    assert r.exit_code == 0, r.output
    assert "`POST /workflows/tasks/bulk_approve`" in stale.read_text()
    r = runner.invoke(cli, ["api", "routes", "--update", str(stale), "--check"])
    assert r.exit_code == 0, r.output
