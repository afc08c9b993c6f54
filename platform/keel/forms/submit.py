"""Submitting a form: the one path shared by the form page and `POST /api/v1/apps/{app}/forms/{form}`.

What a form adds on top of the entity's own rules (which `storage.records` applies): only the form's
fields may be sent, a field whose `visible_if` is false is ignored (and so not required), and the form
may make a field required or optional for itself and restrict who may submit it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import FieldErrors, PermissionDenied
from keel.fieldtypes.base import FieldValueError
from keel.forms.schema import form_def, form_field_required


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _compiled_conditions(built, form_id: str) -> dict[str, Any]:
    def build() -> dict[str, Any]:
        from keel.expressions import compile_expression

        form = form_def(built, form_id)
        return {ff.field: compile_expression(ff.visible_if) for ff in form.fields if ff.visible_if}

    return built.product(("form_conditions", form_id), build)


def condition_inputs(built, form_id: str) -> set[str]:
    """The fields whose values decide whether some other field of the form is shown."""
    return {name for cond in _compiled_conditions(built, form_id).values() for name in cond.names}


def expression_values(built, form_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values as a condition sees them: parsed by their field types (so `amount > 100` works
    on text from a page as on a number from the API); a value that does not parse counts as empty."""
    form = form_def(built, form_id)
    entity = built.entity(form.entity)
    values: dict[str, Any] = {}
    for ff in form.fields:
        f = entity.field(ff.field)
        v = data.get(ff.field)
        if f is None or _empty(v):
            values[ff.field] = None
            continue
        try:
            values[ff.field] = f.ftype.parse(f, v)
        except FieldValueError:
            values[ff.field] = None
    return values


def visible_fields(built, form_id: str, data: Mapping[str, Any]) -> set[str]:
    """The form fields shown for these values. A condition that cannot be evaluated (e.g. it compares an
    empty value) is not met, so its field stays hidden until the values it depends on are given."""
    from keel.expressions import ExpressionError

    form = form_def(built, form_id)
    conditions = _compiled_conditions(built, form_id)
    values = expression_values(built, form_id, data) if conditions else {}
    shown = set()
    for ff in form.fields:
        cond = conditions.get(ff.field)
        if cond is None:
            shown.add(ff.field)
            continue
        try:
            if cond.evaluate(values):
                shown.add(ff.field)
        except ExpressionError:
            pass  # e.g. `amount > 100` while amount is empty: not met
    return shown


def check_roles(built, form_id: str, actor: Actor) -> None:
    form = form_def(built, form_id)
    if form.roles is not None and not actor.is_admin and not (set(form.roles) & set(actor.roles)):
        raise PermissionDenied(f"form '{form_id}' is not open to this user")


def form_values(built, form_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Check a submission against the form and return the values to write: raises FieldErrors with every
    problem the form itself can see (unknown keys, required fields) and every value a field type refuses,
    so the user gets all messages at once."""
    form = form_def(built, form_id)
    entity = built.entity(form.entity)
    known = {ff.field for ff in form.fields}
    errors = FieldErrors()
    for key in data:
        if key not in known:
            errors.add(key, "Unknown field.")
    shown = visible_fields(built, form_id, data)
    values: dict[str, Any] = {}
    for ff in form.fields:
        f = entity.field(ff.field)
        if f is None or ff.field not in shown:
            continue  # a hidden field's value is ignored, whatever was sent
        v = data.get(ff.field)
        if _empty(v):
            if form_field_required(f, ff):
                errors.add(f.id, "This field is required.")
            continue
        values[f.id] = v
    if errors:
        # Other problems already stop this submission: report the values' own problems with them now
        # (the write path would report the same ones, from the same field types).
        for fid, v in values.items():
            _type_messages(errors, entity.field(fid), v)
        raise errors
    return values


def _type_messages(errors: FieldErrors, f, value: Any) -> None:
    t = f.ftype
    try:
        parsed = t.parse(f, value)
    except FieldValueError as e:
        errors.errors.setdefault(f.id, []).extend(e.messages)
        return
    problems = t.check(f, parsed)
    if problems:
        errors.errors.setdefault(f.id, []).extend(problems)


def submit_form(conn: sa.Connection, built, form_id: str, data: Mapping[str, Any], actor: Actor) -> dict:
    """Create the form's record from submitted values (JSON values or page text). Returns the created
    record; raises PermissionDenied, NotFound or FieldErrors (and writes nothing then)."""
    from keel.storage import records

    form = form_def(built, form_id)
    check_roles(built, form_id, actor)
    values = form_values(built, form_id, data)
    # The record event names the form: a workflow that starts on it starts in this transaction (and a
    # 422 when nobody can approve rolls the record back with it).
    return records.create(conn, built, form.entity, values, actor, origin={"form": form_id})
