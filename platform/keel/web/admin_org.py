"""Admin pages for the organisation: users (add, roles, department and superior, password, active),
departments (create, set the head, move people in), roles (who holds each role the apps declare) and the
audit trail (filtered by user, record and time). Administrators only: anyone else gets 403.

Every form is a Flask-WTF form (CSRF-checked); every write goes through `keel.auth.directory`, the same
functions as the CLI and the API, so the checks and the audit events are the same everywhere."""
from __future__ import annotations

import datetime as dt
import zoneinfo

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional

from keel.auth import directory, require_admin
from keel.errors import FieldErrors, NotFound
from keel.i18n import current_lang, translate
from keel.storage.system import departments, user_roles, users
from keel.web.pages import N_  # labels are translated when rendered (admin/_form.html)

bp = Blueprint("admin_org", __name__)
PAGE = 50


def _choices(pairs):
    """(value, label) pairs as WTForms 3.3 wants them."""
    from keel.forms.build import SelectChoice

    return [SelectChoice(v, label) for v, label in pairs]


# ---- forms ---------------------------------------------------------------------------------------

class AddUserForm(FlaskForm):
    username = StringField(N_("Username"), validators=[DataRequired(), Length(max=150)])
    display_name = StringField(N_("Name"), validators=[DataRequired(), Length(max=200)])
    password = PasswordField(N_("Password"), validators=[Optional(), Length(max=1024)])
    roles = StringField(N_("Roles (comma-separated)"), validators=[Optional(), Length(max=1000)])
    department = SelectField(N_("Department"), choices=_choices([]), validate_choice=False)
    manager = StringField(N_("Direct superior (username)"), validators=[Optional(), Length(max=150)])
    email = StringField(N_("E-mail"), validators=[Optional(), Length(max=320)])
    is_admin = BooleanField(N_("Administrator"))


class RolesForm(FlaskForm):
    roles = StringField(N_("Roles (comma-separated)"), validators=[Optional(), Length(max=1000)])


class MoveUserForm(FlaskForm):
    department = SelectField(N_("Department"), choices=_choices([]), validate_choice=False)
    manager = StringField(N_("Direct superior (username)"), validators=[Optional(), Length(max=150)])


class PasswordForm(FlaskForm):
    password = PasswordField(N_("New password"), validators=[DataRequired(), Length(max=1024)])


class ActiveForm(FlaskForm):
    active = BooleanField(N_("Active"))


class DepartmentForm(FlaskForm):
    code = StringField(N_("Code"), validators=[DataRequired(), Length(max=64)])
    name = StringField(N_("Name (Chinese)"), validators=[DataRequired(), Length(max=200)])
    name_en = StringField(N_("Name (English)"), validators=[Optional(), Length(max=200)])
    parent = SelectField(N_("Parent department"), choices=_choices([]), validate_choice=False)
    head = StringField(N_("Head (username)"), validators=[Optional(), Length(max=150)])


class HeadForm(FlaskForm):
    head = StringField(N_("Head (username; empty for none)"), validators=[Optional(), Length(max=150)])


class MoveInForm(FlaskForm):
    users = TextAreaField(N_("Usernames (one per line or comma-separated)"), validators=[DataRequired()])
    manager = StringField(N_("Their direct superior (username; empty: the head)"),
                          validators=[Optional(), Length(max=150)])


class AuditFilterForm(FlaskForm):
    class Meta:
        csrf = False  # a GET filter changes nothing

    user = StringField(N_("User"), validators=[Optional(), Length(max=150)])
    app = StringField(N_("App"), validators=[Optional(), Length(max=64)])
    entity = StringField(N_("Entity"), validators=[Optional(), Length(max=64)])
    record = IntegerField(N_("Record id"), validators=[Optional()])
    since = DateField(N_("From"), validators=[Optional()])
    until = DateField(N_("To"), validators=[Optional()])
    page = IntegerField(validators=[Optional()])


# ---- helpers -------------------------------------------------------------------------------------

def _engine():
    from flask import current_app

    return current_app.extensions["keel"].engine


def _department_choices(conn, empty: str) -> list:
    lang = current_lang()
    return _choices([("", empty)] + [
        (d["code"], "\u3000" * d["depth"] + (d["name_en"] if lang == "en" and d["name_en"] else d["name"])
         + f" ({d['code']})") for d in directory.list_departments(conn)])


def _names(text: str | None) -> list[str]:
    return [n for n in (text or "").replace(",", "\n").replace("，", "\n").split() if n]


def _or_none(text: str | None) -> str | None:
    return (text or "").strip() or None


def _flash_errors(e: FieldErrors) -> None:
    for field_id, messages in e.rendered().items():
        for m in messages:
            flash(f"{field_id}: {m}", "error")


def _user_or_404(conn, user_id: int) -> sa.Row:
    row = directory.get_user(conn, user_id)
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    return row


# ---- users ---------------------------------------------------------------------------------------

@bp.route("/admin/users", methods=["GET", "POST"])
def users_page():
    who = require_admin()
    engine = _engine()
    with engine.connect() as conn:
        form = AddUserForm()
        form.department.choices = _department_choices(conn, translate("(none)"))
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                with engine.begin() as conn:
                    directory.add_user(
                        conn, form.username.data.strip(), form.display_name.data.strip(), who,
                        password=form.password.data or None, roles=_names(form.roles.data),
                        department_code=_or_none(form.department.data), manager_username=_or_none(form.manager.data),
                        is_admin=bool(form.is_admin.data), email=_or_none(form.email.data))
            except FieldErrors as e:
                _flash_errors(e)
                status = 422
            else:
                flash(translate("User %(name)s added.", name=form.username.data.strip()), "success")
                return redirect(url_for("admin_org.users_page"))
        else:
            status = 422
    q, dept = request.args.get("q") or None, request.args.get("department") or None
    with engine.connect() as conn:
        rows = directory.list_users(conn, q, dept, 500)
    return render_template("admin/users.html", title=translate("Users"), rows=rows, form=form, q=q or "",
                           department=dept or ""), status


@bp.get("/admin/users/<int:user_id>")
def user_page(user_id: int, status: int = 200):
    require_admin()
    with _engine().connect() as conn:
        row = _user_or_404(conn, user_id)
        roles = sorted(directory.roles_of(conn, user_id))
        dept = conn.execute(sa.select(departments.c.code).where(departments.c.id == row.department_id)).scalar() \
            if row.department_id else None
        manager = directory.get_user(conn, row.manager_id) if row.manager_id else None
        effective = directory.manager_of(conn, user_id)
        effective_row = directory.get_user(conn, effective) if effective else None
        move = MoveUserForm(department=dept or "", manager=manager.username if manager else "")
        move.department.choices = _department_choices(conn, translate("(none)"))
    forms = {"roles": RolesForm(roles=", ".join(roles)), "move": move, "password": PasswordForm(),
             "active": ActiveForm(active=row.active)}
    return render_template("admin/user.html", title=row.display_name, user=row, roles=roles, department=dept,
                           manager=manager, effective=effective_row, forms=forms), status


@bp.post("/admin/users/<int:user_id>/<action>")
def user_action(user_id: int, action: str):
    who = require_admin()
    forms = {"roles": RolesForm, "move": MoveUserForm, "password": PasswordForm, "active": ActiveForm}
    if action not in forms:
        raise NotFound(f"no action {action}")
    form = forms[action]()
    if not form.validate_on_submit():
        for field_errors in form.errors.values():
            for m in field_errors:
                flash(str(m), "error")
        return user_page(user_id, 422)
    try:
        with _engine().begin() as conn:
            row = _user_or_404(conn, user_id)
            if action == "roles":
                directory.set_roles(conn, user_id, _names(form.roles.data), who)
            elif action == "password":
                directory.set_password(conn, user_id, form.password.data, who)
            elif action == "active":
                if form.active.data and not row.active:
                    directory.reactivate_user(conn, user_id, who)
                elif not form.active.data and row.active:
                    directory.deactivate_user(conn, user_id, who)
            else:
                code = _or_none(form.department.data)
                if code is None:
                    raise FieldErrors({"department": [translate("Choose a department.")]})
                directory.move_users(conn, [row.username], code, who, manager_username=_or_none(form.manager.data))
    except FieldErrors as e:
        _flash_errors(e)
        return user_page(user_id, 422)
    flash(translate("Saved."), "success")
    return redirect(url_for("admin_org.user_page", user_id=user_id))


# ---- departments ---------------------------------------------------------------------------------

@bp.route("/admin/departments", methods=["GET", "POST"])
def departments_page():
    who = require_admin()
    engine = _engine()
    with engine.connect() as conn:
        form = DepartmentForm()
        form.parent.choices = _department_choices(conn, translate("(top level)"))
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                with engine.begin() as conn:
                    directory.add_department(conn, form.code.data.strip(), form.name.data, who,
                                             parent_code=_or_none(form.parent.data),
                                             head_username=_or_none(form.head.data), name_en=_or_none(form.name_en.data))
            except FieldErrors as e:
                _flash_errors(e)
                status = 422
            else:
                flash(translate("Department %(code)s created.", code=form.code.data.strip()), "success")
                return redirect(url_for("admin_org.department_page", code=form.code.data.strip()))
        else:
            status = 422
    with engine.connect() as conn:
        rows = directory.list_departments(conn)
    return render_template("admin/departments.html", title=translate("Departments"), rows=rows, form=form), status


@bp.get("/admin/departments/<code>")
def department_page(code: str, status: int = 200):
    require_admin()
    with _engine().connect() as conn:
        dept = next((d for d in directory.list_departments(conn) if d["code"] == code), None)
        if dept is None:
            raise NotFound(f"no department with code {code}")
        people = conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                              .where(users.c.department_id == dept["id"], users.c.active.is_(True))
                              .order_by(users.c.username)).all()
    return render_template("admin/department.html", title=dept["name"], dept=dept, people=people,
                           head_form=HeadForm(head=dept["head"] or ""), move_form=MoveInForm()), status


@bp.post("/admin/departments/<code>/<action>")
def department_action(code: str, action: str):
    who = require_admin()
    if action not in ("head", "members"):
        raise NotFound(f"no action {action}")
    form = HeadForm() if action == "head" else MoveInForm()
    if not form.validate_on_submit():
        for field_errors in form.errors.values():
            for m in field_errors:
                flash(str(m), "error")
        return department_page(code, 422)
    try:
        with _engine().begin() as conn:
            if directory.find_department(conn, code) is None:
                raise NotFound(f"no department with code {code}")
            if action == "head":
                directory.set_department_head(conn, code, _or_none(form.head.data), who)
                flash(translate("Head saved."), "success")
            else:
                moved = directory.move_users(conn, _names(form.users.data), code, who,
                                             manager_username=_or_none(form.manager.data))
                flash(translate("%(n)s people moved.", n=len(moved)), "success")
    except FieldErrors as e:
        _flash_errors(e)
        return department_page(code, 422)
    return redirect(url_for("admin_org.department_page", code=code))


# ---- roles ---------------------------------------------------------------------------------------

@bp.get("/admin/roles")
def roles_page():
    require_admin()
    from flask import current_app

    lang = current_lang()
    declared: dict[str, list[str]] = {}
    for built in current_app.extensions["keel"].apps():
        for role in built.definition.roles:
            declared.setdefault(role.id, []).append(f"{role.label.get(lang)} ({built.definition.label.get(lang)})")
    with _engine().connect() as conn:
        held: dict[str, list] = {}
        for r in conn.execute(sa.select(user_roles.c.role, users.c.id, users.c.username, users.c.display_name)
                              .select_from(user_roles.join(users, users.c.id == user_roles.c.user_id))
                              .where(users.c.active.is_(True)).order_by(user_roles.c.role, users.c.username)):
            held.setdefault(r.role, []).append(r)
        admins = conn.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                              .where(users.c.is_admin.is_(True), users.c.active.is_(True))
                              .order_by(users.c.username)).all()
    roles = [{"id": rid, "labels": declared.get(rid, []), "people": held.get(rid, []),
              "declared": rid in declared} for rid in sorted(set(declared) | set(held))]
    return render_template("admin/roles.html", title=translate("Roles"), roles=roles, admins=admins)


# ---- audit trail ---------------------------------------------------------------------------------

def _day_start(day: dt.date | None, tz: str) -> dt.datetime | None:
    if day is None:
        return None
    return dt.datetime.combine(day, dt.time()).replace(tzinfo=zoneinfo.ZoneInfo(tz)).astimezone(dt.UTC)


@bp.get("/admin/audit")
def audit_page():
    who = require_admin()
    from flask import current_app

    from keel.audit.query import list_audit
    from keel.formats import display_zone

    zone = display_zone().key  # the days a reader types are days in the zone every page shows

    form = AuditFilterForm(request.args)
    items, total, page, status, names = [], 0, 1, 200, {}
    if request.args and not form.validate():
        status = 422
    else:
        engine = _engine()
        with engine.connect() as conn:
            user_id = None
            if form.user.data:
                row = directory.find_user(conn, form.user.data.strip())
                if row is None:
                    form.user.errors = [translate("No user named %(username)s.", username=form.user.data.strip())]
                    status = 422
                else:
                    user_id = row.id
            until = _day_start(form.until.data + dt.timedelta(days=1), zone) if form.until.data else None
            if status == 200:
                try:
                    result = list_audit(conn, current_app.extensions["keel"], who, app=_or_none(form.app.data),
                                        entity=_or_none(form.entity.data), record=form.record.data,
                                        page=max(1, form.page.data or 1), per_page=PAGE, user_id=user_id,
                                        since=_day_start(form.since.data, zone), until=until)
                except FieldErrors as e:
                    for field_id, messages in e.rendered().items():
                        getattr(form, field_id, form.record).errors = list(messages)
                    status = 422
                except NotFound as e:
                    form.record.errors = [str(e)]
                    status = 422
                else:
                    items, total, page = result.items, result.total, result.page
                    ids = {i["user_id"] for i in items if i["user_id"] is not None}
                    if ids:
                        names = dict(conn.execute(sa.select(users.c.id, users.c.username)
                                                  .where(users.c.id.in_(sorted(ids)))).all())
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    pages = max(1, -(-total // PAGE))
    return render_template("admin/audit.html", title=translate("Audit trail"), form=form, items=items,
                           total=total, page=page, pages=pages, args=args, names=names), status
