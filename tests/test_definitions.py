"""The definition language: reading folders and bundles, JSON Schemas, cross-reference checks."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from helpers_registries import REGISTRIES
from keel.definitions import DefinitionError, DefinitionErrors, load_app_dir, load_bundle, read_bundle
from keel.definitions.loader import MAX_FILE_BYTES, SCHEMA_DIR
from keel.definitions.model import ROW_SCOPES, AppDef, PermissionRule

DEFS = Path(__file__).parent / "fixtures" / "defs"
VALID = DEFS / "valid"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def valid_bundle() -> dict:
    return read_bundle(VALID, REGISTRIES)


def errors_of(bundle: dict) -> list[DefinitionError]:
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle(bundle, REGISTRIES)
    return caught.value.errors


def mutated(bundle: dict, path: str, change) -> dict:
    out = copy.deepcopy(bundle)
    change(out[path])
    return out


def places(errors: list[DefinitionError]) -> list[tuple[str, str]]:
    return [(e.file, e.pointer) for e in errors]


def goal_field(doc: dict, field_id: str) -> dict:
    return next(f for f in doc["fields"] if f["id"] == field_id)


def write_app(root: Path, files: dict[str, object]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return root


MINIMAL_APP = {"id": "mini", "version": "1", "label": "Mini"}


# -- the valid app ------------------------------------------------------------------------------------

def test_valid_app_loads_into_the_model():
    app = load_app_dir(VALID, REGISTRIES)
    assert isinstance(app, AppDef)
    assert (app.id, app.version, app.label.get("zh"), app.label.get("en")) == ("okr", "0.3.0", "目标管理", "Objectives")
    assert app.role_ids() == ("employee", "manager")
    assert app.settings["deviation_threshold"] == 0.15 and app.settings["guard"]["max_revisions"] == 3
    assert app.description.en == "A small app for the definition tests"
    assert list(app.entities) == ["goal", "task"]

    goal = app.entities["goal"]
    assert goal.label.get("zh") == "目标" and goal.owner_field == "owner" and goal.title_field == "title"
    category = goal.field("category")
    assert category.option_ids() == ("new_business", "upsell", "renewal")
    assert category.options[1].label.get("zh") == "增购" and category.options[1].label.get("en") == "Upsell"
    assert category.default == "new_business" and category.required
    target = goal.field("target")
    assert target.currency == "CNY" and target.min == Decimal(0) and isinstance(target.min, Decimal)
    weight = goal.field("weight")
    assert weight.read_roles == ("manager",) and weight.write_roles == ("manager",)
    assert weight.max == Decimal(1) and weight.label.get("en") == "weight"  # a missing label falls back to the id
    assert goal.field("due").min == "2025-01-01"
    assert goal.field("deviation").computed.startswith("(actual - target)") and not goal.field("deviation").writable
    assert [c.id for c in goal.field("dimensions").columns] == ["dimension", "value"]
    assert goal.field("dimensions").columns[1].scale == 2
    assert goal.permissions == (
        PermissionRule("employee", read="team", create=True, update="own", delete="none"),
        PermissionRule("manager", read="department", create=True, update="team", delete="team"))
    assert app.entities["task"].track_changes is False and app.entities["task"].field("hours").min == 0

    form = app.forms["goal"]
    assert [s.id for s in form.sections] == ["what", "alignment"]
    assert form.sections[0].label.get("en") == "Goal" and form.submit_label.get("zh") == "创建"
    assert [ff.field for ff in form.fields] == ["title", "owner", "category", "target", "parent", "due"]
    assert form.fields[0].help.get("en") == "One sentence" and form.fields[3].required is True
    assert form.fields[4].visible_if == "category != 'new_business'"
    assert form.roles == ("employee", "manager")
    # a flat `fields` list is one section; plain strings name fields
    task_form = app.forms["task"]
    assert len(task_form.sections) == 1 and [ff.field for ff in task_form.fields] == ["title", "goal", "hours"]
    assert task_form.roles is None

    assert app.definitions_of("workflow")["approval"].data["starts_on"]["form"] == "goal"
    assert app.definitions_of("job")["snapshot"].data["timezone"] == "Asia/Shanghai" and app.definitions_of("job")["snapshot"].kind == "job"
    assert app.definitions_of("connector")["crm"].file == "connectors/crm.json"
    assert app.definitions_of("dashboard")["overview"].data["widgets"][0]["entity"] == "goal"


def test_files_that_are_not_json_are_ignored(valid_bundle):
    assert (VALID / "README.md").exists()
    assert all(p.endswith(".json") for p in valid_bundle)


def test_folder_and_bundle_load_the_same_app(valid_bundle):
    from_folder = load_app_dir(VALID, REGISTRIES)
    from_bundle = load_bundle(valid_bundle, REGISTRIES)
    assert from_bundle == from_folder
    assert from_bundle.checksum == from_folder.checksum
    canonical = json.dumps(valid_bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert from_folder.checksum == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    # the stored bundle is exactly what was read, and loads again to the same app
    again = load_bundle(from_folder.bundle, REGISTRIES)
    assert again == from_folder and again.checksum == from_folder.checksum


def test_checksum_ignores_key_order_but_not_values(valid_bundle):
    def reverse_keys(value):
        if isinstance(value, dict):
            return {k: reverse_keys(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse_keys(v) for v in value]
        return value

    base = load_bundle(valid_bundle, REGISTRIES).checksum
    assert load_bundle(reverse_keys(valid_bundle), REGISTRIES).checksum == base
    changed = mutated(valid_bundle, "app.json", lambda d: d.update(version="0.3.1"))
    assert load_bundle(changed, REGISTRIES).checksum != base


def test_the_model_and_bundle_are_immutable():
    app = load_app_dir(VALID, REGISTRIES)
    with pytest.raises(TypeError):
        app.bundle["app.json"]["id"] = "other"
    with pytest.raises(TypeError):
        app.entities["goal"] = None
    with pytest.raises(AttributeError):
        app.entities["goal"].field("title").required = False


def test_the_shipped_demo_app_is_valid():
    app = load_app_dir(REPO / "app_definitions" / "goal_agility", REGISTRIES)
    assert "goal" in app.entities


# -- reading files -------------------------------------------------------------------------------------

def test_malformed_json_reports_file_line_and_column():
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(DEFS / "malformed", REGISTRIES)
    messages = [str(e) for e in caught.value.errors]
    # the broken goal file is reported once; the form that uses it is not also told "no entity 'goal'",
    # while its own unrelated error is still found in the same run
    assert messages == [
        "entities/goal.json: /: invalid JSON: Expecting ',' delimiter (line 4, column 3)",
        "forms/goal.json: /roles/0: unknown role 'nobody'; declare it in app.json roles (declared: admin, staff)",
    ]
    with pytest.raises(DefinitionErrors) as caught:
        read_bundle(DEFS / "malformed", REGISTRIES)
    assert places(caught.value.errors) == [("entities/goal.json", "")]


@pytest.mark.parametrize("content, expected", [
    (b'{"id": "x",\n "id": "y"}', "the key 'id' appears twice"),
    (b'{"id": NaN}', "NaN is not a number JSON allows"),
    (b'{"id": "caf\xe9"}', "not UTF-8 text: byte 0xe9 at line 1"),
    (b'[' * 100_000 + b']' * 100_000, "nested too deeply"),
])
def test_unreadable_files_are_reported_clearly(tmp_path, content, expected):
    write_app(tmp_path, {"app.json": MINIMAL_APP, "entities/x.json": content})
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(tmp_path, REGISTRIES)
    [err] = caught.value.errors
    assert err.file == "entities/x.json" and expected in err.message


def test_a_byte_order_mark_is_accepted(tmp_path):
    write_app(tmp_path, {"app.json": b"\xef\xbb\xbf" + json.dumps(MINIMAL_APP).encode()})
    assert load_app_dir(tmp_path, REGISTRIES).id == "mini"


def test_large_files_are_refused(tmp_path):
    big = {"id": "big", "type": "x", "params": {"blob": "x" * MAX_FILE_BYTES}}
    write_app(tmp_path, {"app.json": MINIMAL_APP, "jobs/big.json": big})
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(tmp_path, REGISTRIES)
    assert [(e.file, "too large" in e.message) for e in caught.value.errors] == [("jobs/big.json", True)]
    # a stored bundle gets the same limit
    with pytest.raises(DefinitionErrors) as caught:
        load_bundle({"app.json": MINIMAL_APP, "jobs/big.json": big}, REGISTRIES)
    assert "too large" in caught.value.errors[0].message


def test_folder_layout_errors(tmp_path):
    write_app(tmp_path, {"entites/goal.json": {"id": "goal"}, "entities/old/goal.json": {},
                         "extra.json": {}, "notes.txt": "ignored", ".hidden/x.json": "ignored"})
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(tmp_path, REGISTRIES)
    got = {e.file: e.message for e in caught.value.errors}
    assert set(got) == {"app.json", "entites/", "entities/old/", "extra.json"}
    assert got["app.json"].startswith("missing")
    assert "unknown folder" in got["entites/"] and "entities/" in got["entites/"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_symbolic_links_are_not_followed(tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text('{"id": "secret"}')
    app = write_app(tmp_path / "app", {"app.json": MINIMAL_APP})
    (app / "jobs").mkdir()
    (app / "jobs" / "secret.json").symlink_to(outside)
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(app, REGISTRIES)
    assert places(caught.value.errors) == [("jobs/secret.json", "")]


def test_a_failed_load_changes_no_file(tmp_path):
    shutil.copytree(DEFS / "many_errors", tmp_path / "app")
    before = {p: p.read_bytes() for p in (tmp_path / "app").rglob("*") if p.is_file()}
    with pytest.raises(DefinitionErrors):
        load_app_dir(tmp_path / "app", REGISTRIES)
    assert {p: p.read_bytes() for p in (tmp_path / "app").rglob("*") if p.is_file()} == before


def test_bad_bundles_are_refused_like_bad_folders(valid_bundle):
    with pytest.raises(DefinitionErrors):
        load_bundle(["app.json"], REGISTRIES)
    bundle = dict(valid_bundle, **{"../etc/passwd.json": {}, "entities/sub/x.json": {}})
    assert {e.file for e in errors_of(bundle)} == {"../etc/passwd.json", "entities/sub/x.json"}
    bundle = dict(valid_bundle, **{"jobs/x.json": {"id": "x", "type": "t", "params": {"v": float("nan")}}})
    [err] = errors_of(bundle)
    assert err.file == "jobs/x.json" and "not a JSON document" in err.message
    deep: dict = {}
    node = deep
    for _ in range(5000):  # deeper than Python could recurse into
        node["x"] = {}
        node = node["x"]
    bundle = dict(valid_bundle, **{"jobs/deep.json": {"id": "deep", "type": "t", "params": deep}})
    [err] = errors_of(bundle)
    assert err.file == "jobs/deep.json" and "nested more than 64 levels" in err.message
    no_app = {k: v for k, v in valid_bundle.items() if k != "app.json"}
    assert ("app.json", "") in places(errors_of(no_app))


# -- schemas ---------------------------------------------------------------------------------------------

def test_every_schema_is_a_valid_draft_2020_12_schema():
    for path in SCHEMA_DIR.glob("*.json"):
        schema = json.loads(path.read_text("utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"https://keel.dev/schemas/{path.name}"
    # the kinds the subsystems register bring their own, under the same base (they $ref common.json)
    for kind in REGISTRIES.definition_kinds.values():
        Draft202012Validator.check_schema(kind.schema)
        assert kind.schema["$id"] == f"https://keel.dev/schemas/{kind.name}.json"


def test_schema_violations_report_json_pointers(valid_bundle):
    def break_goal(doc):
        doc["permissions"][0]["read"] = "everyone"
        doc["fields"][0]["required"] = "yes"
        doc["feilds"] = []
        goal_field(doc, "category")["options"][0] = {"id": "new business", "zh": "拓新"}

    errors = errors_of(mutated(valid_bundle, "entities/goal.json", break_goal))
    assert places(errors) == [("entities/goal.json", "/feilds"), ("entities/goal.json", "/fields/0/required"),
                              ("entities/goal.json", "/fields/3/options/0/id"),
                              ("entities/goal.json", "/permissions/0/read")]
    msgs = [e.message for e in errors]
    assert "unknown key 'feilds'" in msgs[0] and "fields" in msgs[0]
    assert "'yes' is not of type 'boolean'" in msgs[1]
    assert "use only letters, digits" in msgs[2]
    assert all(scope in msgs[3] for scope in ROW_SCOPES)


def test_a_long_bad_value_does_not_hide_the_reason(valid_bundle):
    def change(doc):
        doc["fields"][0]["help"] = "x" * 3000
    [err] = errors_of(mutated(valid_bundle, "entities/goal.json", change))
    assert err.pointer == "/fields/0/help" and err.message.endswith("is too long") and len(err.message) < 120


def test_bad_app_id_gets_a_readable_message(valid_bundle):
    [err] = errors_of(mutated(valid_bundle, "app.json", lambda d: d.update(id="Goal-App")))
    assert str(err) == "app.json: /id: 'Goal-App' must start with a lowercase letter and use only a-z, 0-9 and _"


def test_error_text_names_file_pointer_and_message():
    assert str(DefinitionError("entities/goal.json", "/fields/2/id", "bad")) == "entities/goal.json: /fields/2/id: bad"
    assert str(DefinitionError("app.json", "", "missing")) == "app.json: /: missing"
    errs = DefinitionErrors([DefinitionError("b.json", "/x", "2"), DefinitionError("a.json", "/y", "1"),
                             DefinitionError("a.json", "/x", "0")])
    assert places(errs.errors) == [("a.json", "/x"), ("a.json", "/y"), ("b.json", "/x")]
    assert str(errs).splitlines()[0] == "a.json: /x: 0"


# -- fields -------------------------------------------------------------------------------------------------

def add_goal_field(valid_bundle, field: dict) -> list[DefinitionError]:
    return errors_of(mutated(valid_bundle, "entities/goal.json", lambda d: d["fields"].append(field)))


def test_unknown_field_type_lists_the_known_ones(valid_bundle):
    [err] = add_goal_field(valid_bundle, {"id": "note", "type": "txt"})
    assert err.pointer == "/fields/10/type"
    assert "unknown field type 'txt'" in err.message and "long_text" in err.message and "money" in err.message


@pytest.mark.parametrize("word", ["select", "order", "user", "group"])
def test_sql_keywords_cannot_be_field_ids(valid_bundle, word):
    [err] = add_goal_field(valid_bundle, {"id": word, "type": "text"})
    assert (err.pointer, err.message) == ("/fields/10/id", f"'{word}' is a reserved word in SQL; choose another id")


def test_double_underscores_are_reserved_in_field_ids(valid_bundle):
    [err] = add_goal_field(valid_bundle, {"id": "target__text_v2", "type": "text"})
    assert err.pointer == "/fields/10/id" and "must not contain '__'" in err.message


@pytest.mark.parametrize("column", ["id", "created_at", "row_version"])
def test_system_columns_cannot_be_field_ids(valid_bundle, column):
    [err] = add_goal_field(valid_bundle, {"id": column, "type": "text"})
    assert err.pointer == "/fields/10/id" and "a column every record has already" in err.message


def test_keys_must_fit_the_field_type(valid_bundle):
    errors = add_goal_field(valid_bundle, {"id": "note", "type": "text", "currency": "CNY", "max_rows": 3})
    assert places(errors) == [("entities/goal.json", "/fields/10/currency"),
                              ("entities/goal.json", "/fields/10/max_rows")]
    assert "'currency' does not apply to a text field" in errors[0].message and "max_length" in errors[0].message


def test_table_cells_are_checked_like_fields(valid_bundle):
    def change(doc):
        cols = goal_field(doc, "dimensions")["columns"]
        cols.append({"id": "owner", "type": "user"})
        cols.append({"id": "dimension", "type": "text", "unique": True})
    errors = errors_of(mutated(valid_bundle, "entities/goal.json", change))
    assert places(errors) == [("entities/goal.json", "/fields/9"), ("entities/goal.json", "/fields/9/columns/3/id"),
                              ("entities/goal.json", "/fields/9/columns/3/unique")]
    assert "a table cell cannot have: user" in errors[0].message

    def bad_cell(doc):  # cells go through the field schema too, however deep
        goal_field(doc, "dimensions")["columns"][0]["id"] = "Dimension"
    [err] = errors_of(mutated(valid_bundle, "entities/goal.json", bad_cell))
    assert err.pointer == "/fields/9/columns/0/id" and "must start with a lowercase letter" in err.message


def test_link_target_must_exist(valid_bundle):
    [err] = add_goal_field(valid_bundle, {"id": "card", "type": "link", "entity": "strategy_card"})
    assert (err.pointer, err.message) == ("/fields/10/entity", "no entity 'strategy_card' in this app (entities: goal, task)")
    [err] = add_goal_field(valid_bundle, {"id": "card", "type": "link"})
    assert err.pointer == "/fields/10" and "needs `entity`" in err.message


def test_select_options_are_unique(valid_bundle):
    def change(doc):
        goal_field(doc, "category")["options"].append({"id": "upsell"})
    [err] = errors_of(mutated(valid_bundle, "entities/goal.json", change))
    assert (err.pointer, err.message) == ("/fields/3/options/3/id", "duplicate option id 'upsell'")
    [err] = add_goal_field(valid_bundle, {"id": "stage", "type": "select"})
    assert "needs options" in err.message


def test_bounds_and_defaults_must_fit_the_field(valid_bundle):
    errors = errors_of(mutated(valid_bundle, "entities/goal.json", lambda d: d["fields"].extend([
        {"id": "a", "type": "integer", "min": 5, "max": 2},
        {"id": "b", "type": "integer", "min": 1.5},
        {"id": "c", "type": "select", "default": "maybe", "options": [{"id": "yes"}, {"id": "no"}]},
        {"id": "d", "type": "integer", "default": "many"},
        {"id": "e", "type": "integer", "min": 0, "default": -1},
        {"id": "f", "type": "text", "min_length": 5, "max_length": 2},
        {"id": "g", "type": "decimal", "precision": 4, "scale": 6},
        {"id": "h", "type": "date", "min": "2025-13-01"},
        {"id": "i", "type": "text", "pattern": "(unclosed"},
        {"id": "j", "type": "integer", "min": "abc", "default": 5},  # a default is not compared with a bad min
        {"id": "k", "type": "money", "min": 10**30, "default": "1e40"},  # beyond what a decimal can hold
    ])))
    got = {e.pointer: e.message for e in errors}
    assert got == {
        "/fields/10/min": "min (5) is greater than max (2)",
        "/fields/11/min": "invalid min: Must be a whole number.",
        "/fields/12/default": "invalid default: 'maybe' is not one of the options.",
        "/fields/13/default": "invalid default: Must be a whole number.",
        "/fields/14/default": "invalid default: Must be at least 0.",
        "/fields/15/min_length": "min_length (5) is greater than max_length (2)",
        "/fields/16/scale": got["/fields/16/scale"],
        "/fields/17/min": "invalid min: Must be a date (YYYY-MM-DD).",
        "/fields/18": got["/fields/18"],
        "/fields/19/min": "invalid min: Must be a whole number.",
        "/fields/20/min": "invalid min: The number is too large.",
        "/fields/20/default": "invalid default: The number is too large.",
    }
    assert "scale (6) is greater than the precision (4)" in got["/fields/16/scale"]
    assert "not a valid RE2 expression" in got["/fields/18"]


def test_owner_and_title_fields_must_exist_and_fit(valid_bundle):
    errors = errors_of(mutated(valid_bundle, "entities/goal.json",
                               lambda d: d.update(owner_field="title", title_field="name")))
    assert places(errors) == [("entities/goal.json", "/owner_field"), ("entities/goal.json", "/title_field")]
    assert "'title' is a text field; owner_field must name a user field" == errors[0].message


# -- ids, roles, references --------------------------------------------------------------------------------------

def test_duplicate_ids_are_reported(valid_bundle):
    bundle = copy.deepcopy(valid_bundle)
    bundle["entities/goal_copy.json"] = copy.deepcopy(bundle["entities/task.json"])
    bundle["entities/task.json"]["fields"].append({"id": "hours", "type": "decimal"})
    errors = errors_of(bundle)
    assert places(errors) == [("entities/goal_copy.json", "/id"), ("entities/goal_copy.json", "/id"),
                              ("entities/task.json", "/fields/3/id")]
    messages = {e.message for e in errors}
    assert "duplicate entity id 'task' (also in entities/task.json)" in messages
    assert "the file name must match the id: name the file 'task.json' or change the id to 'goal_copy'" in messages
    assert "duplicate field id 'hours'" in messages


def test_roles_must_be_declared(valid_bundle):
    bundle = mutated(valid_bundle, "entities/goal.json", lambda d: (
        d["permissions"].append({"role": "cfo", "read": "all"}),
        goal_field(d, "weight").update(write_roles=["manager", "director"])))
    bundle["forms/goal.json"]["roles"] = ["employee", "intern"]
    bundle["entities/task.json"]["permissions"] = [{"role": "admin", "read": "all"}]  # built in
    errors = errors_of(bundle)
    assert places(errors) == [("entities/goal.json", "/fields/7/write_roles/1"),
                              ("entities/goal.json", "/permissions/2/role"), ("forms/goal.json", "/roles/1")]
    assert errors[1].message.startswith("unknown role 'cfo'; declare it in app.json roles")


def test_long_or_ambiguous_table_names_are_refused(valid_bundle):
    bundle = mutated(valid_bundle, "app.json", lambda d: d.update(id="a" * 40))
    bundle["entities/task.json"]["id"] = "t" * 22  # 40 + 2 + 22 = 64 characters
    bundle["entities/" + "t" * 22 + ".json"] = bundle.pop("entities/task.json")
    bundle["entities/goal.json"]["id"] = "my__goal"
    bundle["entities/my__goal.json"] = bundle.pop("entities/goal.json")
    messages = [e.message for e in errors_of(bundle)]
    assert any("would exceed 63 characters" in m for m in messages)
    assert any("must not contain '__'" in m for m in messages)


# -- expressions and forms ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("(actual - target / ", "invalid expression"),
    ("title.__class__", "invalid expression: attribute access"),
    ("__import__('os')", "invalid expression"),
    ("actual - budget", "unknown name 'budget'"),
])
def test_computed_expressions_must_compile_and_name_fields(valid_bundle, expression, expected):
    def change(doc):
        goal_field(doc, "deviation")["computed"] = expression
    [err] = errors_of(mutated(valid_bundle, "entities/goal.json", change))
    assert err.pointer == "/fields/6/computed" and expected in err.message


def test_computed_cycles_are_reported_once(valid_bundle):
    errors = errors_of(mutated(valid_bundle, "entities/goal.json", lambda d: d["fields"].extend([
        {"id": "a", "type": "decimal", "computed": "b + 1"},
        {"id": "b", "type": "decimal", "computed": "c * 2"},
        {"id": "c", "type": "decimal", "computed": "a + target"},
        {"id": "s", "type": "decimal", "computed": "s + 1"},
    ])))
    assert [(e.pointer, e.message) for e in errors] == [
        ("/fields/10/computed", "computed fields depend on each other in a cycle: a -> b -> c -> a"),
        ("/fields/13/computed", "computed fields depend on each other in a cycle: s -> s")]


def test_computed_fields_cannot_have_defaults(valid_bundle):
    def change(doc):
        goal_field(doc, "deviation")["default"] = 0
    [err] = errors_of(mutated(valid_bundle, "entities/goal.json", change))
    assert (err.pointer, err.message) == ("/fields/6/default", "a computed field cannot have a default")


def test_form_fields_must_be_inputs_of_the_entity(valid_bundle):
    def change(doc):
        doc["sections"][0]["fields"] += [{"field": "nmae"}, {"field": "deviation"}, "actual", "title"]
        doc["sections"][1]["fields"][0]["visible_if"] = "status == 'open'"
    errors = errors_of(mutated(valid_bundle, "forms/goal.json", change))
    assert [(e.pointer, e.message.split(":")[0]) for e in errors] == [
        ("/sections/0/fields/4", "no field 'nmae' in entity 'goal' (fields"),
        ("/sections/0/fields/5", "'deviation' is computed"),
        ("/sections/0/fields/6", "'actual' is read-only"),
        ("/sections/0/fields/7", "'title' is already in this form"),
        ("/sections/1/fields/0/visible_if",
         "unknown name 'status' in expression \"status == 'open'\"; it may only name fields of this form"),
    ]


def test_visible_if_may_name_fields_of_other_sections(valid_bundle):
    def change(doc):
        doc["sections"][1]["fields"][1] = {"field": "due", "visible_if": "target > 1000 and title"}
    assert load_bundle(mutated(valid_bundle, "forms/goal.json", change), REGISTRIES).forms["goal"].fields[5].visible_if


def test_form_shape_and_entity_are_checked(valid_bundle):
    bundle = mutated(valid_bundle, "forms/task.json", lambda d: d.update(entity="ticket"))
    bundle["forms/goal.json"]["fields"] = ["title"]  # both `sections` and `fields`
    bundle["forms/goal.json"]["sections"][0]["fields"][0]["required"] = False  # title is required by the entity
    errors = errors_of(bundle)
    assert places(errors) == [("forms/goal.json", ""), ("forms/goal.json", "/sections/0/fields/0/required"),
                              ("forms/task.json", "/entity")]
    assert "either `sections` or a flat `fields` list" in errors[0].message


def test_other_kinds_get_their_references_checked(valid_bundle):
    bundle = mutated(valid_bundle, "jobs/snapshot.json", lambda d: d.update(timezone="Mars/Olympus", cron="daily"))
    bundle["workflows/approval.json"]["starts_on"] = {"form": "revision"}
    bundle["connectors/crm.json"]["secrets"] = ["sk-live-123"]
    errors = errors_of(bundle)
    # the job checks run beside the schema: the time zone is reported in the same run as the cron
    assert places(errors) == [("connectors/crm.json", "/secrets/0"), ("jobs/snapshot.json", "/cron"),
                              ("jobs/snapshot.json", "/timezone"), ("workflows/approval.json", "/starts_on/form")]
    # the job file is schema-invalid (cron), so its time zone is checked once the cron is fixed
    bundle["jobs/snapshot.json"]["cron"] = "0 2 1 * *"
    assert ("jobs/snapshot.json", "/timezone") in places(errors_of(bundle))


# -- all at once ---------------------------------------------------------------------------------------------

def test_every_error_of_every_file_is_reported_in_one_go_and_sorted():
    with pytest.raises(DefinitionErrors) as caught:
        load_app_dir(DEFS / "many_errors", REGISTRIES)
    errors = caught.value.errors
    assert places(errors) == [
        ("app.json", "/colour"),
        ("entities/item.json", "/fields/1/id"),        # 'select': SQL keyword
        ("entities/item.json", "/fields/2/id"),        # 'created_at': system column
        ("entities/item.json", "/fields/3/type"),      # 'txt'
        ("entities/item.json", "/fields/4/entity"),    # link to 'nothing'
        ("entities/item.json", "/fields/5/min"),       # min > max
        ("entities/item.json", "/fields/6/computed"),  # unknown name 'price'
        ("entities/item.json", "/permissions/0/role"),  # 'boss' not declared (app.json has another error)
        ("forms/item.json", "/fields/1"),              # 'nope'
        ("forms/item.json", "/fields/2"),              # computed 'total' as an input
    ]
    assert errors == sorted(errors, key=lambda e: (e.file, e.pointer))


def test_fifty_entities_load(tmp_path):
    types = [{"type": "text", "max_length": 100}, {"type": "integer", "min": 0}, {"type": "money"},
             {"type": "date"}, {"type": "boolean"}, {"type": "percent"}, {"type": "long_text"},
             {"type": "select", "options": [{"id": "a"}, {"id": "b"}]}, {"type": "link"},
             {"type": "decimal", "computed": "f1 * 2"}]
    files: dict[str, object] = {"app.json": {**MINIMAL_APP, "roles": [{"id": "staff"}]}}
    for n in range(50):
        fields = []
        for k, t in enumerate(types):
            f = {"id": f"f{k}", "label": {"zh": f"字段{k}", "en": f"Field {k}"}, **t}
            if t["type"] == "link":
                f["entity"] = f"e{(n + 1) % 50}"
            fields.append(f)
        files[f"entities/e{n}.json"] = {"id": f"e{n}", "fields": fields,
                                        "permissions": [{"role": "staff", "read": "all", "create": True}]}
        files[f"forms/e{n}.json"] = {"id": f"e{n}", "entity": f"e{n}", "fields": [f"f{k}" for k in range(9)]}
    app = load_app_dir(write_app(tmp_path, files), REGISTRIES)
    assert len(app.entities) == 50 and all(len(e.fields) == 10 for e in app.entities.values())


def test_the_admin_guide_lists_every_built_in_field_type_with_its_keys():
    from keel.fieldtypes.builtin import BUILTIN_TYPES

    guide = (REPO / "docs" / "definitions.md").read_text("utf-8")
    table = guide.split("### Field types", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[2]
    assert set(rows) == {t.name for t in BUILTIN_TYPES}
    for t in BUILTIN_TYPES:
        assert all(f"`{key}`" in rows[t.name] for key in t.keys), t.name


def test_entity_ids_that_name_api_paths_are_reserved(tmp_path):
    import json as _json
    import shutil as _shutil

    from conftest import APPS
    from keel.definitions.errors import DefinitionErrors as _Errors
    from keel.definitions.loader import load_app_dir as _load

    app = tmp_path / "goal_agility"
    _shutil.copytree(APPS / "goal_agility", app)
    task = _json.loads((app / "entities" / "task.json").read_text())
    task["id"] = "forms"
    (app / "entities" / "task.json").unlink()
    (app / "entities" / "forms.json").write_text(_json.dumps(task))
    form = _json.loads((app / "forms" / "task.json").read_text())
    form["entity"] = "forms"
    (app / "forms" / "task.json").write_text(_json.dumps(form))
    try:
        _load(app, REGISTRIES)
    except _Errors as e:
        assert any(err.file == "entities/forms.json" and err.pointer == "/id" and "reserved" in err.message
                   for err in e.errors), [str(x) for x in e.errors]
    else:
        raise AssertionError("an entity named 'forms' was accepted")
