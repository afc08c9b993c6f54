"""Languages: zh_CN by default, English on request; every engine message has a Chinese translation."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from keel.errors import FieldErrors, Message
from keel.web.i18n_setup import TRANSLATIONS, normalise

PACKAGE = Path(__file__).resolve().parent.parent / "platform" / "keel"
PO = TRANSLATIONS / "zh" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
# The same keywords as platform/keel/babel.cfg's extract command.
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None,
            "translate": None, "of": None, "add": (2,), "FieldValueError": None, "N_": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalog():
    with PO.open("rb") as f:
        return read_po(f)


def extracted_msgids() -> set[str]:
    method_map = [("**.py", "python"), ("web/templates/**.html", "jinja2")]
    out = set()
    for _file, _line, msg, _comments, _ctx in extract_from_dir(str(PACKAGE), method_map, keywords=KEYWORDS):
        out.add(msg[0] if isinstance(msg, tuple) else msg)
    return {m for m in out if m}


@pytest.mark.parametrize("given,expected", [
    ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("zh", "zh_CN"), ("zh-CN", "zh_CN"), ("zh_TW", "zh_CN"),
    ("fr", None), ("", None), (None, None)])
def test_language_names_are_normalised_to_the_supported_locales(given, expected):
    assert normalise(given) == expected


def test_every_message_in_the_code_and_templates_is_in_the_catalog():
    known = {m.id for m in catalog() if m.id}
    missing = sorted(extracted_msgids() - known)
    assert not missing, f"run the commands in platform/keel/babel.cfg and translate: {missing!r}"


def test_every_catalog_entry_is_translated_keeping_its_placeholders():
    for m in catalog():
        if not m.id:
            continue
        assert m.string and "fuzzy" not in m.flags, m.id
        assert sorted(PLACEHOLDER.findall(m.id)) == sorted(PLACEHOLDER.findall(m.string)), m.id


def test_the_compiled_catalog_matches_the_po_file():
    po = {m.id: m.string for m in catalog() if m.id}
    with MO.open("rb") as f:
        mo = {m.id: m.string for m in read_mo(f) if m.id}
    assert mo == po, "run pybabel compile -d platform/keel/translations"


def test_engine_messages_render_in_the_request_language(app):
    msg = Message.of("Must be at least %(min)s.", min="0")
    errors = FieldErrors()
    errors.add("title", "This field is required.")
    with app.test_request_context("/"):
        assert msg.render() == "不能小于 0。"
        assert errors.rendered() == {"title": ["此字段为必填项。"]}
    with app.test_request_context("/?lang=en"):
        assert msg.render() == "Must be at least 0."
        assert errors.rendered() == {"title": ["This field is required."]}
    assert msg.render() == "Must be at least 0."  # outside a request: the msgid itself


def test_accept_language_and_session_choice(app):
    from flask import session
    from flask_babel import get_locale

    with app.test_request_context("/", headers={"Accept-Language": "en-GB,en;q=0.8"}):
        assert str(get_locale()) == "en"
    with app.test_request_context("/", headers={"Accept-Language": "zh-TW,zh;q=0.9"}):
        assert get_locale().language == "zh"
    with app.test_request_context("/?lang=en", headers={"Accept-Language": "zh-CN"}):
        assert str(get_locale()) == "en" and session["lang"] == "en"
    with app.test_request_context("/"):
        assert get_locale().language == "zh"  # default


def test_login_and_error_pages_follow_the_chosen_language(client):
    zh = client.get("/login")
    assert "登录" in zh.text
    en = client.get("/login?lang=en")
    assert "Sign in" in en.text and "登录" not in en.text
    assert "Sign in" in client.get("/login").text  # remembered in the session
    r = client.get("/static/nope.css")
    assert r.status_code == 404 and "This page does not exist." in r.text
