"""The OpenAPI 3.1 document: generated from the applied definitions (never a hand-written list of
entities), valid OpenAPI 3.1, and current as soon as a new version is applied."""
from __future__ import annotations

import json
import shutil

import pytest
from openapi_spec_validator import validate

from helpers_registries import REGISTRIES
from test_api import API, FIXTURE, apply_definition, make_world


@pytest.fixture
def world(tmp_path, sqlite_url):
    w = make_world(tmp_path, sqlite_url)
    yield w
    w.engine.dispose()


def document(world) -> dict:
    r = world.get(f"{API}/openapi.json")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_document_is_valid_openapi_3_1(world):
    doc = document(world)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises with the first problem


def test_document_has_paths_and_schemas_for_every_entity_and_form_of_the_definition(world):
    from keel.definitions.loader import load_app_dir

    definition = load_app_dir(FIXTURE, REGISTRIES)
    doc = document(world)
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for entity_id, entity in definition.entities.items():
        base = f"/apps/tracker/{entity_id}"
        assert set(paths[base]) == {"get", "post"}
        assert set(paths[base + "/{id}"]) >= {"get", "patch", "delete"}
        assert base + "/{id}/history" in paths and base + "/export.csv" in paths
        for name in (f"tracker.{entity_id}", f"tracker.{entity_id}.create", f"tracker.{entity_id}.update"):
            assert name in schemas
        # the schemas carry every field of the definition, from the same source as validation
        assert set(schemas[f"tracker.{entity_id}"]["properties"]) >= {f.id for f in entity.fields}
        assert schemas[f"tracker.{entity_id}.create"]["additionalProperties"] is False
        assert "row_version" not in schemas[f"tracker.{entity_id}.update"]["properties"]
    for form_id in definition.forms:
        assert set(paths[f"/apps/tracker/forms/{form_id}"]) == {"get", "post"}
        assert f"tracker.{form_id}.form" in schemas
    # exact money in the schema: a string, not a float
    assert "string" in schemas["tracker.project"]["properties"]["budget"]["type"]


def test_document_describes_auth_and_the_error_responses(world):
    doc = document(world)
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/auth/token"]["post"]["security"] == []
    for static in ("/auth/token", "/me", "/audit", "/openapi.json"):
        assert static in doc["paths"]
    patch = doc["paths"]["/apps/tracker/project/{id}"]["patch"]
    assert {"401", "403", "404", "409", "422", "428"} <= set(patch["responses"])
    assert doc["components"]["responses"]["ValidationFailed"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ValidationErrors"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters" and (path, method) != ("/auth/token", "post"):
                assert "401" in op["responses"], (path, method)


def test_document_needs_a_token(world):
    r = world.client.get(f"{API}/openapi.json")
    assert r.status_code == 401 and r.is_json


def test_an_entity_added_to_the_definition_appears_without_a_restart(world, tmp_path):
    before = document(world)
    assert "/apps/tracker/milestone" not in before["paths"]

    changed = tmp_path / "tracker_v2"
    shutil.copytree(FIXTURE, changed)
    (changed / "entities" / "milestone.json").write_text(json.dumps({
        "id": "milestone", "label": {"zh": "里程碑", "en": "Milestone"},
        "fields": [{"id": "title", "type": "text", "required": True, "max_length": 80},
                   {"id": "due", "type": "date"}],
        "permissions": [{"role": "manager", "read": "all", "create": True, "update": "all"}]}))
    apply_definition(world.engine, changed)  # as `keel app apply` from another process would

    after = document(world)
    validate(after)
    assert {"/apps/tracker/milestone", "/apps/tracker/milestone/{id}"} <= set(after["paths"])
    assert after["components"]["schemas"]["tracker.milestone.create"]["required"] == ["title"]
    # and the generic routes serve it at once
    r = world.post(f"{API}/apps/tracker/milestone", {"title": "Beta", "due": "2026-01-31"})
    assert r.status_code == 201, r.get_json()


def test_document_is_built_once_per_set_of_app_versions(world):
    from keel.api.openapi import openapi_document

    document(world)
    with world.app.test_request_context():
        first = openapi_document()
        assert openapi_document() is first


def test_component_names_keep_to_the_allowed_characters():
    from keel.api.openapi import component_name

    assert component_name("tracker", "project", "create") == "tracker.project.create"
    assert component_name("a b", "c.d", "é") == "a_b.c_d._"
    assert component_name("a.b", "c") != component_name("a", "b.c")


def test_what_the_api_returns_matches_the_published_schemas(world):
    from jsonschema import Draft202012Validator, FormatChecker

    schemas = document(world)["components"]["schemas"]

    def check(name: str, value) -> None:
        errors = list(Draft202012Validator(schemas[name], format_checker=FormatChecker()).iter_errors(value))
        assert not errors, [e.message for e in errors]

    body = {"name": "Apollo", "budget": "10.50", "start": "2025-10-18", "status": "open", "active": True,
            "score": 3, "owner": world.user_ids["viewer"]}
    check("tracker.project.create", body)
    created = world.post(f"{API}/apps/tracker/project", body).get_json()
    check("tracker.project", created)
    check("tracker.project", world.get(f"{API}/apps/tracker/project/{created['id']}").get_json())
    check("tracker.project.update", {"score": 4})
    for item in world.get(f"{API}/apps/tracker/project").get_json()["items"]:
        check("tracker.project", item)


def test_document_for_the_goal_agility_demo_validates(world):
    from conftest import APPS

    apply_definition(world.engine, APPS / "goal_agility")
    doc = document(world)
    validate(doc)
    from keel.definitions.loader import load_app_dir

    demo = load_app_dir(APPS / "goal_agility", REGISTRIES)
    for entity_id in demo.entities:
        assert f"/apps/{demo.id}/{entity_id}/{{id}}" in doc["paths"]
    for form_id in demo.forms:
        assert f"/apps/{demo.id}/forms/{form_id}" in doc["paths"]
