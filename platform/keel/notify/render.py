"""Rendering a notification definition's subject and body, once per language, when a message is sent.

docs/security.md, "template injection" (Frappe #8464, n8n CVE-2026-27493, Budibase #13259): the template
text comes from an admin's definition and renders in Jinja's immutable sandbox with autoescape; the
context (record values, a comment) is data. The output is stored and never rendered again, so a value
`{{7*7}}` stays `{{7*7}}` everywhere it is shown or sent. A template that reaches for `_`-attributes
(`{{ ''.__class__.__mro__ }}`) is an error, found when the definition is checked and again when it
renders, never turned into text.

Stored form: `subject` is plain text (pages escape it when they show it); `body` is HTML-safe text
(values escaped, the template's own markup limited to a few harmless tags by nh3). `plain_text` turns
a stored body into text for channels that are not HTML (group robots, e-mail)."""
from __future__ import annotations

import functools
import html
from collections.abc import Mapping
from typing import Any

import nh3
from jinja2 import Template, TemplateSyntaxError
from markupsafe import escape

from keel.errors import KeelError
from keel.sandbox import BoundedSandbox, Budget, RenderFailed, render_or_explain, sandbox, underscore_names

LANGS = ("zh", "en")
MAX_SUBJECT = 500
MAX_BODY = 20_000
# The template's own markup that survives in a body; everything else (script, style, on* attributes)
# is removed. Values never bring markup: they are escaped before this runs.
BODY_TAGS = frozenset({"b", "strong", "i", "em", "br", "p", "ul", "ol", "li", "code", "a"})
# A message is rendered inside the transaction of the approval that sends it (on SQLite, holding the
# write lock): far less than the default budget, and a little more output than a body keeps.
BUDGET = Budget(max_output=5 * MAX_BODY, max_steps=20_000, max_string=100_000, seconds=0.5)


class NotificationTemplateError(KeelError):
    """A notification template that does not compile, names an unknown value or tries something unsafe."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.message, self.where = message, where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def _environment() -> BoundedSandbox:
    return sandbox(autoescape=True)


_ENV = _environment()


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> Template:
    return _ENV.from_string(text)


def template_problem(text: str) -> str | None:
    """Why `text` is not a usable template (syntax, or access to a `_` attribute), or None."""
    try:
        tree = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    for name in underscore_names(tree):
        return f"the template reads '{name}': names starting with '_' are not available in templates"
    return None


def render_text(text: str, context: Mapping[str, Any], where: str = "") -> str:
    """Render one template with `context` as data; the result is HTML-safe (values escaped)."""
    problem = template_problem(text)
    if problem:
        raise NotificationTemplateError(problem, where)
    try:
        out = render_or_explain(_compile(text), context, BUDGET)
    except RenderFailed as exc:
        raise NotificationTemplateError(f"the template {exc}", where) from None
    return out


def _subject(markup: str) -> str:
    # A subject is one line of plain text; data may have brought newlines (a header-injection risk
    # for e-mail) or markup (escaped by the render; shown as text).
    text = plain_text(markup)
    return " ".join(text.split())[:MAX_SUBJECT]


def _body(markup: str) -> str:
    return nh3.clean(markup, tags=set(BODY_TAGS), attributes={"a": {"href"}},
                     url_schemes={"http", "https", "mailto"})[:MAX_BODY]


def render_message(subject: Mapping[str, str], body: Mapping[str, str], context: Mapping[str, Any],
                   where: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """Subject and body templates ({zh, en}) rendered once per language: ({lang: subject}, {lang: body})."""
    subjects, bodies = {}, {}
    for lang in LANGS:
        s = subject.get(lang) or subject.get("zh") or subject.get("en") or ""
        b = body.get(lang) or body.get("zh") or body.get("en") or ""
        subjects[lang] = _subject(render_text(s, context, f"{where}/subject/{lang}"))
        bodies[lang] = _body(render_text(b, context, f"{where}/body/{lang}"))
    return subjects, bodies


def literal_message(subject: Mapping[str, str] | str, body: Mapping[str, str] | str | None
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """A message whose text is given (a system message, a comment): data, never a template."""
    def per_lang(value) -> dict[str, str]:
        if value is None:
            return {lang: "" for lang in LANGS}
        if isinstance(value, str):
            return {lang: value for lang in LANGS}
        return {lang: str(value.get(lang) or value.get("zh") or value.get("en") or "") for lang in LANGS}

    subjects = {k: _subject(str(escape(v))) for k, v in per_lang(subject).items()}
    bodies = {k: str(escape(v)).replace("\n", "<br>")[:MAX_BODY] for k, v in per_lang(body).items()}
    return subjects, bodies


def plain_text(markup: str) -> str:
    """A stored (HTML-safe) body as text: line breaks kept, tags dropped, entities decoded. Not a render:
    no template syntax is looked at, so `{{7*7}}` stays what it is."""
    text = markup.replace("<br>", "\n").replace("</p>", "\n")
    return html.unescape(nh3.clean(text, tags=set())).strip()


def pick(per_lang: Mapping[str, str] | None, lang: str | None) -> str:
    """The stored text for a reader's language (zh unless the reader reads English)."""
    if not per_lang:
        return ""
    key = "en" if (lang or "").lower().startswith("en") else "zh"
    return per_lang.get(key) or per_lang.get("zh") or per_lang.get("en") or ""
