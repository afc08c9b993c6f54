"""Goals imported from Excel (the engine's general spreadsheet import): a preview lists every row's errors and
writes nothing; rows go through the write path (a loop in the tree, an unknown owner, a bad unit are refused
per row); a clean file creates everything, parents by title, attributed to the admin."""
from __future__ import annotations

import io

import pytest
from openpyxl import Workbook

from helpers_goal import API, Demo

URL = API + "/apps/goal_agility/goal/import"
HEADER = ["目标", "责任人", "层级", "上级目标", "目标类别", "核心指标", "单位", "目标值", "占上级目标比例"]


def xlsx(rows) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(HEADER)
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@pytest.fixture
def demo(demo_app):
    return Demo(demo_app)


def _post(demo, who, data: bytes, preview: bool = False, name: str = "goals.xlsx"):
    return demo.client.post(URL + ("?preview=1" if preview else ""), headers=demo.h(who),
                            data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_a_preview_lists_each_rows_errors_and_writes_nothing(demo):
    before = demo.count("goal_agility__goal")
    data = xlsx([
        ["华南大区 Q4 目标", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数", "count", 13, 0.325],
        ["赵六 Q4 个人目标", "nobody", "personal", "华南大区 Q4 目标", "new_business", "新增客户数", "count", 4, None],
        ["坏单位", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数", "yuan", 4, None],
        ["不存在的上级", "cro", "team", "没有这个目标", "new_business", "新增客户数", "count", 4, None],
    ])
    r = _post(demo, "admin", data, preview=True)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["preview"] and not body["written"] and body["rows"] == 4 and body["valid_rows"] == 1
    errors = {e["row"]: e["errors"] for e in body["errors"]}
    assert set(errors) == {3, 4, 5}
    assert "owner" in errors[3] and "unit" in errors[4] and "parent" in errors[5]
    assert demo.count("goal_agility__goal") == before
    r = _post(demo, "admin", data)                    # the real import of a file with bad rows: nothing at all
    assert r.status_code == 422 and demo.count("goal_agility__goal") == before


def test_a_clean_file_creates_the_goals_parents_first_attributed_to_the_admin(demo):
    before = demo.count("goal_agility__goal")
    data = xlsx([
        ["华南大区 Q4 目标", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数", "count", 13, 0.325],
        ["赵六 Q4 个人目标", "rep_zhang", "personal", "华南大区 Q4 目标", "new_business", "新增客户数", "count", 4, 0.3],
    ])
    r = _post(demo, "admin", data)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["created"] == 2 and demo.count("goal_agility__goal") == before + 2
    south, zhao = demo.goal("华南大区 Q4 目标"), demo.goal("赵六 Q4 个人目标")
    assert zhao["parent"] == south["id"] and south["parent"] == demo.goal("销售部 Q4 核心目标")["id"]
    assert south["created_by"] == demo.ids["admin"] and south["department"] == "sales"


def test_import_is_for_admins_and_refuses_unknown_columns(demo):
    assert _post(demo, "strategy_lead", xlsx([])).status_code == 403
    wb = Workbook()
    wb.active.append(["标题", "预算"])
    buf = io.BytesIO()
    wb.save(buf)
    r = _post(demo, "admin", buf.getvalue())
    assert r.status_code == 422 and "预算" in r.get_json()["errors"]["file"][0]


def test_keel_import_previews_and_imports_from_the_command_line(tmp_path):
    import json

    from click.testing import CliRunner

    from conftest import APPS
    from keel.cli import cli

    env = {"KEEL_INSTANCE_PATH": str(tmp_path / "inst"), "KEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
           "KEEL_APPS_PATH": str(APPS), "KEEL_ENV": "development"}
    runner = CliRunner()
    assert runner.invoke(cli, ["demo", "--no-serve"], env=env, catch_exceptions=False).exit_code == 0
    path = tmp_path / "goals.xlsx"
    path.write_bytes(xlsx([["华南大区 Q4 目标", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数",
                            "count", 13, 0.325],
                           ["坏单位", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数", "yuan", 4, None]]))
    r = runner.invoke(cli, ["import", "goal_agility", "goal", str(path), "--user", "admin", "--preview"], env=env)
    assert r.exit_code == 1 and json.loads(r.output)["errors"][0]["row"] == 3
    path.write_bytes(xlsx([["华南大区 Q4 目标", "cro", "team", "销售部 Q4 核心目标", "new_business", "新增客户数",
                            "count", 13, 0.325]]))
    r = runner.invoke(cli, ["import", "goal_agility", "goal", str(path), "--user", "admin"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["created"] == 1
    r = runner.invoke(cli, ["import", "goal_agility", "goal", str(path), "--user", "rep_li"], env=env)
    assert r.exit_code != 0
