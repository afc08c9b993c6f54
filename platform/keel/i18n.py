"""Translation of engine messages. Definitions carry their own zh/en labels; engine messages are
English msgids translated by Flask-Babel (zh_CN is the default locale)."""
from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context

DEFAULT_LOCALE = "zh_CN"
LOCALES = ("zh_CN", "en")


def translate(msgid: str, **params: Any) -> str:
    text = msgid
    if has_request_context() and "babel" in current_app.extensions:
        from flask_babel import gettext

        text = gettext(msgid)
    return text % params if params else text


def current_lang() -> str:
    """'zh' or 'en', for picking a definition label."""
    if has_request_context() and "babel" in current_app.extensions:
        from flask_babel import get_locale

        loc = get_locale()
        if loc is not None and loc.language == "en":
            return "en"
    return "zh"
