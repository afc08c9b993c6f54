"""The relation graph: `GET /api/v1/apps/{app}/graph/{entity}/{id}` and the Dash graph widget — links followed
up and down to a depth, permission-filtered (403 for the root, unreadable nodes left out), status and rule
colours, marks, collapsed levels and a 5,000-node graph."""
from __future__ import annotations

import datetime as dt

import pytest

from helpers_dash import by_id, csrf_cookie, dash_page, login, make_site
from keel.storage import highlights

URL = "/api/v1/apps/dashtest/graph/node/{}"
TAP_OUTPUT = ('..{"key":["MATCH"],"type":"graph-state"}.data...{"key":["MATCH"],"type":"graph"}.elements...'
              '{"key":["MATCH"],"type":"graph"}.layout...{"key":["MATCH"],"type":"graph-nav"}.href..')


@pytest.fixture
def site(tmp_path, db_url):
    """On SQLite and on PostgreSQL: the walk's queries (IN lists, grouped counts) must work on both."""
    s = make_site(tmp_path, db_url)
    yield s
    s.engine.dispose()


@pytest.fixture
def tree(site):
    """root (ann) ─ a (ann, red) ─ a1 (bob) ─ a11 (ann)
                  └ b (ann, closed) ─ leaf L (ann)"""
    u = site.users
    root = site.create("node", {"title": "Root", "owner": u["ann"], "score": "0.1"})["id"]
    a = site.create("node", {"title": "A", "owner": u["ann"], "parent": root, "score": "0.9"})["id"]
    b = site.create("node", {"title": "B", "owner": u["ann"], "parent": root, "status": "closed"})["id"]
    a1 = site.create("node", {"title": "A1", "owner": u["bob"], "parent": a})["id"]
    a11 = site.create("node", {"title": "A11", "owner": u["ann"], "parent": a1})["id"]
    leaf = site.create("leaf", {"title": "L", "owner": u["ann"], "node": b})["id"]
    return {"root": root, "a": a, "b": b, "a1": a1, "a11": a11, "leaf": leaf}


def nodes_of(body) -> dict[str, dict]:
    return {n["data"]["id"]: n for n in body["elements"]["nodes"]}


def edges_of(body) -> set[tuple[str, str]]:
    return {(e["data"]["source"], e["data"]["target"]) for e in body["elements"]["edges"]}


def test_the_graph_follows_the_named_links_up_and_down_top_down(site, tree):
    body = site.api("boss", "GET", URL.format(tree["a"])).get_json()
    nodes = nodes_of(body)
    assert body["root"] == f"node:{tree['a']}" and body["graph"] == "board/g"
    assert set(nodes) == {f"node:{tree[k]}" for k in ("root", "a", "a1", "a11")}  # up to root, down to a11
    assert {nodes[f"node:{tree[k]}"]["data"]["level"] for k in ("root", "a", "a1", "a11")} == {-1, 0, 1, 2}
    # source is the upper record: the layout draws parents above children
    assert edges_of(body) == {(f"node:{tree['root']}", f"node:{tree['a']}"), (f"node:{tree['a']}", f"node:{tree['a1']}"),
                              (f"node:{tree['a1']}", f"node:{tree['a11']}")}
    root = site.api("boss", "GET", URL.format(tree["root"])).get_json()
    assert f"leaf:{tree['leaf']}" in nodes_of(root)  # another entity's link, followed down
    assert nodes_of(root)[f"leaf:{tree['leaf']}"]["data"]["url"] == f"/apps/dashtest/leaf/{tree['leaf']}"


def test_nodes_are_coloured_by_rule_then_status(site, tree):
    nodes = nodes_of(site.api("boss", "GET", URL.format(tree["root"])).get_json())
    assert nodes[f"node:{tree['a']}"]["data"]["style"] == "red"        # score 0.9 > limits.score
    assert nodes[f"node:{tree['b']}"]["data"]["style"] == "grey"       # status closed
    assert nodes[f"node:{tree['root']}"]["data"]["style"] == "green"   # status open
    assert "red" in nodes[f"node:{tree['a']}"]["classes"].split()


def test_a_root_the_viewer_may_not_read_is_403_and_hidden_nodes_are_left_out(site, tree):
    r = site.api("ann", "GET", URL.format(tree["a1"]))  # bob's
    assert r.status_code == 403
    body = site.api("ann", "GET", URL.format(tree["root"])).get_json()
    ids = set(nodes_of(body))
    assert f"node:{tree['a1']}" not in ids
    # nor is a11 (ann's own) reached through the node she may not read
    assert f"node:{tree['a11']}" not in ids
    assert all(tree["a1"] != int(x.split(":")[1]) for e in edges_of(body) for x in e)
    assert site.api("ann", "GET", URL.format(tree["a11"])).status_code == 200
    assert site.api("ann", "GET", URL.format(999999)).status_code == 404
    assert site.api("ann", "GET", "/api/v1/apps/dashtest/graph/nope/1").status_code == 404
    bad = site.api("ann", "GET", URL.format(tree["root"]) + "?depth=11&max_nodes=0")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) >= {"max_nodes"}
    assert site.api("ann", "GET", URL.format(tree["root"]) + "?dashboard=board&widget=nope").status_code == 404


def test_marked_nodes_are_flagged_for_their_viewer_only(site, tree):
    with site.engine.begin() as conn:
        highlights.mark(conn, "dashtest", "node", tree["a"], [site.users["ann"]], "目标被修改")
    ann = nodes_of(site.api("ann", "GET", URL.format(tree["root"])).get_json())[f"node:{tree['a']}"]
    assert ann["data"]["marked"] and ann["data"]["mark_reason"] == "目标被修改" and "marked" in ann["classes"]
    boss = nodes_of(site.api("boss", "GET", URL.format(tree["root"])).get_json())[f"node:{tree['a']}"]
    assert not boss["data"]["marked"]


def test_depth_limits_the_walk(site, tree):
    body = site.api("boss", "GET", URL.format(tree["root"]) + "?depth=1").get_json()
    assert set(nodes_of(body)) == {f"node:{tree[k]}" for k in ("root", "a", "b")}


def _bulk_tree(site, n: int, fanout: int = 10) -> int:
    """n nodes in a tree `fanout` wide, inserted in one statement per level (test data, not a write path
    under test); returns the root id."""
    table = site.built().table("node")
    now = dt.datetime.now(dt.UTC)
    owner = site.users["ann"]
    base = {"row_version": 1, "created_at": now, "updated_at": now, "created_by": owner, "updated_by": owner,
            "owner": owner, "status": "open"}
    with site.engine.begin() as conn:
        conn.execute(table.insert(), [{**base, "id": 1, "title": "n1", "parent": None}])
        rows = [{**base, "id": i, "title": f"n{i}", "parent": (i - 2) // fanout + 1} for i in range(2, n + 1)]
        conn.execute(table.insert(), rows)
    return 1


def test_a_5000_node_graph_collapses_levels_and_opens_on_demand(site):
    root = _bulk_tree(site, 5000)
    body = site.api("ann", "GET", URL.format(root)).get_json()
    nodes = nodes_of(body)
    real = [n for n in nodes.values() if not n["data"].get("collapsed")]
    more = [n for n in nodes.values() if n["data"].get("collapsed")]
    assert body["truncated"] and len(real) <= 300 and more
    assert sum(n["data"]["collapsed"] for n in more) + len(real) <= 5000
    hidden = more[0]["data"]
    opened = site.api("ann", "GET", URL.format(root) + f"?expand={hidden['parent_node']}").get_json()
    assert len(nodes_of(opened)) > len(real)
    assert any(e[0] == hidden["parent_node"] and not e[1].startswith("more:") for e in edges_of(opened)
               if e[0] == hidden["parent_node"])
    everything = site.api("ann", "GET", URL.format(root) + "?all=1&depth=10").get_json()
    assert len(nodes_of(everything)) == 5000 and not everything["truncated"]


def test_the_dash_graph_widget_expands_a_collapsed_node_and_opens_a_record(site):
    root = _bulk_tree(site, 400)
    c = login(site, "ann")
    page = dash_page(c, "/dash/dashtest/board")
    key = "board-g"
    graph = by_id(page, {"type": "graph", "key": key})
    elements = graph["props"]["elements"]
    more = next(e["data"] for e in elements if e["data"].get("collapsed"))
    state = by_id(page, {"type": "graph-state", "key": key})["props"]["data"]
    assert state["record"] == root and graph["props"]["layout"]["name"] == "dagre"
    token = csrf_cookie(c, "/dash/dashtest/board")

    def tap(node):
        ids = {"graph": {"type": "graph", "key": key}, "state": {"type": "graph-state", "key": key},
               "nav": {"type": "graph-nav", "key": key}}
        payload = {"output": TAP_OUTPUT, "outputs": [{"id": ids["state"], "property": "data"},
                                               {"id": ids["graph"], "property": "elements"},
                                               {"id": ids["graph"], "property": "layout"},
                                               {"id": ids["nav"], "property": "href"}],
                   "inputs": [{"id": ids["graph"], "property": "tapNodeData", "value": node}],
                   "state": [{"id": ids["state"], "property": "data", "value": state}],
                   "changedPropIds": [f'{{"key":"{key}","type":"graph"}}.tapNodeData']}
        return c.post("/dash/_dash-update-component", json=payload, headers={"X-CSRFToken": token})

    r = tap(more)
    assert r.status_code == 200, r.text[:300]
    out = r.get_json()["response"]
    new_elements = next(v for v in out.values() if "elements" in v)["elements"]
    assert len(new_elements) > len(elements)
    real = next(e["data"] for e in elements if e["data"].get("url"))
    r = tap(real)
    assert next(v for v in r.get_json()["response"].values() if "href" in v)["href"] == real["url"]


def test_graph_of_an_app_without_graph_widgets_follows_every_link(site, tree):
    site.edit_json("dashboards/board.json", lambda d: d.update(widgets=[w for w in d["widgets"] if w["type"] != "graph"]))
    site.apply()
    body = site.api("boss", "GET", URL.format(tree["b"])).get_json()
    assert body["graph"] == "links" and f"leaf:{tree['leaf']}" in nodes_of(body)


def test_picking_another_root_redraws_the_dash_graph(site, tree):
    other = site.create("node", {"title": "Other root", "owner": site.users["ann"]})["id"]
    c = login(site, "ann")
    page = dash_page(c, "/dash/dashtest/board")
    key = "board-g"
    picker = by_id(page, {"type": "graph-root", "key": key})
    assert {o["value"] for o in picker["props"]["options"]} == {tree["root"], other}
    state = by_id(page, {"type": "graph-state", "key": key})["props"]["data"]
    payload = {"output": '{"key":["MATCH"],"type":"graph-holder"}.children',
               "outputs": {"id": {"type": "graph-holder", "key": key}, "property": "children"},
               "inputs": [{"id": {"type": "graph-root", "key": key}, "property": "value", "value": other}],
               "state": [{"id": {"type": "graph-state", "key": key}, "property": "data", "value": state}],
               "changedPropIds": [f'{{"key":"{key}","type":"graph-root"}}.value']}
    r = c.post("/dash/_dash-update-component", json=payload,
               headers={"X-CSRFToken": csrf_cookie(c, "/dash/dashtest/board")})
    assert r.status_code == 200, r.text[:300]
    holder = next(iter(r.get_json()["response"].values()))["children"]
    graph = by_id(holder, {"type": "graph", "key": key})
    assert [e["data"]["id"] for e in graph["props"]["elements"]] == [f"node:{other}"]


def test_a_graph_definition_of_a_dashboard_not_for_the_viewer_is_refused(site, tree):
    site.edit_json("dashboards/board.json", lambda d: d.update(roles=["boss"]))
    site.apply()
    r = site.api("ann", "GET", URL.format(tree["root"]) + "?dashboard=board&widget=g")
    assert r.status_code == 403
    assert site.api("boss", "GET", URL.format(tree["root"]) + "?dashboard=board&widget=g").status_code == 200
    # without naming one, the default graph still answers (permission-filtered as ever)
    assert site.api("ann", "GET", URL.format(tree["root"])).status_code == 200
