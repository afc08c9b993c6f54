"""WTForms classes built from form and entity definitions.

The classes only collect raw input and check the CSRF token: they carry no value validators. Values go
through `forms.submit` and `storage.records`, which validate them with the field types, and the
messages that come back are attached to the fields for rendering (`attach_errors`). One set of rules,
one set of messages, for the page and the API alike.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    Field,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.utils import unset_value

try:  # WTForms 3.3 deprecates (value, label) tuples
    from wtforms import SelectChoice
except ImportError:  # pragma: no cover - WTForms < 3.3
    def SelectChoice(value, label):
        return (value, label)

from keel.definitions.model import EntityDef, FieldDef, Label
from keel.errors import Message
from keel.forms.schema import form_def, form_field_required

# Form attributes are prefixed so that a field called `data`, `errors` or `meta` cannot shadow the
# FlaskForm's own attributes; the HTML name stays the field id.
PREFIX = "f_"
# A link/user select lists at most this many choices; beyond it the field takes a typed id.
MAX_CHOICES = 500
# A table grid shows this many empty rows below the filled ones (never beyond the field's max_rows).
BLANK_ROWS = 3
# What follows "<field>-" in the name of a grid input: "<row>-<column>", rows numbered from 1.
GRID_NAME = re.compile(r"([0-9]{1,4})-([a-z][a-z0-9_]*)")


@dataclass(frozen=True)
class FieldSpec:
    """What the template needs about one field, beside the WTForms field itself."""

    id: str
    type: str
    widget: str
    label: str
    help: str | None
    required: bool
    visible_if: str | None
    section: str
    target: str | None  # the entity of a link field, "user" for user fields

    @property
    def attr(self) -> str:
        return PREFIX + self.id


@dataclass(frozen=True)
class SectionSpec:
    id: str
    label: str
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table grid, derived from the column's declaration (`FieldDef.columns`)."""

    id: str
    type: str
    widget: str  # text, textarea, number, date, datetime, select, multiselect
    label: str
    required: bool
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) of a select column


@dataclass(frozen=True)
class GridCell:
    column: ColumnSpec
    name: str  # "<field>-<row>-<column>"
    value: Any  # the text shown (a list of texts for a multiselect)
    label: str  # for screen readers: "<column label> <row>"


def _column_spec(c: FieldDef, lang: str) -> ColumnSpec:
    from keel.i18n import translate

    widget = c.ftype.widget
    choices = tuple((o.id, o.label.get(lang)) for o in c.options)
    if widget == "checkbox":  # a grid needs "no answer" too: a row is empty when all its cells are
        widget, choices = "select", (("true", translate("Yes")), ("false", translate("No")))
    elif widget == "richtext":
        widget = "textarea"
    return ColumnSpec(c.id, c.type, widget, c.label.get(lang), c.required, choices)


def _cell_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


class TableGridField(Field):
    """A `table` field edited as a grid of inputs named `<field>-<row>-<column>` (rows from 1), without
    script. `data` is the list of rows as typed (text per cell, None for an empty cell; rows whose
    cells are all empty are left out): the field type parses and checks them on the write path like
    any other value, and on an error the grid shows them again as they were typed."""

    def __init__(self, *, columns: tuple[ColumnSpec, ...], max_rows: int, **kw):
        super().__init__(**kw)
        self.columns, self.max_rows = columns, max_rows

    def process(self, formdata, data=unset_value, extra_filters=None):
        super().process(formdata, data, extra_filters)
        if formdata is not None:
            self.data = self._typed_rows(formdata)

    def _typed_rows(self, formdata) -> list[dict[str, Any]]:
        by_id = {c.id: c for c in self.columns}
        prefix = self.name + "-"
        found: dict[int, dict[str, Any]] = {}
        for key in formdata:
            m = GRID_NAME.fullmatch(key[len(prefix):]) if key.startswith(prefix) else None
            if m is None or m.group(2) not in by_id:
                continue
            texts = [t for t in formdata.getlist(key) if t.strip()]
            if by_id[m.group(2)].widget == "multiselect":
                value = texts or None
            else:
                value = texts[0] if texts else None
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value
        rows = []
        for n in sorted(found):
            row = {c.id: found[n].get(c.id) for c in self.columns}
            if any(v is not None for v in row.values()):
                rows.append(row)
        return rows

    def grid(self) -> list[list[GridCell]]:
        """The rows of inputs: one per row so far, then empty ones up to BLANK_ROWS (within max_rows)."""
        rows = [r for r in (self.data or []) if isinstance(r, Mapping)]
        count = max(len(rows), min(len(rows) + BLANK_ROWS, self.max_rows))
        out = []
        for i in range(count):
            row = rows[i] if i < len(rows) else {}
            out.append([GridCell(c, f"{self.name}-{i + 1}-{c.id}", _cell_text(row.get(c.id)),
                                 f"{c.label} {i + 1}") for c in self.columns])
        return out

    def column_labels(self) -> dict[str, str]:
        return {c.id: c.label for c in self.columns}


def _widget_field(f: FieldDef, spec: FieldSpec, lang: str) -> Field:
    render_kw: dict[str, Any] = {}
    if spec.required:
        # aria only: the browser's own `required` check would pre-empt the server's translated message
        render_kw["aria-required"] = "true"
    if spec.help:
        render_kw["aria-describedby"] = f"help-{f.id}"
    kw = {"label": spec.label, "description": spec.help or "", "name": f.id, "render_kw": render_kw}
    w = spec.widget
    if w == "table":
        # max_rows as the field type states it (its JSON Schema), so the grid and the check agree
        max_rows = f.ftype.json_schema(f).get("maxItems") or BLANK_ROWS
        return TableGridField(columns=tuple(_column_spec(c, lang) for c in f.columns), max_rows=max_rows,
                              **kw)
    if w == "checkbox":
        return BooleanField(**kw)
    if w in ("textarea", "richtext", "json"):
        render_kw["class"] = w
        render_kw["rows"] = 8 if w != "textarea" else 5
        return TextAreaField(**kw)
    if w == "select":
        choices = [SelectChoice("", "—")] + [SelectChoice(o.id, o.label.get(lang)) for o in f.options]
        # validate_choice off: an unknown option is reported by the field type, in the user's language
        return SelectField(choices=choices, validate_choice=False, **kw)
    if w == "multiselect":
        return SelectMultipleField(choices=[SelectChoice(o.id, o.label.get(lang)) for o in f.options],
                                   validate_choice=False, **kw)
    if w == "number":
        render_kw.update({"inputmode": "decimal", "class": "number"})
    elif w == "date":
        render_kw["type"] = "date"
    elif w == "datetime":
        render_kw["type"] = "datetime-local"
    return StringField(**kw)


def _spec(f: FieldDef, section: str, lang: str, *, help_: Label | None, required: bool,
          visible_if: str | None) -> FieldSpec:
    t = f.ftype
    target = "user" if f.type == "user" else (f.entity if f.type == "link" else None)
    # A field with declared columns (the `table` type) is a grid; its type's own widget is raw JSON.
    widget = "table" if f.columns and t.widget == "json" else t.widget
    return FieldSpec(id=f.id, type=f.type, widget=widget, label=f.label.get(lang),
                     help=help_.get(lang) if help_ else None, required=required, visible_if=visible_if,
                     section=section, target=target)


def _make_class(name: str, sections: tuple[SectionSpec, ...], fields: Mapping[str, FieldDef], lang: str,
                extra: Mapping[str, Any] | None = None) -> type[FlaskForm]:
    attrs: dict[str, Any] = dict(extra or {})
    for s in sections:
        for spec in s.fields:
            attrs[spec.attr] = _widget_field(fields[spec.id], spec, lang)
    attrs["keel_sections"] = sections
    attrs["keel_fields"] = {spec.id: spec for s in sections for spec in s.fields}
    return type(name, (FlaskForm,), attrs)


def form_class(built, form_id: str, lang: str) -> type[FlaskForm]:
    """The WTForms class of a form definition, labels in `lang`. Memoised per app version."""
    return built.product(("form_class", form_id, lang), lambda: _build_form_class(built, form_id, lang))


def _build_form_class(built, form_id: str, lang: str) -> type[FlaskForm]:
    form = form_def(built, form_id)
    entity = built.entity(form.entity)
    sections = []
    for s in form.sections:
        specs = []
        for ff in s.fields:
            f = entity.field(ff.field)
            if f is None:
                continue
            specs.append(_spec(f, s.id, lang, help_=ff.help or f.help,
                               required=form_field_required(f, ff), visible_if=ff.visible_if))
        sections.append(SectionSpec(s.id, s.label.get(lang), tuple(specs)))
    return _make_class(f"{built.id}_{form_id}_form", tuple(sections), entity.field_map, lang)


def entity_form_class(built, entity_id: str, lang: str) -> type[FlaskForm]:
    """An edit form over every writable field of an entity, with the row version it was read at (so a
    stale edit is refused with 409 instead of overwriting someone else's change)."""
    return built.product(("entity_form_class", entity_id, lang),
                         lambda: _build_entity_form_class(built.entity(entity_id), built.id, lang))


def _build_entity_form_class(entity: EntityDef, app_id: str, lang: str) -> type[FlaskForm]:
    specs = tuple(_spec(f, "main", lang, help_=f.help, required=f.required, visible_if=None)
                  for f in entity.fields if f.writable)
    return _make_class(f"{app_id}_{entity.id}_edit", (SectionSpec("main", entity.label.get(lang), specs),),
                       entity.field_map, lang, extra={"row_version": HiddenField(name="row_version")})


def form_field(form: FlaskForm, field_id: str) -> Field | None:
    """The WTForms field of a definition field id."""
    return form._fields.get(PREFIX + field_id)


def collect(form: FlaskForm, field_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """The raw submitted values by field id; empty input becomes None. Nothing is converted here:
    the field types parse the text, so a page and the API get the same messages."""
    out: dict[str, Any] = {}
    ids = form.keel_fields if field_ids is None else field_ids
    for fid in ids:
        field = form_field(form, fid)
        if field is None:
            continue
        value = field.data
        if value == "" or value == []:
            value = None
        out[fid] = value
    return out


def prefill(form: FlaskForm, values: Mapping[str, Any]) -> None:
    """Show stored (JSON-form) values in the inputs of an edit form."""
    for fid, spec in form.keel_fields.items():
        field = form_field(form, fid)
        v = values.get(fid)
        if v is None:
            continue
        if spec.widget == "json":
            v = json.dumps(v, ensure_ascii=False, indent=2)
        elif spec.widget == "table":
            v = [dict(r) for r in v if isinstance(r, Mapping)] if isinstance(v, list) else []
        elif spec.widget == "datetime" and isinstance(v, str):
            v = v[:16]  # datetime-local shows YYYY-MM-DDTHH:MM
        elif spec.widget == "select" and spec.target:
            v = str(v)
        field.data = v


def attach_errors(form: FlaskForm, errors: Mapping[str, list],
                  labels: Mapping[str, str] | None = None) -> list[str]:
    """Put field errors next to their fields; return the ones that belong to no field of the form
    (about the record as a whole, or a field the form does not show), prefixed with the field's label."""
    general: list[str] = []
    for fid, messages in errors.items():
        texts = [str(m) for m in messages]
        field = form_field(form, fid)
        if field is None:
            name = (labels or {}).get(fid, fid)
            general.extend(texts if fid == "_record" else [f"{name}: {t}" for t in texts])
        else:
            if isinstance(field, TableGridField):
                texts = [str(_with_column_label(m, field.column_labels())) for m in messages]
            field.errors = list(field.errors or []) + texts
    return general


def _with_column_label(message: Any, labels: Mapping[str, str]) -> Any:
    """A table's row message names the column by its id; the reader knows it by its label."""
    if not isinstance(message, Message):
        return message
    params = tuple((k, labels.get(v, v) if k == "col" and isinstance(v, str) else v) for k, v in message.params)
    return replace(message, params=params)


def set_choices(form: FlaskForm, choices: Mapping[str, list[tuple[str, str]]]) -> None:
    """Give the link and user selects of this form instance their options (they depend on the reader)."""
    for fid, opts in choices.items():
        field = form_field(form, fid)
        if field is not None:
            field.choices = [SelectChoice("", "—")] + [SelectChoice(str(v), label) for v, label in opts]
