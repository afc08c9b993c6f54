"""The header's language switch: POST /language stores the choice in the session and, for a signed-in user,
in their profile (`users.locale`, audited as their own change), so it sticks on the next sign-in and on
every device. A plain `?lang=` link switches only the session, and a GET never writes."""
from __future__ import annotations

from flask import Blueprint, abort, redirect, request, session, url_for

from keel.web.i18n_setup import SESSION_KEY, normalise

bp = Blueprint("language", __name__)


def _public(view):
    from keel.auth import public

    return public(view)


@bp.post("/language")
@_public  # the login page offers the switch too (CSRF still applies)
def choose_language():
    from keel.auth import safe_next
    from keel.web.context import signed_in_actor

    chosen = normalise(request.form.get("lang"))
    if chosen is None:
        abort(400)
    session[SESSION_KEY] = chosen
    who = signed_in_actor()
    if who is not None and who.locale != chosen:
        from keel.storage.audit import record_event
        from keel.storage.system import users
        from keel.web.pages import runtime

        with runtime().engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == who.user_id).values(locale=chosen))
            record_event(conn, who, "user.locale", detail={"locale": chosen})
    return redirect(safe_next(request.form.get("next")) or url_for("web.workbench"))
