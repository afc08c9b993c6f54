"""Demo data: the case from the seed — an 80-person SaaS company in Q4 2025 whose sales team is still
measured on new customers while upsell has become what matters. Created once per instance through the
same directory and record write paths as any user's data (so it is versioned and audited)."""
from __future__ import annotations

import os
import shutil

from keel.actor import SYSTEM
from keel.auth.directory import add_department, add_user, find_user

DEMO_PASSWORD = "keel-demo-2025"
APP = "goal_agility"

# code, zh name, en name, parent code
DEPARTMENTS = [
    ("ceo_office", "总经办", "CEO office", None),
    ("strategy", "战略部", "Strategy", "ceo_office"),
    ("sales", "销售部", "Sales", "ceo_office"),
    ("sales_east", "华东大区", "Sales East", "sales"),
    ("sales_north", "华北大区", "Sales North", "sales"),
    ("sales_south", "华南大区", "Sales South", "sales"),
    ("cs", "客户成功部", "Customer Success", "ceo_office"),
    ("marketing", "市场部", "Marketing", "ceo_office"),
    ("rnd", "产品研发部", "Product & Engineering", "ceo_office"),
    ("finance", "财务部", "Finance", "ceo_office"),
    ("hr", "人力资源部", "HR", "ceo_office"),
]

# Users who can log in: username, display name, title, department, manager, roles, admin
LOGINS = [
    ("admin", "系统管理员", "platform admin", "ceo_office", None, (), True),
    ("ceo", "周总", "CEO", "ceo_office", None, ("executive",), False),
    ("cro", "陈立", "CRO (chief revenue officer)", "sales", "ceo", ("executive", "manager"), False),
    ("strategy_lead", "林晓", "head of strategy", "strategy", "ceo", ("strategy", "manager"), False),
    ("east_mgr", "王磊", "sales manager, East", "sales_east", "cro", ("manager", "employee"), False),
    ("north_mgr", "赵敏", "sales manager, North", "sales_north", "cro", ("manager", "employee"), False),
    ("rep_li", "李娜", "sales rep, East", "sales_east", "east_mgr", ("employee",), False),
    ("rep_zhang", "张伟", "sales rep, East", "sales_east", "east_mgr", ("employee",), False),
    ("cs_lead", "刘洋", "head of customer success", "cs", "cro", ("manager", "employee"), False),
]

# The rest of the 80 people: department, manager, how many (directory entries without a password).
STAFF = [
    ("sales_east", "east_mgr", 6), ("sales_north", "north_mgr", 8), ("sales_south", "cro", 9),
    ("cs", "cs_lead", 9), ("marketing", "ceo", 8), ("rnd", "ceo", 24), ("finance", "ceo", 3),
    ("hr", "ceo", 2), ("strategy", "strategy_lead", 2),
]
HEADS = {"ceo_office": "ceo", "strategy": "strategy_lead", "sales": "cro", "sales_east": "east_mgr",
         "sales_north": "north_mgr", "cs": "cs_lead"}


def _stage_hr_roster(app) -> None:
    """Put the HR plugin's sample roster where the demo's `hr_directory` connector reads it (the
    import folder), so `keel jobs run hr_sync` works out of the box."""
    from keel.connectors.sync import import_root
    from keel.plugins.manager import plugins_path_from

    plugins = plugins_path_from(app.config)
    sample = plugins / "keel_hr" / "sample" / "employees.csv" if plugins else None
    root = import_root({**os.environ, "KEEL_INSTANCE_PATH": app.config["KEEL_INSTANCE_PATH"]})
    if sample is not None and sample.is_file() and not (root / sample.name).exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, root / sample.name)


def seed_demo(app) -> list[tuple[str, str]]:
    """Create the demo org unless it exists, then let the apps' plugins add their data (the Goal Agility plugin
    its goal tree); return the logins (username, title)."""
    _stage_hr_roster(app)
    runtime = app.extensions["keel"]
    engine = runtime.engine
    logins = [(u[0], u[2]) for u in LOGINS]
    with engine.begin() as conn:
        if find_user(conn, "cro") is not None:
            return logins
        for code, zh, en, parent in DEPARTMENTS:
            add_department(conn, code, zh, SYSTEM, parent_code=parent, name_en=en)
        for username, name, _title, dept, manager, roles, admin in LOGINS:
            add_user(conn, username, name, SYSTEM, password=DEMO_PASSWORD, roles=roles, department_code=dept,
                     manager_username=manager, is_admin=admin)
        n = 0
        for dept, manager, count in STAFF:
            for _ in range(count):
                n += 1
                add_user(conn, f"staff{n:02d}", f"员工{n:02d}", SYSTEM, roles=("employee",),
                         department_code=dept, manager_username=manager)
        import sqlalchemy as sa

        from keel.storage.system import departments, users

        for code, head in HEADS.items():
            head_id = conn.execute(sa.select(users.c.id).where(users.c.username == head)).scalar_one()
            conn.execute(departments.update().where(departments.c.code == code).values(head_id=head_id))
    runtime.refresh()
    # Apps' plugins add their own demo data (the Goal Agility plugin its case) through the same hook.
    app.extensions["keel_plugins"].pm.hook.keel_demo(app=app, logins=logins)
    return logins

