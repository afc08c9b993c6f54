"""Flask-Babel set-up: which language a request is answered in.

Order: `?lang=` (remembered in the session), the session's choice, the signed-in user's own locale (set by
the header's switch, keel.web.language, so a choice sticks across sessions and devices), the browser's
Accept-Language best match, then zh_CN — the default for a new user whose browser names no language Keel
speaks.
"""
from __future__ import annotations

from pathlib import Path

from flask import Flask, request, session
from flask_babel import Babel

from keel.i18n import DEFAULT_LOCALE, LOCALES

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"
SESSION_KEY = "lang"


def normalise(value: str | None) -> str | None:
    """'en', 'en-US', 'zh', 'zh-CN', 'zh_cn' -> a supported locale; anything else -> None."""
    if not value:
        return None
    v = value.strip().replace("-", "_").lower()
    if v.startswith("en"):
        return "en"
    if v.startswith("zh"):
        return "zh_CN"
    return None


def _user_locale() -> str | None:
    try:
        from keel.auth import current_actor

        actor = current_actor()
    except Exception:  # no user yet (login page, before auth set-up): no preference
        return None
    return normalise(getattr(actor, "locale", None))


def select_locale() -> str:
    chosen = normalise(request.args.get("lang"))
    if chosen:
        session[SESSION_KEY] = chosen
        return chosen
    remembered = normalise(session.get(SESSION_KEY))
    if remembered:
        return remembered
    own = _user_locale()
    if own:
        return own
    # nobody chose: the browser's language (Keel's test kit and API clients rely on it), else zh_CN;
    # werkzeug matches 'zh-CN' against 'zh_CN'; map 'zh' and 'zh-TW' etc. ourselves
    best = request.accept_languages.best_match(["zh_CN", "zh", "en"])
    return normalise(best) or DEFAULT_LOCALE


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    Babel(app, locale_selector=select_locale, default_locale=DEFAULT_LOCALE,
          default_translation_directories=str(TRANSLATIONS))
    app.config["KEEL_LOCALES"] = LOCALES
