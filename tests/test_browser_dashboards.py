"""In a real browser (Debian's chromium through Playwright), at 1366 px and 390 px: log in, open the demo
dashboard, follow a red row to its record, open the relation graph, acknowledge a yellow row — and no page
scrolls sideways, no console error (a CSP refusal would be one)."""
from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from helpers_browser import (
    WIDTHS,
    assert_no_overflow,
    browser,
    live_server,
    logged_in_page,
    require_browser,
    screenshot,
)
from keel.actor import SYSTEM
from keel.auth.directory import find_user
from keel.storage import highlights, records

pytestmark = require_browser()
BOARD = "/dash/goal_agility/goals_overview"


@pytest.fixture
def board_app(demo_app):
    """The demo, with one goal far behind its target (red) and one marked for the CRO (yellow)."""
    runtime = demo_app.extensions["keel"]
    built = runtime.get("goal_agility")
    table = built.table("goal")
    with runtime.engine.begin() as conn:
        goals = conn.execute(sa.select(table.c.id, table.c.target, table.c.row_version, table.c.title)
                             .where(table.c.deleted_at.is_(None)).order_by(table.c.id)).all()
        behind, changed = goals[-1], goals[-2]
        records.update(conn, built, "goal", behind.id, {"actual": str(Decimal(behind.target) / 2)}, SYSTEM,
                       behind.row_version)
        cro = find_user(conn, "cro")
        highlights.mark(conn, "goal_agility", "goal", changed.id, [cro["id"] if isinstance(cro, dict) else cro.id],
                        "目标值已被修改")
    return demo_app, behind.id, changed.id


@pytest.mark.parametrize("width", WIDTHS)
def test_board_red_row_graph_and_acknowledge(board_app, width):
    app, behind, changed = board_app
    with live_server(app) as base, browser() as b, logged_in_page(b, base, "cro", width=width) as page:
        page.goto(base + BOARD)
        page.wait_for_selector(".widget-grid")
        page.wait_for_selector(".graph-widget canvas")
        assert_no_overflow(page, "dashboard")
        screenshot(page, f"board-{width}")

        red = page.locator(f"#goals-row-{behind}")
        assert "style-red" in red.get_attribute("class")
        with page.expect_navigation():
            red.locator("a").first.click()
        assert page.url.endswith(f"/apps/goal_agility/goal/{behind}")

        page.goto(f"{base}/dash/goal_agility/graph/goal/{behind}")
        page.wait_for_selector(".graph-widget canvas")
        assert_no_overflow(page, "graph page")
        screenshot(page, f"graph-{width}")

        page.goto(base + BOARD)
        row = page.locator(f"#goals-row-{changed}")
        row.wait_for()
        assert "marked" in row.get_attribute("class")
        with page.expect_navigation():
            row.locator("button.ack").click()
        page.wait_for_selector(f"#goals-row-{changed}")
        assert "marked" not in (page.locator(f"#goals-row-{changed}").get_attribute("class") or "")
        assert_no_overflow(page, "after acknowledging")
        screenshot(page, f"acknowledged-{width}")


def test_a_5000_node_graph_opens_collapsed_and_usable_on_a_phone(tmp_path, sqlite_url):
    from helpers_dash import PASSWORD, make_site
    from test_dashboard_graph import _bulk_tree

    site = make_site(tmp_path, sqlite_url)
    try:
        root = _bulk_tree(site, 5000)
        with live_server(site.app) as base, browser() as b, \
                logged_in_page(b, base, "ann", password=PASSWORD, width=390) as page:
            page.goto(f"{base}/dash/dashtest/graph/node/{root}")
            page.wait_for_selector(".graph-widget canvas")
            count = page.locator(".graph-widget .summary .count").inner_text()
            shown = int("".join(ch for ch in count if ch.isdigit()))
            assert 0 < shown <= 300
            assert_no_overflow(page, "5,000-node graph")
            screenshot(page, "graph-5000-390")
    finally:
        site.engine.dispose()
