"""Browser tests: a real Keel server on 127.0.0.1 in a thread, Playwright for Python driving Debian's chromium
(never a downloaded browser), logged-in pages at desktop and phone widths, the sideways-overflow check and
screenshots under test-artifacts/ (gitignored; CI keeps them).

    from helpers_browser import WIDTHS, assert_no_overflow, browser, live_server, logged_in_page, \
        require_browser, screenshot

    pytestmark = require_browser()

    def test_board(demo_app):
        with live_server(demo_app) as base, browser() as b:
            for width in WIDTHS:
                with logged_in_page(b, base, "east_mgr", width=width) as page:
                    page.goto(base + "/dash/goal_agility/goals_overview")
                    assert_no_overflow(page)
                    screenshot(page, f"board-{width}")

Without chromium or playwright the tests are skipped, unless KEEL_REQUIRE_BROWSER=1 (CI sets it), when a
missing browser fails them. KEEL_CHROMIUM names another chromium binary.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from live_server import serve as live_server  # noqa: F401  (one live-server helper for HTTP and browser tests)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTHS = (1366, 390)
HEIGHT = 860
DEMO_PASSWORD = "keel-demo-2025"  # keel.demo.DEMO_PASSWORD (the demo app's logins)


def chromium_path() -> str | None:
    explicit = os.environ.get("KEEL_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[dev])"
    if chromium_path() is None:
        return "chromium is not installed (apt-get install -y chromium fonts-noto-cjk)"
    return None


def require_browser():
    """A pytest mark: skip without a browser, or fail when KEEL_REQUIRE_BROWSER=1 says CI must have one."""
    why = _missing()
    if why and os.environ.get("KEEL_REQUIRE_BROWSER") == "1":
        return pytest.mark.usefixtures("_browser_required")
    return pytest.mark.skipif(why is not None, reason=why or "")


@pytest.fixture
def _browser_required():
    pytest.fail(f"KEEL_REQUIRE_BROWSER=1 but {_missing()}")


# Playwright's limit for any one wait, in milliseconds (see logged_in_page).
BROWSER_PATIENCE_MS = 120_000


@contextmanager
def browser(headless: bool = True) -> Iterator[Any]:
    """Playwright's chromium, launched from the system binary; nothing is downloaded."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        pytest.fail(_missing())
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=headless,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@contextmanager
def logged_in_page(b, base: str, username: str, password: str = DEMO_PASSWORD, width: int = 1366,
                   height: int = HEIGHT, lang: str = "zh", allow_console_errors: bool = False) -> Iterator[Any]:
    """A fresh browser context at this viewport, signed in through the real /login form. Console errors of
    our own pages (a CSP refusal, a failed callback) fail the test when the context closes."""
    context = b.new_context(viewport={"width": width, "height": height}, locale="zh-CN" if lang == "zh" else "en-US")
    page = context.new_page()
    # Every wait (a selector, a navigation) is for a condition; the limit is only for a hang. Chromium and
    # Dash's bundles on a busy two-CPU machine can take far longer than their usual second.
    page.set_default_timeout(BROWSER_PATIENCE_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url', '')})") if m.type == "error"
            else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{base}/login?lang={lang}")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("form:has(input[name=password]) [type=submit]")
        assert "/login" not in page.url, f"login as {username} failed"
        yield page
        if not allow_console_errors:
            own = [e for e in errors if "favicon" not in e]
            assert not own, f"console errors: {own}"
    finally:
        context.close()


def overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def assert_no_overflow(page, where: str = "") -> None:
    """The page does not scroll sideways: scrollWidth <= innerWidth."""
    scroll, inner = overflow(page)
    assert scroll <= inner, f"{where or page.url}: scrolls sideways ({scroll} px wide in a {inner} px window)"


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save test-artifacts/<test>/<name>.png; returns the path."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "browser").split(" ")[0].split("::")[-1]
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
