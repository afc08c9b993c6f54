"""Templates in connector URLs, headers, query parameters and bodies.

They render in Jinja's immutable sandbox (docs/security.md, "template injection"): the template text comes
from an admin's definition, the values are data. A value is inserted once and never rendered again, so
a record holding `{{7*7}}` comes out literally. Autoescape is off because the outputs are URLs and header
values, not HTML; URL parts are escaped explicitly with the `urlencode` filter.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Template, TemplateSyntaxError

from keel.errors import KeelError
from keel.sandbox import BoundedSandbox, RenderFailed, render_or_explain, sandbox, underscore_names

MAX_OUTPUT = 1_000_000  # characters one rendering may produce


class TemplateError(KeelError):
    """A template that does not compile, names an unknown value or tries an unsafe operation."""

    def __init__(self, message: str, template: str = ""):
        super().__init__(message)
        self.message = message
        self.template = template[:80]

    def __str__(self) -> str:
        return f"{self.message} (in template {self.template!r})" if self.template else self.message


def _urlencode(value: Any) -> str:
    """Percent-encode a value for any URL part: unlike Jinja's own filter, '/' is encoded too, so a
    value cannot add path segments."""
    if isinstance(value, Mapping):
        return urlencode([(str(k), str(v)) for k, v in value.items()])
    return quote(str(value), safe="")


def _environment() -> BoundedSandbox:
    env = sandbox(autoescape=False, keep_trailing_newline=True)
    env.filters["urlencode"] = _urlencode
    return env


_ENV = _environment()


@functools.lru_cache(maxsize=1024)
def _compile(template: str) -> Template:
    return _ENV.from_string(template)


def compile_template(template: str) -> Template:
    """Compile (once; cached by text) or raise TemplateError with the line of the syntax error."""
    try:
        return _compile(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}", template) from None


def template_problem(template: str, sample: Mapping[str, Any] | None = None) -> str | None:
    """Why a template cannot be used, or None; for validating definitions: a syntax error, a `_` name,
    or — rendered against `sample`, the data it will get — an unknown name, an unsafe operation or a
    template over its budget."""
    try:
        compile_template(template)
    except TemplateError as exc:
        return exc.message
    for name in underscore_names(_ENV.parse(template)):
        return f"the template reads '{name}': names starting with '_' are not available in templates"
    if sample is not None:
        try:
            render(template, sample)
        except TemplateError as exc:
            return exc.message
    return None


def render(template: str, values: Mapping[str, Any]) -> str:
    """Render `template` with `values` as data. Raises TemplateError, never a Jinja exception."""
    compiled = compile_template(template)
    try:
        out = render_or_explain(compiled, values)
    except RenderFailed as exc:
        raise TemplateError(f"template {exc}", template) from None
    if len(out) > MAX_OUTPUT:
        raise TemplateError(f"template output exceeds {MAX_OUTPUT} characters", template)
    return out
