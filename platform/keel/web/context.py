"""What every page's header shows: the user, the apps and forms they can use, the language switch and the
unread count, computed once per rendered page."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, request, url_for
from flask_wtf.csrf import generate_csrf

from keel.i18n import current_lang
from keel.web.i18n_setup import SESSION_KEY, normalise


@dataclass(frozen=True)
class NavLink:
    href: str
    text: str


def signed_in_actor():
    """The actor of a signed-in user, or None (login and error pages render without one)."""
    try:
        from keel.auth import current_actor

        who = current_actor()
    except Exception:  # not signed in, or auth not set up
        return None
    if who is None or getattr(who, "user_id", None) is None:
        return None
    return who


def usable_forms(built, who, lang: str) -> list[NavLink]:
    """The app's forms this user may submit: the form's roles, else whoever may create its entity."""
    from keel.storage.permissions import can_create

    out = []
    for form in built.definition.forms.values():
        if form.roles is not None:
            ok = who.is_admin or bool(set(form.roles) & set(who.roles))
        else:
            entity = built.definition.entities.get(form.entity)
            ok = entity is not None and can_create(entity, who)
        if ok:
            out.append(NavLink(url_for("web.form_page", app_id=built.id, form_id=form.id),
                               form.label.get(lang)))
    return out


def app_lists(built, who, lang: str) -> list[NavLink]:
    """The app's list views this user may open (the app menu offers them before the "new" forms)."""
    from keel.web.list_views import menu_views

    out = []
    for view, entity in menu_views(built, who):
        query = "" if view.generated else f"?view={view.id}"
        out.append(NavLink(url_for("web.record_list", app_id=built.id, entity_id=entity.id) + query,
                           view.title(entity, lang)))
    return out


def _context() -> dict:
    lang = current_lang()
    who = signed_in_actor()
    nav: list[tuple[str, list[NavLink], list[NavLink]]] = []
    if who is not None:
        from keel.web.pages import runtime

        for built in sorted(runtime().apps(), key=lambda b: b.id):
            forms = usable_forms(built, who, lang)
            lists = app_lists(built, who, lang)
            if forms or lists:
                nav.append((built.definition.label.get(lang), lists, forms))
    return {"lang": lang, "html_lang": "en" if lang == "en" else "zh-CN", "actor": who,
            "user_name": _display_name(who),
            "nav_forms": nav, "unread_count": 0}


def _display_name(who) -> str:
    if who is None:
        return ""
    import sqlalchemy as sa

    from keel.storage.system import users
    from keel.web.pages import runtime

    with runtime().engine.connect() as conn:
        name = conn.execute(sa.select(users.c.display_name).where(users.c.id == who.user_id)).scalar()
    return name or who.username


def _remember_lang() -> None:
    # Flask-Babel asks for the locale lazily; store an explicit ?lang= even on a page that translates
    # nothing, so the next page keeps it (for this session; the header's switch also keeps it in the
    # user's profile: keel.web.language).
    chosen = normalise(request.args.get("lang"))
    if chosen:
        from flask import session

        session[SESSION_KEY] = chosen


def init_app(app: Flask) -> None:
    app.context_processor(_context)
    app.jinja_env.globals.setdefault("csrf_token", generate_csrf)
    app.before_request(_remember_lang)
