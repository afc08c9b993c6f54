"""Forms from definitions: the WTForms class and the JSON Schemas come from the same field declarations,
and a form submission is checked against the form before it reaches the write path."""
from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from wtforms import BooleanField, SelectField, SelectMultipleField, StringField, TextAreaField

from helpers_registries import REGISTRIES, typed
from keel.actor import Actor
from keel.definitions.model import (
    AppDef,
    EntityDef,
    FieldDef,
    FormDef,
    FormField,
    FormSection,
    Label,
    Option,
    PermissionRule,
)
from keel.errors import FieldErrors, PermissionDenied
from keel.forms.build import attach_errors, collect, entity_form_class, form_class, form_field
from keel.forms.schema import entity_json_schema, form_json_schema
from keel.forms.submit import check_roles, form_values
from keel.runtime import build

L = Label


def goal_entity(*extra: FieldDef) -> EntityDef:
    fields = (
        FieldDef("title", "text", L("标题", "Title"), required=True, max_length=200,
                 help=L("简短的名称", "A short name")),
        FieldDef("notes", "long_text", L("备注", "Notes")),
        FieldDef("story", "rich_text", L("叙述", "Story")),
        FieldDef("target", "money", L("目标值", "Target"), min=0, currency="CNY"),
        FieldDef("count", "integer", L("数量", "Count"), min=0, max=10),
        FieldDef("due", "date", L("截止日期", "Due")),
        FieldDef("at", "datetime", L("时间", "At")),
        FieldDef("done", "boolean", L("完成", "Done")),
        FieldDef("category", "select", L("类别", "Category"),
                 options=(Option("new_business", L("拓新", "New business")),
                          Option("upsell", L("增购", "Upsell")))),
        FieldDef("tags", "multi_select", L("标签", "Tags"), options=(Option("a", L("甲", "A")),)),
        FieldDef("parent", "link", L("上级目标", "Parent"), entity="goal"),
        FieldDef("owner", "user", L("负责人", "Owner")),
        FieldDef("extra", "json", L("附加", "Extra")),
        FieldDef("actual", "money", L("实际值", "Actual"), read_only=True),
        FieldDef("secret", "text", L("机密", "Secret"), read_roles=("strategy",)),
    ) + extra
    return typed(EntityDef("goal", L("目标", "Goal"), fields,
                           permissions=(PermissionRule("employee", read="all", create=True, update="own"),)))


def make_built(entity: EntityDef, form: FormDef | None = None, version: int = 1):
    form = form or FormDef("new_goal", "goal", L("新目标", "New goal"), sections=(
        FormSection("basics", L("基本信息", "Basics"),
                    tuple(FormField(f.id) for f in entity.fields if f.writable)),))
    entity = typed(entity)
    app = AppDef(id="demo", version="1", label=L("演示", "Demo"), roles=(), settings=MappingProxyType({}),
                 entities=MappingProxyType({entity.id: entity}), forms=MappingProxyType({form.id: form}),
                 registries=REGISTRIES)
    return build(app, version)


def choices(field):
    return [tuple(c)[:2] for c in field.choices]


@pytest.fixture
def flask_ctx():
    app = Flask("t")
    app.config.update(SECRET_KEY="x" * 32, WTF_CSRF_ENABLED=False)
    with app.test_request_context():
        yield app


def test_form_class_has_a_field_per_form_field_with_the_widget_of_its_type(flask_ctx):
    built = make_built(goal_entity())
    form = form_class(built, "new_goal", "en")()
    expected = {"title": StringField, "notes": TextAreaField, "story": TextAreaField, "target": StringField,
                "count": StringField, "due": StringField, "at": StringField, "done": BooleanField,
                "category": SelectField, "tags": SelectMultipleField, "parent": SelectField,
                "owner": SelectField, "extra": TextAreaField, "secret": StringField}
    assert set(form.keel_fields) == set(expected)
    for fid, cls in expected.items():
        field = form_field(form, fid)
        assert type(field) is cls, fid
        assert field.name == fid  # the HTML name is the field id, whatever the attribute is called
    assert form_field(form, "due").render_kw["type"] == "date"
    assert form_field(form, "at").render_kw["type"] == "datetime-local"
    assert "actual" not in form.keel_fields  # read-only fields are not inputs
    # no value validators: values are checked by the field types on the write path
    assert all(not form_field(form, fid).validators for fid in expected)


def test_labels_help_and_options_follow_the_language(flask_ctx):
    built = make_built(goal_entity())
    zh = form_class(built, "new_goal", "zh")()
    en = form_class(built, "new_goal", "en")()
    assert form_field(zh, "title").label.text == "标题"
    assert form_field(en, "title").label.text == "Title"
    assert form_field(zh, "title").description == "简短的名称"
    assert zh.keel_fields["title"].required and not zh.keel_fields["notes"].required
    assert choices(form_field(zh, "category")) == [("", "—"), ("new_business", "拓新"), ("upsell", "增购")]
    assert choices(form_field(en, "category"))[1] == ("new_business", "New business")


def test_form_products_are_memoised_per_version():
    built = make_built(goal_entity())
    assert form_class(built, "new_goal", "zh") is form_class(built, "new_goal", "zh")
    assert form_class(built, "new_goal", "zh") is not form_class(built, "new_goal", "en")
    assert form_json_schema(built, "new_goal", "en") is form_json_schema(built, "new_goal", "en")


def test_a_field_added_to_the_definition_appears_in_form_and_schemas_with_no_other_change(flask_ctx):
    added = FieldDef("budget", "decimal", L("预算", "Budget"), required=True)
    before = goal_entity()
    after = goal_entity(added)
    for entity, present in ((before, False), (after, True)):
        built = make_built(entity)
        assert ("budget" in form_class(built, "new_goal", "en")().keel_fields) is present
        assert ("budget" in form_json_schema(built, "new_goal", "en")["properties"]) is present
        create = entity_json_schema(entity, None, "create")
        assert ("budget" in create["properties"]) is present
        assert ("budget" in create.get("required", [])) is present
        assert ("budget" in entity_json_schema(entity, None, "read")["properties"]) is present
        assert ("budget" in entity_form_class(built, "goal", "en")().keel_fields) is present


@pytest.mark.parametrize("mode", ["create", "update", "read"])
def test_entity_schemas_are_valid_draft_2020_12(mode):
    schema = entity_json_schema(goal_entity(), None, mode)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_form_schema_is_valid_and_carries_labels_sections_and_conditions():
    entity = goal_entity()
    form = FormDef("rev", "goal", L("修订", "Revision"), sections=(
        FormSection("why", L("原因", "Why"), (FormField("title", help=L("说明", "Explain")),
                                             FormField("category"),
                                             FormField("notes", visible_if="category == 'upsell'",
                                                       required=True))),
        FormSection("how", L("资源", "How"), (FormField("target", required=False),))))
    built = make_built(entity, form)
    schema = form_json_schema(built, "rev", "zh")
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert list(props) == ["title", "category", "notes", "target"]
    assert props["title"]["title"] == "标题" and props["title"]["description"] == "说明"
    assert props["category"]["x-enumLabels"] == {"new_business": "拓新", "upsell": "增购"}
    assert props["notes"]["x-visible-if"] == "category == 'upsell'"
    assert props["notes"]["x-required-if-visible"] is True
    assert props["target"]["x-section"] == "how"
    assert schema["required"] == ["title"]  # a conditional field cannot be unconditionally required
    assert schema["additionalProperties"] is False
    v = Draft202012Validator(schema)
    assert v.is_valid({"title": "x", "category": None})
    assert not v.is_valid({"title": "x", "hacker": 1})
    assert not v.is_valid({"category": "upsell"})
    assert not v.is_valid({"title": "x", "category": "nope"})


def test_create_schema_requires_required_writable_fields_and_refuses_system_and_read_only_ones():
    schema = entity_json_schema(goal_entity(), None, "create")
    v = Draft202012Validator(schema)
    assert schema["required"] == ["title"]
    assert v.is_valid({"title": "Grow", "target": "800000.00", "notes": None})
    assert not v.is_valid({})
    for forbidden in ("id", "row_version", "created_by", "actual"):
        assert not v.is_valid({"title": "x", forbidden: 1}), forbidden
    update = Draft202012Validator(entity_json_schema(goal_entity(), None, "update"))
    assert update.is_valid({}) and update.is_valid({"notes": "n"})
    assert not update.is_valid({"title": None})  # a required field may be left out but not emptied


def test_schemas_respect_the_actors_field_permissions():
    entity = goal_entity()
    employee = Actor(1, "li", frozenset({"employee"}))
    strategist = Actor(2, "wang", frozenset({"strategy"}))
    assert "secret" not in entity_json_schema(entity, employee, "read")["properties"]
    assert "secret" not in entity_json_schema(entity, employee, "create")["properties"]
    assert "secret" in entity_json_schema(entity, strategist, "read")["properties"]
    read = entity_json_schema(entity, strategist, "read")
    assert {"id", "row_version", "created_at", "actual"} <= set(read["properties"])
    Draft202012Validator(read).validate({"id": 1, "row_version": 1, "created_at": "2025-10-18T00:00:00+00:00",
                                         "created_by": None, "updated_at": "2025-10-18T00:00:00+00:00",
                                         "updated_by": 2, "title": "x", "target": None, "actual": "1.00"})


def test_unknown_keys_and_missing_required_fields_are_reported_together_with_value_errors():
    entity = goal_entity()
    form = FormDef("f", "goal", L("表", "Form"), sections=(FormSection("s", L("节", "S"), (
        FormField("title"), FormField("count"), FormField("notes", required=True))),))
    built = make_built(entity, form)
    with pytest.raises(FieldErrors) as e:
        form_values(built, "f", {"count": "eleven", "id": 5, "secret": "x"})
    got = {k: [m.msgid for m in v] for k, v in e.value.errors.items()}
    assert got == {"id": ["Unknown field."], "secret": ["Unknown field."],
                   "title": ["This field is required."], "notes": ["This field is required."],
                   "count": ["Must be a whole number."]}
    # The form's `required: false` overrides the field's own required.
    relaxed = FormDef("g", "goal", L("表", "Form"), sections=(FormSection("s", L("节", "S"), (
        FormField("title", required=False), FormField("count"))),))
    assert form_values(make_built(entity, relaxed), "g", {"count": "3"}) == {"count": "3"}


def test_form_roles_restrict_who_may_submit():
    form = FormDef("f", "goal", L("表", "Form"),
                   sections=(FormSection("s", L("节", "S"), (FormField("title"),)),),
                   roles=("strategy",))
    built = make_built(goal_entity(), form)
    with pytest.raises(PermissionDenied):
        check_roles(built, "f", Actor(1, "li", frozenset({"employee"})))
    check_roles(built, "f", Actor(2, "wang", frozenset({"strategy"})))
    check_roles(built, "f", Actor(3, "root", frozenset(), is_admin=True))


def test_collect_turns_empty_input_into_none_and_attach_errors_places_messages(flask_ctx):
    from werkzeug.datastructures import MultiDict

    built = make_built(goal_entity())
    cls = form_class(built, "new_goal", "en")
    form = cls(formdata=MultiDict({"title": "Grow", "count": "", "tags": ["a", "a"], "done": "y"}))
    values = collect(form)
    assert values["title"] == "Grow" and values["count"] is None and values["done"] is True
    assert values["tags"] == ["a", "a"] and values["notes"] is None
    general = attach_errors(form, {"count": ["Must be a whole number."], "_record": ["Broken."],
                                   "nope": ["Unknown field."], "actual": ["This field is read-only."]},
                            labels={"actual": "Actual"})
    assert form_field(form, "count").errors == ["Must be a whole number."]
    assert general == ["Broken.", "nope: Unknown field.", "Actual: This field is read-only."]


def test_a_field_named_like_a_form_attribute_does_not_break_the_form(flask_ctx):
    from werkzeug.datastructures import MultiDict

    entity = goal_entity(FieldDef("data", "text", L("数据", "Data")),
                         FieldDef("errors", "text", L("错", "Errors")))
    built = make_built(entity)
    form = form_class(built, "new_goal", "en")(formdata=MultiDict({"data": "d", "errors": "e"}))
    assert collect(form)["data"] == "d" and collect(form)["errors"] == "e"
    assert form.validate()  # the form's own machinery still works


def test_schema_modes_are_checked():
    with pytest.raises(ValueError):
        entity_json_schema(goal_entity(), None, "delete")


def test_a_built_app_from_replace_is_a_new_version():
    entity = goal_entity()
    built1 = make_built(entity, version=1)
    built2 = make_built(dataclasses.replace(entity, label=L("目标2", "Goal 2")), version=2)
    assert form_class(built1, "new_goal", "en") is not form_class(built2, "new_goal", "en")


def conditional_form_app():
    form = FormDef("f", "goal", L("表", "Form"), sections=(FormSection("s", L("节", "S"), (
        FormField("title"), FormField("category"), FormField("count", visible_if="count_needed"),
        FormField("notes", visible_if="category == 'upsell'", required=True),
        FormField("target", visible_if="target_floor > 100"))),))
    entity = goal_entity(FieldDef("count_needed", "boolean", L("需要", "Needed")),
                         FieldDef("target_floor", "integer", L("下限", "Floor")))
    section = form.sections[0]
    more = section.fields + (FormField("count_needed"), FormField("target_floor"))
    form = dataclasses.replace(form, sections=(dataclasses.replace(section, fields=more),))
    return make_built(entity, form)


def test_a_hidden_field_is_ignored_and_not_required():
    built = conditional_form_app()
    # category is not 'upsell': notes is hidden, so neither required nor kept (even with a bad value)
    values = form_values(built, "f", {"title": "T", "category": "new_business", "notes": "ignored",
                                      "count": "not a number"})
    assert values == {"title": "T", "category": "new_business"}
    # visible: now required
    with pytest.raises(FieldErrors) as e:
        form_values(built, "f", {"title": "T", "category": "upsell"})
    assert [m.msgid for m in e.value.errors["notes"]] == ["This field is required."]
    assert form_values(built, "f", {"title": "T", "category": "upsell", "notes": "why"})["notes"] == "why"


def test_conditions_see_parsed_values_from_page_text_and_an_unevaluable_condition_hides():
    from keel.forms.submit import visible_fields

    built = conditional_form_app()
    assert "count" in visible_fields(built, "f", {"count_needed": "on"})        # page checkbox text
    assert "count" not in visible_fields(built, "f", {"count_needed": False})
    assert "target" in visible_fields(built, "f", {"target_floor": "150"})      # "150" parsed to 150
    assert "target" not in visible_fields(built, "f", {"target_floor": "50"})
    assert "target" not in visible_fields(built, "f", {})                      # None > 100: not met
