"""The one permission point: row scopes as SQL, field permissions, and a role × path matrix proving
that a CANARY record (owned outside the reader's scope) and a CANARY field (read_roles: hr) never
reach a reader through any read or write path."""
from __future__ import annotations

import json

import pytest

from helpers_records import ACCOUNT, CANARY_NAME, CANARY_SECRET, make_world
from keel.actor import SYSTEM, Actor
from keel.audit.query import list_audit
from keel.definitions.model import PermissionRule
from keel.errors import FieldErrors, NotFound, PermissionDenied
from keel.storage import export, permissions, query, records
from keel.storage.query import Filter


def actor(*roles: str, admin: bool = False) -> Actor:
    return Actor(1, "u", frozenset(roles), admin, 1)


# ---------------------------------------------------------------- scopes and fields, no database

def test_widest_scope_over_the_actors_roles():
    both = actor("rep", "analyst")
    assert permissions.allowed_scope(ACCOUNT, both, "read") == "all"
    assert permissions.allowed_scope(ACCOUNT, both, "update") == "own"
    assert permissions.allowed_scope(ACCOUNT, actor("lead", "rep"), "update") == "team"
    assert permissions.allowed_scope(ACCOUNT, actor("manager"), "delete") == "department"
    assert permissions.allowed_scope(ACCOUNT, actor(), "read") == "none"
    assert permissions.allowed_scope(ACCOUNT, actor("nobody"), "read") == "none"
    assert permissions.allowed_scope(ACCOUNT, actor(admin=True), "delete") == "all"
    assert permissions.allowed_scope(ACCOUNT, SYSTEM, "update") == "all"
    with pytest.raises(ValueError):
        permissions.allowed_scope(ACCOUNT, actor("rep"), "create")


def test_an_unknown_scope_denies():
    from dataclasses import replace

    odd = replace(ACCOUNT, permissions=(PermissionRule("rep", read="own_or_team"),))
    assert permissions.allowed_scope(odd, actor("rep"), "read") == "none"


def test_can_create():
    assert permissions.can_create(ACCOUNT, actor("rep"))
    assert not permissions.can_create(ACCOUNT, actor("analyst"))
    assert not permissions.can_create(ACCOUNT, actor())
    assert permissions.can_create(ACCOUNT, actor(admin=True))


def ids(fields) -> set[str]:
    return {f.id for f in fields}


def test_field_permissions():
    assert "secret" not in ids(permissions.readable_fields(ACCOUNT, actor("analyst")))
    assert "secret" in ids(permissions.readable_fields(ACCOUNT, actor("hr")))
    assert "secret" in ids(permissions.readable_fields(ACCOUNT, actor(admin=True)))
    rep = ids(permissions.writable_fields(ACCOUNT, actor("rep")))
    assert {"name", "budget", "owner"} <= rep
    assert not rep & {"margin", "approved", "bonus", "secret"}
    assert "bonus" in ids(permissions.writable_fields(ACCOUNT, actor("manager")))
    admin = ids(permissions.writable_fields(ACCOUNT, actor(admin=True)))
    assert "approved" not in admin and "margin" not in admin and "secret" in admin
    system = ids(permissions.writable_fields(ACCOUNT, SYSTEM))
    assert "approved" in system and "margin" not in system


# ---------------------------------------------------------------- row scopes against real rows

@pytest.fixture
def world(db_url):
    w = make_world(db_url)
    yield w
    w.engine.dispose()


def seed_accounts(w) -> dict[str, int]:
    """One account owned by each user, each with a CANARY field value; frank's is the CANARY record."""
    out = {}
    with w.engine.begin() as c:
        for name, a in w.actors.items():
            values = {"name": f"acct-{name}", "owner": a.user_id, "secret": f"CANARY-FIELD-{name}",
                      "budget": "10", "region": "north"}
            if name == "frank":
                values.update(name=CANARY_NAME, secret=CANARY_SECRET, budget="777.77", region="south",
                              tags=["c"])
            out[name] = records.create(c, w.built, "account", values, w["root"])["id"]
    return out


SEES = {
    "alice": {"alice"},
    "bob": {"bob"},
    "frank": {"frank"},
    "carol": {"carol", "alice"},                                  # team: herself and her report
    "dave": {"dave", "carol", "alice", "bob", "gus", "ivan"},     # department, plus ivan who reports to him
    "gus": set(),
    "erin": {"dave", "carol", "alice", "bob", "gus", "erin", "frank", "hank", "ivan", "root"},
}


def test_row_scopes_select_exactly_the_rows_in_scope(world):
    accounts = seed_accounts(world)
    owner_of = {rid: name for name, rid in accounts.items()}
    with world.engine.connect() as c:
        for reader, expected in SEES.items():
            page = query.list_records(c, world.built, "account", world[reader], per_page=200)
            assert {owner_of[i["id"]] for i in page.items} == expected, reader
            assert page.total == len(expected)


def test_update_and_delete_scopes(world):
    accounts = seed_accounts(world)
    with world.engine.begin() as c:  # carol (team) updates her report's record
        records.update(c, world.built, "account", accounts["alice"], {"budget": "1"}, world["carol"], 1)
    with world.engine.begin() as c, pytest.raises(NotFound):  # ...but not outside her team
        records.update(c, world.built, "account", accounts["bob"], {"budget": "1"}, world["carol"], 1)
    with world.engine.begin() as c, pytest.raises(PermissionDenied):  # team reads, but has no delete
        records.delete(c, world.built, "account", accounts["alice"], world["carol"])
    with world.engine.begin() as c:  # dave (department) deletes in his department
        records.delete(c, world.built, "account", accounts["bob"], world["dave"])
    with world.engine.begin() as c, pytest.raises(NotFound):
        records.delete(c, world.built, "account", accounts["hank"], world["dave"])


# ---------------------------------------------------------------- the CANARY matrix

def must_not_leak(value, forbidden, where):
    text = json.dumps(value, default=str)
    for secret in forbidden:
        assert secret not in text, f"{secret} leaked through {where}"


def test_canary_record_and_field_never_reach_a_reader(world):
    w = world
    accounts = seed_accounts(w)
    canary = accounts["frank"]
    root = w["root"]
    with w.engine.begin() as c:
        records.update(c, w.built, "account", canary, {"secret": CANARY_SECRET + "-v2", "budget": "778"}, root, 1)
        gone = records.create(c, w.built, "account", {"name": "CANARY-7f3a-deleted", "owner": w["frank"].user_id,
                                                      "secret": CANARY_SECRET}, root)["id"]
        records.delete(c, w.built, "account", gone, root)
        canary_project = records.create(c, w.built, "project", {"title": "P-canary", "account": canary},
                                        w["frank"])["id"]
    all_secrets = [f"CANARY-FIELD-{n}" for n in w.actors] + [CANARY_SECRET]
    before = w.snapshot()
    for reader, sees in SEES.items():
        if reader == "frank":  # the canary's owner
            continue
        who = w[reader]
        sees_canary = "frank" in sees
        forbidden = all_secrets + ([] if sees_canary else [CANARY_NAME, "778.00", "777.77"])
        with w.engine.connect() as c:
            page = query.list_records(c, w.built, "account", who, per_page=200)
            must_not_leak(page.items, forbidden, f"list as {reader}")
            assert page.total == len(sees)
            hit = query.list_records(c, w.built, "account", who, filters=[Filter("name", "eq", CANARY_NAME)])
            assert hit.total == (1 if sees_canary else 0)
            like = query.list_records(c, w.built, "account", who, filters=[Filter("name", "contains", "canary")])
            assert like.total == (1 if sees_canary else 0)
            hidden_budget = query.list_records(c, w.built, "account", who, filters=[Filter("budget", "gt", "100")])
            assert hidden_budget.total == (1 if sees_canary else 0)
            for args in ({"secret": CANARY_SECRET}, {"secret__contains": "C"}, {"secret__isnull": "false"},
                         {"sort": "secret"}, {"sort": "-secret,name"}):
                with pytest.raises(FieldErrors):
                    query.parse_query_args(w.built.entity("account"), who, args)
            with pytest.raises(FieldErrors):
                query.list_records(c, w.built, "account", who, filters=[Filter("secret", "isnull", False)])
            with pytest.raises(FieldErrors):
                query.list_records(c, w.built, "account", who, sort=["secret"])
            counts = query.aggregate(c, w.built, "account", who, None, "count", None)
            assert counts == [{"group": None, "value": len(sees)}]
            by_region = query.aggregate(c, w.built, "account", who, "region", "sum", "budget")
            must_not_leak(by_region, forbidden, f"aggregate as {reader}")
            assert ({"group": "south", "value": "778.00"} in by_region) == sees_canary
            for group_by, metric, field in ((None, "count", "secret"), ("secret", "count", None),
                                            (None, "max", "secret")):
                with pytest.raises(FieldErrors):
                    query.aggregate(c, w.built, "account", who, group_by, metric, field)
            csv_text = export.export_csv(c, w.built, "account", who)
            must_not_leak(csv_text, forbidden, f"export as {reader}")
            assert len(csv_text.strip().splitlines()) == len(sees) + 1
            assert "secret" not in csv_text.splitlines()[0]
            for rid in (canary, gone):
                if sees_canary and rid == canary:
                    history = query.record_history(c, w.built, "account", rid, who)
                    must_not_leak(history, forbidden, f"history as {reader}")
                    assert [h["action"] for h in history] == ["create", "update"]
                    assert history[1]["changes"] == {"budget": ["777.77", "778.00"]}
                    continue
                for read in (query.get_record, query.record_history):
                    with pytest.raises(NotFound):
                        read(c, w.built, "account", rid, who)
            for name in sees:
                must_not_leak(query.record_history(c, w.built, "account", accounts[name], who), forbidden,
                              f"own history as {reader}")
            if permissions.allowed_scope(w.built.entity("project"), who, "read") == "all":
                p = query.get_record(c, w.built, "project", canary_project, who, expand=("account",))
                assert p["account"] == ({"id": canary, "title": CANARY_NAME} if sees_canary else None)
                plist = query.list_records(c, w.built, "project", who, expand=("account",))
                must_not_leak(plist.items, forbidden, f"expanded list as {reader}")
            else:
                with pytest.raises(NotFound):
                    query.get_record(c, w.built, "project", canary_project, who, expand=("account",))
            audit = list_audit(c, w.runtime(), who, per_page=200)
            must_not_leak(audit.items, forbidden, f"audit as {reader}")
            seen_records = {e["record_id"] for e in audit.items if e["entity"] == "account"}
            assert seen_records == {accounts[n] for n in sees}
            assert not any(e["action"].startswith("app.") or e["record_id"] is None for e in audit.items)
            with pytest.raises(NotFound) if not sees_canary else _no_error():
                list_audit(c, w.runtime(), who, app="crm", entity="account", record=canary)
        for write in (
            lambda c, who=who: records.update(c, w.built, "account", canary, {"budget": "1"}, who, 2),
            lambda c, who=who: records.update(c, w.built, "account", canary, {"secret": "x"}, who, 2),
            lambda c, who=who: records.delete(c, w.built, "account", canary, who),
            lambda c, who=who: records.restore(c, w.built, "account", gone, who),
        ):
            with pytest.raises(PermissionDenied if sees_canary else NotFound), w.engine.begin() as c:
                write(c)
    assert w.snapshot() == before


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_canary_field_is_visible_to_its_role(world):
    accounts = seed_accounts(world)
    with world.engine.connect() as c:
        rec = query.get_record(c, world.built, "account", accounts["frank"], world["hank"])
        assert rec["secret"] == CANARY_SECRET
        hit = query.list_records(c, world.built, "account", world["hank"],
                                 filters=query.parse_query_args(world.built.entity("account"), world["hank"],
                                                                {"secret": CANARY_SECRET})[0])
        assert [i["id"] for i in hit.items] == [accounts["frank"]]


def test_a_record_without_an_owner_belongs_to_its_creator(world):
    with world.engine.begin() as c:
        rid = records.create(c, world.built, "account", {"name": "Unowned"}, world["bob"])["id"]
    with world.engine.connect() as c:
        for reader, sees in (("bob", True), ("alice", False), ("dave", True), ("carol", False)):
            got = query.list_records(c, world.built, "account", world[reader]).items
            assert (rid in [i["id"] for i in got]) == sees, reader
