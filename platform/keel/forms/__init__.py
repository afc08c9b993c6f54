"""Forms from definitions: a WTForms class for pages and a JSON Schema for the API, both derived from the
same field declarations, and `submit_form`, the one submit path both use."""
from __future__ import annotations

from keel.forms.build import entity_form_class, form_class
from keel.forms.schema import entity_json_schema, form_json_schema
from keel.forms.submit import submit_form

__all__ = ["entity_form_class", "entity_json_schema", "form_class", "form_json_schema", "submit_form"]
