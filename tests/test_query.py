"""The one read path: filters, sorts, paging, aggregates, export and audit reads — and SQL injection
through any name or value never reaches the SQL text."""
from __future__ import annotations

import csv
import io

import pytest
import sqlalchemy as sa

from helpers_records import captured_sql, make_world
from keel.audit.query import list_audit
from keel.errors import FieldErrors, NotFound
from keel.storage import export, query, records
from keel.storage.query import Filter, Sort


@pytest.fixture
def world(db_url):
    w = make_world(db_url)
    yield w
    w.engine.dispose()


ROWS = [
    # name, budget, rating, region, tags, started, notes
    ("Alpha", "100.50", 3, "north", ["a"], "2025-01-10", "first 50% off_sale"),
    ("beta", "20", 7, "south", ["a", "b"], "2025-03-01", None),
    ("Gamma", None, None, None, None, None, "x"),
    ("delta", "300", 7, "north", ["c"], "2025-02-15", "Sale"),
]


@pytest.fixture
def seeded(world):
    ids = {}
    with world.engine.begin() as c:
        for name, budget, rating, region, tags, started, notes in ROWS:
            rec = records.create(c, world.built, "account", {
                "name": name, "budget": budget, "rating": rating, "region": region, "tags": tags,
                "started": started, "notes": notes, "owner": world["alice"].user_id}, world["root"])
            ids[name] = rec["id"]
    return world, ids


def names(world, actor="alice", filters=(), sort=(), **kw) -> list[str]:
    with world.engine.connect() as c:
        page = query.list_records(c, world.built, "account", world[actor], filters=filters, sort=sort, **kw)
    return [i["name"] for i in page.items]


def parse(world, args, actor="alice"):
    return query.parse_query_args(world.built.entity("account"), world[actor], args)


def listed(world, args, actor="alice") -> list[str]:
    filters, sort, page, per_page = parse(world, args, actor)
    return names(world, actor, filters, sort, page=page, per_page=per_page)


# ---------------------------------------------------------------- filters, sort, paging

FILTER_CASES = [
    ({"region": "north"}, ["Alpha", "delta"]),
    ({"region__ne": "north"}, ["beta", "Gamma"]),          # "not north" includes having no region
    ({"budget__gt": "20"}, ["Alpha", "delta"]),
    ({"budget__gte": "20.00"}, ["Alpha", "beta", "delta"]),
    ({"budget__lt": "100.5"}, ["beta"]),
    ({"budget__lte": "100.50"}, ["Alpha", "beta"]),
    ({"rating__in": "3, 7"}, ["Alpha", "beta", "delta"]),
    ({"rating__isnull": "true"}, ["Gamma"]),
    ({"budget__isnull": "false", "rating": "7"}, ["beta", "delta"]),
    ({"notes__contains": "SALE"}, ["Alpha", "delta"]),     # case-insensitive on both databases
    ({"notes__contains": "50%"}, ["Alpha"]),               # % and _ are literal, not wildcards
    ({"notes__contains": "_"}, ["Alpha"]),
    ({"tags__contains": "a"}, ["Alpha", "beta"]),
    ({"started__gte": "2025-02-01"}, ["beta", "delta"]),
    ({"name__in": ["Alpha,delta"]}, ["Alpha", "delta"]),   # a MultiDict-style list with one value
]


def test_filters(seeded):
    world, _ = seeded
    for args, expected in FILTER_CASES:
        assert listed(world, {**args, "sort": "id"}) == expected, args


def test_filter_on_system_columns(seeded):
    world, ids = seeded
    assert listed(world, {"id__gt": str(ids["beta"])}) == ["Gamma", "delta"]
    assert listed(world, {"created_by": str(world["root"].user_id)}) == [r[0] for r in ROWS]
    assert listed(world, {"created_at__lt": "2000-01-01T00:00:00Z"}) == []


def test_sort_puts_empty_values_last_and_breaks_ties_by_id(seeded):
    world, _ = seeded
    assert listed(world, {"sort": "budget"}) == ["beta", "Alpha", "delta", "Gamma"]
    assert listed(world, {"sort": "-budget"}) == ["delta", "Alpha", "beta", "Gamma"]
    assert listed(world, {"sort": "-rating,name"}) == ["beta", "delta", "Alpha", "Gamma"]
    assert names(world, sort=[Sort("rating", True), Sort("started")]) == ["delta", "beta", "Alpha", "Gamma"]


def test_paging(seeded):
    world, _ = seeded
    with world.engine.connect() as c:
        page = query.list_records(c, world.built, "account", world["alice"], sort=["-id"], page=2, per_page=3)
        assert (page.total, page.page, page.per_page, page.pages) == (4, 2, 3, 2)
        assert [i["name"] for i in page.items] == ["Alpha"]
        assert query.list_records(c, world.built, "account", world["alice"], per_page=10_000).per_page == 200
    assert parse(world, {"per_page": "5000", "page": "2"})[2:] == (2, 200)


def test_every_bad_argument_is_reported_together(seeded):
    world, _ = seeded
    with pytest.raises(FieldErrors) as err:
        parse(world, {"colour": "red", "budget__gt": "lots", "rating__like": "1", "approved__gt": "true",
                      "tags": "a", "started__in": "2025-01-01,yesterday", "sort": "name,-nope",
                      "page": "0", "per_page": "ten", "name__in": ["a", "b"]})
    got = err.value.rendered()
    assert got == {
        "colour": ["Unknown field."],
        "budget__gt": ["Must be a number."],
        "rating__like": ["Unknown filter operator."],
        "approved__gt": ["This filter does not apply to this field."],
        "tags": ["This filter does not apply to this field."],
        "started__in": ["Must be a date (YYYY-MM-DD)."],
        "sort": ["Cannot sort by 'nope'."],
        "page": ["Must be at least 1."],
        "per_page": ["Must be a whole number."],
        "name__in": ["Give this argument once."],
    }


def test_json_fields_cannot_be_sorted_or_grouped(seeded):
    world, _ = seeded
    with pytest.raises(FieldErrors):
        parse(world, {"sort": "tags"})
    with world.engine.connect() as c, pytest.raises(FieldErrors):
        query.aggregate(c, world.built, "account", world["alice"], "tags", "count", None)


def test_deleted_rows_only_when_asked(seeded):
    world, ids = seeded
    with world.engine.begin() as c:
        records.delete(c, world.built, "account", ids["beta"], world["alice"])
    assert "beta" not in names(world)
    with world.engine.connect() as c:
        page = query.list_records(c, world.built, "account", world["alice"], include_deleted=True)
        deleted = [i for i in page.items if i["name"] == "beta"]
        assert deleted and deleted[0]["deleted_at"]
        assert query.get_record(c, world.built, "account", ids["beta"], world["alice"], include_deleted=True)
        with pytest.raises(NotFound):
            query.get_record(c, world.built, "account", ids["beta"], world["alice"])


@pytest.mark.parametrize("bad", ["abc", "-1", "0", True, "1.5", 2**70])
def test_bad_record_ids_are_not_found(seeded, bad):
    world, _ = seeded
    with world.engine.connect() as c, pytest.raises(NotFound):
        query.get_record(c, world.built, "account", bad, world["alice"])


# ---------------------------------------------------------------- aggregates

def test_aggregates_are_exact_and_grouped(seeded):
    world, _ = seeded
    alice = world["alice"]
    with world.engine.connect() as c:
        def agg(group_by, metric, field, filters=()):
            return query.aggregate(c, world.built, "account", alice, group_by, metric, field, filters)
        assert agg(None, "count", None) == [{"group": None, "value": 4}]
        assert agg(None, "count", "budget") == [{"group": None, "value": 3}]
        assert agg("region", "sum", "budget") == [
            {"group": "north", "value": "400.50"}, {"group": "south", "value": "20.00"},
            {"group": None, "value": None}]
        assert agg(None, "avg", "budget") == [{"group": None, "value": "140.17"}]  # 420.50 / 3
        assert agg(None, "avg", "rating") == [{"group": None, "value": "5.6667"}]
        assert agg(None, "min", "started") == [{"group": None, "value": "2025-01-10"}]
        assert agg(None, "max", "budget", [Filter("region", "eq", "south")]) == [{"group": None, "value": "20.00"}]
        assert agg("rating", "count", None) == [{"group": 3, "value": 1}, {"group": 7, "value": 2},
                                                {"group": None, "value": 1}]
        for bad in ((None, "median", "budget"), (None, "sum", "name"), (None, "sum", None),
                    ("nope", "count", None), (None, "max", "tags")):
            with pytest.raises(FieldErrors):
                agg(*bad)


# ---------------------------------------------------------------- export

def test_export_neutralises_formulas_and_keeps_numbers(world):
    payloads = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain"]
    with world.engine.begin() as c:
        for i, p in enumerate(payloads):
            records.create(c, world.built, "account", {"name": f"n{i}", "notes": p, "budget": "-5.25",
                                                       "owner": world["alice"].user_id}, world["alice"])
        text = export.export_csv(c, world.built, "account", world["alice"], sort=["id"])
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[:2] == ["id", "row_version"] and "secret" not in header
    notes = [r[header.index("notes")] for r in rows[1:]]
    assert notes == ["'=1+1", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "plain"]
    assert {r[header.index("budget")] for r in rows[1:]} == {"-5.25"}  # a number is not a formula


def test_export_headers_are_neutralised_too():
    assert export.safe_cell("=HYPERLINK()") == "'=HYPERLINK()"
    assert export.safe_cell("-1") == "'-1" and export.safe_cell("-1", numeric=True) == "-1"
    assert export.safe_cell("-1+2", numeric=True) == "'-1+2"


def test_export_refuses_more_than_its_cap(seeded):
    world, _ = seeded
    with world.engine.connect() as c:
        with pytest.raises(FieldErrors) as err:
            list(export.export_rows(c, world.built, "account", world["alice"], limit=3))
        assert "_record" in err.value.errors
        assert len(list(export.export_rows(c, world.built, "account", world["alice"], limit=4))) == 5


# ---------------------------------------------------------------- expand and history

def test_expand_gives_id_and_title_of_readable_targets(seeded):
    world, ids = seeded
    with world.engine.begin() as c:
        p = records.create(c, world.built, "project", {"title": "P", "account": ids["Alpha"]}, world["alice"])
        got = query.get_record(c, world.built, "project", p["id"], world["alice"], expand=("account",))
        assert got["account"] == {"id": ids["Alpha"], "title": "Alpha"}
        # bob (rep) reads every project but not alice's account: the link comes back empty
        got = query.get_record(c, world.built, "project", p["id"], world["bob"], expand=("account",))
        assert got["account"] is None
        assert query.get_record(c, world.built, "project", p["id"], world["bob"])["account"] == ids["Alpha"]
        for bad in (("title",), ("nope",)):
            with pytest.raises(FieldErrors):
                query.get_record(c, world.built, "project", p["id"], world["alice"], expand=bad)


def test_history_lists_versions_in_order(seeded):
    world, ids = seeded
    rid = ids["Alpha"]
    with world.engine.begin() as c:
        records.update(c, world.built, "account", rid, {"secret": "s", "rating": 4}, world["root"], 1)
        records.update(c, world.built, "account", rid, {"notes": None}, world["alice"], 2)
    with world.engine.connect() as c:
        h = query.record_history(c, world.built, "account", rid, world["alice"])
        full = query.record_history(c, world.built, "account", rid, world["root"])
    assert [(v["version"], v["action"]) for v in h] == [(1, "create"), (2, "update"), (3, "update")]
    assert h[1]["changes"] == {"rating": [3, 4]} and full[1]["changes"]["secret"] == [None, "s"]
    assert h[2]["changes"] == {"notes": ["first 50% off_sale", None]} and h[2]["user_id"] == world["alice"].user_id


# ---------------------------------------------------------------- audit reads

def test_audit_for_admins_and_for_readers(seeded):
    world, ids = seeded
    from keel.storage.audit import record_event

    with world.engine.begin() as c:
        record_event(c, world["root"], "app.apply", app="crm", detail={"version": 2})
        records.update(c, world.built, "account", ids["Alpha"], {"rating": 1}, world["alice"], 1)
    rt = world.runtime()
    with world.engine.connect() as c:
        everything = list_audit(c, rt, world["root"])
        assert everything.total == 6 and everything.items[0]["action"] == "record.update"
        assert any(e["action"] == "app.apply" for e in everything.items)
        mine = list_audit(c, rt, world["alice"])
        assert mine.total == 5 and not any(e["action"] == "app.apply" for e in mine.items)
        one = list_audit(c, rt, world["alice"], app="crm", entity="account", record=ids["Alpha"])
        assert [e["action"] for e in one.items] == ["record.update", "record.create"]
        assert list_audit(c, rt, world["bob"]).total == 0
        with pytest.raises(NotFound):
            list_audit(c, rt, world["bob"], app="crm", entity="account", record=ids["Alpha"])
        with pytest.raises(FieldErrors):
            list_audit(c, rt, world["alice"], record=ids["Alpha"])
        paged = list_audit(c, rt, world["alice"], page=2, per_page=2)
        assert (paged.total, len(paged.items)) == (5, 2)


# ---------------------------------------------------------------- SQL injection

PAYLOADS = [
    "x') UNION SELECT password_hash FROM keel_users--",
    "name; DROP TABLE keel_users",
    "' OR '1'='1",
    "1; DELETE FROM crm__account WHERE 1=1; --",
    "\" OR \"\"=\"",
    "name) OR (1=1",
]


def test_injected_names_are_unknown_and_values_are_bound(seeded):
    world, ids = seeded
    entity = world.built.entity("account")
    with captured_sql(world.engine) as statements:
        for p in PAYLOADS:
            for args in ({p: "1"}, {f"name__{p}": "1"}, {f"{p}__eq": "1"}, {"sort": p}, {"sort": f"-{p}"}):
                with pytest.raises(FieldErrors):
                    query.parse_query_args(entity, world["alice"], args)
            with world.engine.connect() as c:
                for flt in (Filter(p, "eq", "1"), Filter("name", p, "1")):
                    with pytest.raises(FieldErrors):
                        query.list_records(c, world.built, "account", world["alice"], filters=[flt])
                with pytest.raises(FieldErrors):
                    query.list_records(c, world.built, "account", world["alice"], sort=[Sort(p)])
                for bad in ((p, "count", None), (None, p, "budget"), (None, "sum", p)):
                    with pytest.raises(FieldErrors):
                        query.aggregate(c, world.built, "account", world["alice"], *bad)
                with pytest.raises(FieldErrors):
                    query.get_record(c, world.built, "account", ids["Alpha"], world["alice"], expand=(p,))
                for args in ({"name": p}, {"name__contains": p}, {"name__in": f"{p},Alpha"},
                             {"notes__ne": p}, {"name__lt": p}):
                    filters, sort, _, _ = query.parse_query_args(entity, world["alice"], args)
                    page = query.list_records(c, world.built, "account", world["alice"], filters, sort)
                    assert p not in str([i["name"] for i in page.items])
        assert statements, "the listener saw the queries"
        for p in PAYLOADS:
            assert not any(p in s for s in statements), p
    assert world.count("account") == len(ROWS)


def test_stored_payloads_read_back_later_stay_data(world):
    """Second-order injection: a value stored earlier and used later in a filter, a sort or an export
    is still a bound parameter."""
    alice = world["alice"]
    with captured_sql(world.engine) as statements:
        with world.engine.begin() as c:
            for p in PAYLOADS:
                records.create(c, world.built, "account", {"name": p, "notes": p, "owner": alice.user_id}, alice)
        with world.engine.connect() as c:
            stored = query.list_records(c, world.built, "account", alice, sort=["-name"]).items
            assert sorted(i["name"] for i in stored) == sorted(PAYLOADS)
            for item in stored:
                again = query.list_records(c, world.built, "account", alice,
                                           filters=[Filter("name", "eq", item["name"]),
                                                    Filter("notes", "contains", item["notes"])])
                assert [i["id"] for i in again.items] == [item["id"]]
                assert query.get_record(c, world.built, "account", item["id"], alice)["name"] == item["name"]
            query.aggregate(c, world.built, "account", alice, "name", "count", None)
            text = export.export_csv(c, world.built, "account", alice)
        assert all(p in text for p in PAYLOADS[1:3])
    for p in PAYLOADS:
        assert not any(p in s for s in statements), p
    with world.engine.connect() as c:  # nothing was dropped or deleted
        assert c.execute(sa.text("SELECT count(*) FROM keel_users")).scalar_one() == len(world.actors)
    assert world.count("account") == len(PAYLOADS)
