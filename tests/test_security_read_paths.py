"""Permission bypass on a side path and IDOR (docs/security.md, "permission bypass"): every GET route of
the app, page and API, is opened by each user with its arguments filled with the CANARY document (app
`sec`, entity `doc`, the canary's id) and with filters and expansions that name it. Bob (a member who
reads only his own documents) never sees the canary's title or its secret field; alice (the owner, not
an auditor) sees the title but never the secret; carl (auditor) sees both, which shows the probes reach
the data. A route added later is covered without editing this file. Writes to the canary by id through
the API and the record page are refused and leave the database unchanged."""
from __future__ import annotations

import io
import zipfile

import pytest

from helpers_security import (
    BOB_SECRET,
    CANARY_SECRET,
    CANARY_TITLE,
    csrf_of,
    fill_rule,
    get_rules,
    make_sec_world,
)

# Query strings that try to reach the canary by filter, sort, expansion or search.
PROBES = ("", f"?title={CANARY_TITLE}", "?title__contains=CANARY", "?amount__gt=1000", "?sort=-amount",
          "?expand=doc", "?expand=owner", "?q=CANARY", "?search=CANARY", "?app=sec&entity=doc")


@pytest.fixture
def world(tmp_path, db_url):
    w = make_sec_world(tmp_path, db_url)
    yield w
    w.engine.dispose()


def body_text(data: bytes) -> str:
    """A response as text to search: a zip (an XLSX export) is searched member by member, since its
    compressed bytes would hide a leaked value."""
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return "\n".join(z.read(n).decode("utf-8", "replace") for n in z.namelist())
    return data.decode("utf-8", "replace")


def _paths(w, *, api: bool) -> list[str]:
    out = []
    for rule in get_rules(w.app, api=api):
        for entity in ("doc", "note"):
            path = fill_rule(rule, {"app_id": "sec", "entity_id": entity, "id": w.ids["canary"],
                                    "record_id": w.ids["canary"] if entity == "doc" else w.ids["note"],
                                    "form_id": f"new_{entity}"})
            if path and path not in out:
                out.append(path)
    return out


def _bodies(w, username: str, *, api: bool):
    """(url, status, body) of every GET route with every probe, as `username`."""
    if api:
        client, headers = w.app.test_client(), w.api_headers(username)
    else:
        client, headers = w.page_client(username), {}
    for path in _paths(w, api=api):
        for probe in PROBES:
            url = path + (probe if "?" not in path else probe.replace("?", "&"))
            resp = client.get(url, headers=headers)
            assert resp.status_code < 500, f"{url} as {username}: {resp.status_code}"
            # pages echo their own query in links (language switch): that echo is not a leak
            yield url, resp.status_code, body_text(resp.get_data()).replace(probe.lstrip("?"), "")


@pytest.mark.parametrize("api", [False, True], ids=["pages", "api"])
def test_no_get_route_shows_the_canary_to_a_reader_without_the_right(world, api):
    before = world.snapshot()
    checked = 0
    for url, _status, body in _bodies(world, "bob", api=api):
        checked += 1
        assert CANARY_TITLE not in body, f"canary title leaked to bob through {url}"
        assert CANARY_SECRET not in body and BOB_SECRET not in body, f"secret field leaked to bob through {url}"
        assert "7777" not in body, f"canary amount leaked to bob through {url}"
    assert checked >= 20 * len(PROBES) if api else checked >= 10 * len(PROBES)
    for url, _status, body in _bodies(world, "alice", api=api):
        assert CANARY_SECRET not in body and BOB_SECRET not in body, f"secret field leaked to alice through {url}"
    after = world.snapshot()
    assert after["audit"][len(before["audit"]):] == []
    assert after == before  # reading wrote nothing but what login itself writes elsewhere


@pytest.mark.parametrize("api", [False, True], ids=["pages", "api"])
def test_the_probes_do_reach_the_canary_for_those_allowed(world, api):
    """Without this, a route that answers 404 to everyone would pass the test above."""
    seen_title = {url for url, status, body in _bodies(world, "alice", api=api) if CANARY_TITLE in body}
    seen_secret = {url for url, status, body in _bodies(world, "carl", api=api) if CANARY_SECRET in body}
    record = f"/sec/doc/{world.ids['canary']}"
    assert any(record in u for u in seen_title) and any(record in u for u in seen_secret)
    if api:
        assert any("/export.csv" in u for u in seen_title) and any("/history" in u for u in seen_secret)
        assert any(f"/sec/note/{world.ids['note']}?expand=doc" in u for u in seen_title)


def test_ids_in_urls_of_someone_elses_record_are_refused_and_change_nothing(world):
    canary = world.ids["canary"]
    before = world.snapshot()
    api, headers = world.app.test_client(), world.api_headers("bob")
    base = f"/api/v1/apps/sec/doc/{canary}"
    assert api.get(base, headers=headers).status_code == 404
    assert api.get(base + "/history", headers=headers).status_code == 404
    assert api.patch(base, json={"title": "pwned"},
                     headers={**headers, "If-Match": 'W/"1"'}).status_code == 404
    assert api.delete(base, headers=headers).status_code == 404
    page = world.page_client("bob")
    assert page.get(f"/apps/sec/doc/{canary}").status_code == 404
    token = csrf_of(page.get("/apps/sec/forms/new_doc").text)
    resp = page.post(f"/apps/sec/doc/{canary}", data={"csrf_token": token, "title": "pwned", "row_version": "1"})
    assert resp.status_code in (403, 404)
    # a note may link only to a document its writer can read: bob cannot point one at the canary either
    resp = api.post("/api/v1/apps/sec/note", json={"title": "mine", "doc": world.ids["canary"]}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert world.snapshot() == before


def test_no_route_answers_a_filter_on_a_field_the_reader_cannot_read(world):
    """A filter on the auditors' field must not work as an oracle for alice: asking `secret=<right
    value>` and `secret=<wrong value>` gives the same answer on every route (the one query builder
    refuses the filter; a route that applied it would show the canary for the right guess only)."""
    right, wrong = CANARY_SECRET, "CANARY-SECRET-0000"
    page, api, headers = world.page_client("alice"), world.app.test_client(), world.api_headers("alice")
    checked = 0
    for is_api, client, hdrs in ((False, page, {}), (True, api, headers)):
        for path in _paths(world, api=is_api):
            sep = "&" if "?" in path else "?"
            for arg in ("secret={}", "secret__contains={}", "secret__startswith={}"):
                answers = []
                for guess in (right, wrong):
                    resp = client.get(path + sep + arg.format(guess), headers=hdrs)
                    answers.append((resp.status_code, CANARY_TITLE in body_text(resp.get_data())))
                assert answers[0] == answers[1], f"{path}?{arg}: {answers}"
                checked += 1
    assert checked >= 30
