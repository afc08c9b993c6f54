"""Stored XSS through names (docs/security.md, "Stored XSS"): a user whose display name and a document
whose title are `</script><img src=x onerror=alert(1)>` are shown escaped on every page that names them —
the page header, lists, the record page, link expansion, the form's user picker, the admin pages and the
audit trail — and the script data the pages carry never holds them raw. (Values and labels:
test_pages.py; workflow comments: test_workflow_pages.py.)"""
from __future__ import annotations

import pytest

from helpers_security import create_record, make_sec_world
from test_pages import XSS, add_users

ESCAPED = "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    add_users(w.site, ("xss", XSS, {"roles": ["member"]}))
    w.app.extensions["keel"].refresh()
    w.ids["xss_doc"] = create_record(w.site, "xss", "doc", title=XSS, owner=w.site.user_id("xss"))
    w.ids["xss_note"] = create_record(w.site, "xss", "note", title=XSS, doc=w.ids["xss_doc"])
    yield w
    w.engine.dispose()


def _check(page: str, where: str) -> None:
    assert XSS not in page, f"raw payload on {where}"
    assert "onerror=alert(1)>" not in page and "<img src=x" not in page, f"live tag on {where}"


@pytest.mark.parametrize("user", ["xss", "root"])
def test_a_script_in_a_name_or_title_is_escaped_wherever_it_is_shown(world, user):
    c = world.page_client(user)
    uid = world.site.user_id("xss")
    pages = ["/workbench", "/apps/sec/doc", f"/apps/sec/doc/{world.ids['xss_doc']}", "/apps/sec/note",
             f"/apps/sec/note/{world.ids['xss_note']}", "/apps/sec/forms/new_doc", "/apps/sec/forms/new_note",
             "/inbox", "/workflows/tasks"]
    if user == "root":
        pages += ["/admin/users", f"/admin/users/{uid}", "/admin/audit", "/admin/apps/sec"]
    shown = 0
    for path in pages:
        resp = c.get(path)
        assert resp.status_code == 200, path
        _check(resp.text, path)
        shown += ESCAPED in resp.text
    assert shown >= 5  # the payload is on those pages, escaped (not just missing)
    api = world.app.test_client()
    body = api.get(f"/api/v1/apps/sec/note/{world.ids['xss_note']}?expand=doc",
                   headers=world.api_headers(user)).get_json()
    assert body["doc"]["title"] == XSS  # the API returns data as data; escaping is the renderer's job
