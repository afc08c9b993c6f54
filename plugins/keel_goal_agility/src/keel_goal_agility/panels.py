"""What the approvers of a revision request see (the workflow engine's review-panel hook): current → proposed
with its unit for every dimension, each with its rationale, and the impact preview — which goals and tasks,
which people and which incentive weights would change, old beside new (keel_goal_agility.cascade.plan)."""
from __future__ import annotations

from typing import Any

from keel_goal_agility import cascade
from keel_goal_agility.settings import APP

MAX_ROWS = 200


def review_panels(conn, app, entity: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    if getattr(app, "id", None) != APP or entity != "revision_request":
        return []
    p = cascade.plan(conn, app, record["id"])
    if p is None:
        return []
    changes = {"title": {"zh": "修订内容：当前 → 建议", "en": "The revision: current → proposed"},
               "rows": [{"label": c["label"], "old": c["old"], "new": c["new"], "unit": None} for c in p.changes]
               + [{"label": {"zh": f"{c['label']['zh']} · 调整依据", "en": f"{c['label']['en']} · rationale"},
                   "old": None, "new": c["rationale"], "unit": None} for c in p.changes if c.get("rationale")],
               "note": p.request.get("reason")}
    rows = [{"label": {"zh": f"目标 · {r['title']}", "en": f"Goal · {r['title']}"}, "old": r["old"], "new": r["new"],
             "unit": None} for r in p.resplit]
    rows += [{"label": {"zh": f"目标 · {r['title']}（待责任人确认）", "en": f"Goal · {r['title']} (owner confirms)"},
              "old": r["old"], "new": r["new"], "unit": None} for r in p.confirm]
    counts = p.summary()["counts"]
    rows.append({"label": {"zh": "受影响的目标 / 任务 / 人员", "en": "Goals / tasks / people affected"},
                 "old": None, "new": f"{counts['goals']} / {counts['tasks']} / {counts['people']}", "unit": None})
    rows += [{"label": {"zh": f"任务 · {t['title']}", "en": f"Task · {t['title']}"}, "old": None,
              "new": "黄底提示负责人", "unit": None} for t in p.tasks]
    rows += [{"label": {"zh": f"上级 · {g['title']}", "en": f"Above · {g['title']}"}, "old": None,
              "new": "关联（不改值）", "unit": None} for g in p.up]
    rows += [{"label": {"zh": f"战略卡片 · {c['title']}", "en": f"Strategy card · {c['title']}"}, "old": None,
              "new": "关联（不改值）", "unit": None} for c in p.cards]
    impact = {"title": {"zh": "影响预览", "en": "Impact preview"}, "rows": rows[:MAX_ROWS],
              "note": None if len(rows) <= MAX_ROWS else f"… +{len(rows) - MAX_ROWS}"}
    return [changes, impact]
