"""No page scrolls sideways at 390 px (a phone) or 1366 px (a laptop): a real browser (Playwright driving
Debian's /usr/bin/chromium) signs in to the demo company on a real server and opens the workbench, the
lists, a record, a form, the tasks, inbox and jobs pages. Screenshots are kept as test artefacts
(KEEL_TEST_ARTIFACTS, default the test's tmp folder) to look at."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from helpers_browser import BROWSER_PATIENCE_MS
from keel.demo import DEMO_PASSWORD

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")

PAGES = ["/workbench", "/apps/goal_agility/goal", "/apps/goal_agility/goal?view=goals&q=新增",
         "/apps/goal_agility/task", "/apps/goal_agility/goal/1", "/apps/goal_agility/forms/task",
         "/workflows/tasks", "/inbox"]
ADMIN_PAGES = ["/admin/jobs", "/workbench", "/admin", "/admin/users", "/admin/users/1", "/admin/departments",
               "/admin/departments/sales", "/admin/roles", "/admin/audit", "/admin/apps/goal_agility",
               "/admin/apps/goal_agility/entities/goal/fields", "/admin/apps/goal_agility/settings"]


def liven_up(app) -> None:
    """Actuals on some goals, a change someone else made to east_mgr's goal and a revision request waiting
    for him: the board as a manager sees it in the middle of a quarter."""
    from keel.auth.directory import get_actor
    from keel.forms.submit import submit_form
    from test_workbench import LI_GOAL, goal_of, update_goal, user_id

    update_goal(app, goal_of(app, LI_GOAL), None, actual="2")
    update_goal(app, goal_of(app, "华东大区 Q4 目标"), None, actual="12")
    update_goal(app, goal_of(app, "公司 Q4 营收"), None, actual="7300000")
    update_goal(app, goal_of(app, "华东大区 Q4 目标"), "cro", period_end="2025-12-20")
    runtime = app.extensions["keel"]
    with runtime.engine.begin() as conn:
        submit_form(conn, runtime.get("goal_agility"), "revision_request",
                    {"goal": goal_of(app, LI_GOAL), "title": "李娜目标改为增购 ≥ ¥800,000", "proposed_target": "800000",
                     "reason": "30 天内 12 家客户咨询扩容", "resources": "客户成功经理"},
                    get_actor(conn, user_id(app, "rep_li")))


@pytest.fixture
def server(demo_app):
    liven_up(demo_app)
    srv = make_server("127.0.0.1", 0, demo_app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(5)


@pytest.fixture
def artefacts(tmp_path) -> Path:
    out = Path(os.environ.get("KEEL_TEST_ARTIFACTS") or tmp_path) / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/workbench")


def sideways(page) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.parametrize("width", [390, 1366])
def test_no_page_scrolls_sideways(server, artefacts, width):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for username, pages in (("east_mgr", PAGES), ("admin", ADMIN_PAGES)):
                context = browser.new_context(viewport={"width": width, "height": 900}, locale="zh-CN",
                                              device_scale_factor=1, is_mobile=width < 500)
                page = context.new_page()
                page.set_default_timeout(BROWSER_PATIENCE_MS)  # waits are for conditions; the limit, for hangs
                sign_in(page, server, username)
                wide = {}
                for path in pages:
                    page.goto(server + path)
                    name = f"{username}{path}".replace("/", "_").replace("?", "_").replace("&", "_")
                    page.screenshot(path=str(artefacts / f"{width}{name}.png"), full_page=True)
                    if sideways(page) > 0:
                        wide[path] = sideways(page)
                assert wide == {}, f"wider than {width} px: {wide}"
                context.close()
        finally:
            browser.close()


def test_the_phone_menu_fits_and_the_type_ahead_finds_people_by_pinyin(server, artefacts):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 800}, locale="zh-CN")
            sign_in(page, server, "east_mgr")
            page.click("details.menu summary")
            assert sideways(page) == 0
            box = page.locator("details.menu ul").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
            page.goto(server + "/apps/goal_agility/forms/task")
            search = page.locator("#f-owner-search")
            search.fill("ln")
            page.locator("ul.picker-results li", has_text="李娜").first.click()
            assert page.eval_on_selector("#f-owner", "s => s.selectedOptions[0].text").startswith("李娜")
            page.screenshot(path=str(artefacts / "390_picker.png"))
        finally:
            browser.close()
