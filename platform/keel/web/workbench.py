"""The personal workbench: a board of sections of cards. What a user sees is decided by definitions — each
app's `workbench/*.json` (entity sections: mine, my team's, my department's; or a section a plugin
registered, placed by name; each optionally for some roles) — plus the engine's sections every user has
(pending approvals, changed items in yellow, unread inbox), all registered through `keel_workbench_sections`.
Records changed for the viewer are yellow wherever they appear, with an acknowledge button."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import abort, flash, redirect, render_template, request, url_for

from keel.errors import KeelError
from keel.i18n import translate
from keel.web.context import usable_forms
from keel.web.pages import actor, bp, lang, runtime
from keel.web.workbench_cards import default_definitions, entity_section, label_text
from keel.web.workbench_model import AUTO, SectionView, WorkbenchContext

log = logging.getLogger("keel.web.workbench")


@dataclass(frozen=True)
class PlacedSection:
    id: str
    app_label: str | None
    view: SectionView
    order: int


def _sections(registries) -> dict:
    return dict(getattr(registries, "workbench_sections", {}) or {})


def _for_roles(data, who) -> bool:
    roles = data.get("roles")
    return not roles or who.is_admin or bool(set(roles) & set(who.roles))


def _safe_render(section_name: str, render, ctx: WorkbenchContext) -> SectionView | None:
    """A section that fails is logged and left out: one plugin's bug never takes the workbench down."""
    try:
        return render(ctx)
    except KeelError:
        return None
    except Exception:
        log.exception("workbench section %s failed", section_name)
        # the board only reads: ending the transaction loses nothing, and on PostgreSQL a failed statement
        # would otherwise leave it aborted for every section after this one
        ctx.conn.rollback()
        return None


def build_board(conn, rt, who, lg: str) -> list[PlacedSection]:
    """Every section this user sees, in order (auto sections first by their order, then each app's)."""
    placed: list[PlacedSection] = []
    apps = sorted(rt.apps(), key=lambda b: b.id)
    registered = _sections(rt.registries)
    base = WorkbenchContext(conn=conn, actor=who, lang=lg, runtime=rt)
    for name, section in sorted(registered.items(), key=lambda kv: (kv[1].order, kv[0])):
        if section.placement != AUTO:
            continue
        view = _safe_render(name, section.render, base)
        if view is not None and (view.cards or view.empty_text):
            placed.append(PlacedSection(name, None, view, section.order))
    for built in apps:
        defs = [dict(d.data) for d in built.definition.definitions_of("workbench").values()] \
            or default_definitions(built)
        app_label = built.definition.label.get(lg)
        sections = _sections(built.registries)
        for d in sorted(defs, key=lambda d: (d.get("order", 100), d["id"])):
            if not _for_roles(d, who):
                continue
            ctx = WorkbenchContext(conn=conn, actor=who, lang=lg, runtime=rt, app=built, definition=d,
                                   params=d.get("params") or {})
            if "section" in d:
                section = sections.get(d["section"])
                view = _safe_render(d["section"], section.render, ctx) if section is not None else None
                if view is not None and d.get("label"):
                    from dataclasses import replace

                    view = replace(view, title=label_text(d["label"], lg))
            else:
                view = _safe_render(d["id"], entity_section, ctx)
            if view is not None and (view.cards or view.empty_text):
                placed.append(PlacedSection(f"{built.id}-{d['id']}", app_label, view, 1000 + d.get("order", 100)))
    return placed


@bp.get("/")
def home():
    return redirect(url_for("web.workbench"))


@bp.get("/workbench")
def workbench():
    who, lg, rt = actor(), lang(), runtime()
    with rt.engine.connect() as conn:
        board = build_board(conn, rt, who, lg)
    shortcuts = []
    for built in sorted(rt.apps(), key=lambda b: b.id):
        forms = usable_forms(built, who, lg)
        if forms:
            shortcuts.append((built.definition.label.get(lg), forms))
    return render_template("workbench.html", board=board, shortcuts=shortcuts, title=translate("Workbench"))


@bp.post("/workbench/acknowledge")
def acknowledge():
    """Close the viewer's yellow mark on one record (app, entity, record_id) or all of an app (app only)."""
    from keel.storage import highlights

    # CSRF: checked for every page POST by keel.auth (CSRFProtect) before this runs.
    app_id = (request.form.get("app") or "").strip()
    entity = (request.form.get("entity") or "").strip() or None
    raw_id = (request.form.get("record_id") or "").strip()
    if not app_id or (raw_id and entity is None):
        abort(400)
    try:
        record_id = int(raw_id) if raw_id else None
    except ValueError:
        abort(400)
    with runtime().engine.begin() as conn:
        n = highlights.acknowledge(conn, actor(), app_id, entity, record_id)
    flash(translate("Marked as seen: %(n)s.", n=n) if n else translate("Nothing left to mark as seen."), "success")
    back = request.form.get("next") or ""
    from keel.auth import safe_next

    return redirect(safe_next(back) or url_for("web.workbench"))
