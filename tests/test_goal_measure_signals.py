"""Market signals of a month (issue 11 items 3 and 10): customer-feedback hot words by jieba with the
company's terms as a user dictionary — Chinese and English mixed — and the month's competitor actions,
loaded through the connector definitions from the sample files and kept with the period's snapshot."""
from __future__ import annotations

import shutil

import pytest

from helpers_goal_measure import REPO, World

SAMPLE = REPO / "plugins" / "keel_goal_agility" / "sample"


def test_mixed_chinese_and_english_feedback_gives_hot_words_with_company_terms_kept_whole():
    from keel_goal_agility.measure import text

    feedback = ["希望增加 API 接口，Renewal 价格太高", "客户成功经理响应慢，需要扩容 seats",
                "扩容需求很多，api rate limit 太低", "续费率下降 because of pricing, need more API quota",
                "The API docs are great，续费率提升了"]
    words = dict(text.hot_words(feedback, ["客户成功经理", "续费率", "扩容"], top=6))

    assert "api" in words and "API" not in words  # one word whatever its case
    assert words["api"] == max(words.values())
    assert {"扩容", "续费率"} <= set(words)
    assert not {"because", "of", "the", "need", "are"} & set(words)  # English filler dropped
    # Without the company's terms jieba splits them: 续费率 -> 续 / 费率.
    assert "续费率" in text.words("续费率提升明显", ["续费率"])
    assert "续费率" not in text.words("续费率提升明显")


def test_keyword_mentions_use_segmentation_and_phrases():
    from keel_goal_agility.measure import text

    assert text.mentions("本周：高客单价客户深耕，推进增购；LTV 测算", ["高客单价", "增购", "ltv", "续约"]) == \
        ["高客单价", "增购", "ltv"]
    assert text.mentions("讨论团建", ["增购"]) == []
    assert text.mentions("", ["增购"]) == []


@pytest.fixture
def world(tmp_path, sqlite_url, monkeypatch):
    w = World(tmp_path, sqlite_url, monkeypatch)
    yield w
    w.close()


def test_the_snapshot_keeps_the_months_hot_words_and_competitor_actions(world):
    from keel.actor import SYSTEM
    from keel.connectors.sync import EntitySync, fetch_items, sync_entity
    from keel.definitions.model import thaw

    for name in ("customer_feedback.csv", "market_signals.csv"):
        shutil.copyfile(SAMPLE / name, world.imports / name)
    built = world.built
    for connector, entity in (("customer_feedback", "customer_feedback"), ("market_signals", "market_signal")):
        mapping = thaw(built.definition.definitions_of("connector")[connector].data)["config"]["mapping"]
        with world.engine.begin() as conn:
            sync_entity(conn, built, EntitySync(entity, "external_id", mapping), fetch_items(built.definition, connector),
                        SYSTEM)
    world.goal("rep_a", "新增客户数", 10)
    world.actuals([["2025-10", "rep_a", "新增客户数", "4"]])
    upsell = world.goal("rep_b", "增购额", 100000, unit="cny", category="upsell")

    world.run_snapshot("2025-10")

    r = world.app.test_client().get("/api/v1/apps/goal_agility/measures/signals/2025-10", headers=world.token("cro"))
    assert r.status_code == 200
    words = [w for w, _ in r.json["hot_words"]]
    assert r.json["feedback_count"] == 11  # October's only
    assert {"扩容", "增购", "api"} <= set(words[:6])
    assert "客户成功经理" in words  # a company term (settings.snapshot.user_terms), whole
    assert [a["date"] for a in r.json["competitor_actions"]] == ["2025-10-09", "2025-10-14", "2025-10-21"]
    item = world.app.test_client().get(f"/api/v1/apps/goal_agility/measures/snapshots?goal={upsell}",
                                       headers=world.token("cro")).json["items"][0]
    assert [a["date"] for a in item["related_actions"]] == ["2025-10-09", "2025-10-14"]  # upsell ones
    missing = world.app.test_client().get("/api/v1/apps/goal_agility/measures/signals/2025-09",
                                          headers=world.token("cro"))
    assert missing.status_code == 404
