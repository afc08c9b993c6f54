"""Admin-written templates are bounded (issue 8 §2): every rendering has a budget, validation renders
every notification and connector template against sample data built from the definition, and a
template that fails at run time never blocks a workflow transition."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import APPS, make_app
from helpers_timing import cpu_seconds
from test_workflow_support import FIXTURE as WF_FIXTURE
from test_workflow_support import World, apply_fixture, build_org

NESTED_LOOPS = "{% for a in 'x'*100000 %}{% for b in 'x'*100000 %}{% endfor %}{% endfor %}"
# Each of these used to hang, allocate ~1 GB or raise a raw RecursionError.
REPRODUCTIONS = {
    "nested loops": (NESTED_LOOPS, "loop steps"),
    "percent width": ("{{ '%0999999999d' % 1 }}", "characters"),
    "center": ("{{ ''|center(1000000000) }}", "characters"),
    "format width": ("{{ '{0:>999999999}'.format(1) }}", "characters"),
    "replace": ("{{ ('x'*100000)|replace('x', 'x'*100000) }}", "characters"),
    "recursive macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "levels deep"),
    "format filter": ("{{ '%0999999999d'|format(1) }}", "characters"),
    "str method width": ("{{ ''.ljust(10**9) }}", "characters"),
    "join": ("{{ ('x'*100000)|list|join('y'*100000) }}", "characters"),
    "concat": ("{% set a = 'x'*100000 %}{{ a~a~a~a~a~a~a~a~a~a~a }}", "characters"),
    "indent": ("{{ ('a\n'*50000)|indent(100000) }}", "characters"),
    "output": ("{% for i in 'x'*100000 %}{{ 'y'*100 }}{% endfor %}", "output"),
    "batch": ("{{ [1,2,3]|batch(1000000000, 'x')|list }}", "characters"),
    "bytes method": ("{{ 'x'.encode().ljust(10**9) }}", "characters"),
    "int method": ("{{ (1).to_bytes(10**9, 'big') }}", "characters"),
    "power of a power": ("{{ (9**9999)**9999 }}", "bits"),
    "product of powers": ("{{ 9**9999 * 9**9999 * 9**9999 * 9**9999 * 9**9999 * 9**9999 * 9**9999 }}", "bits"),
    "sum of lists": ("{{ ('x'*100000)|list|batch(1)|sum(start=[]) }}", "numbers only"),
}


@pytest.mark.parametrize("template,words", REPRODUCTIONS.values(), ids=REPRODUCTIONS.keys())
def test_each_way_to_exhaust_the_sandbox_is_a_clean_error_within_a_second(template, words):
    from keel.sandbox import RenderFailed, render_or_explain, sandbox

    for env in (sandbox(autoescape=True), sandbox(autoescape=False)):
        compiled = env.from_string(template)
        # CPU time of this thread: refused by the step or size budget, not after doing the work (minutes
        # or a gigabyte), however busy the machine. (Wall time would measure the other processes too.)
        with cpu_seconds() as spent, pytest.raises(RenderFailed) as failed:
            render_or_explain(compiled, {})
        assert spent.seconds < 1.0
        assert words in str(failed.value)


def test_the_wall_clock_is_part_of_the_budget():
    from keel.sandbox import Budget, RenderFailed, render_or_explain, sandbox

    # 10^10 loop steps: hours of work, so only the 0.05 s deadline can end the rendering. The bound is
    # wall time (the budget's own measure), loose enough for a busy machine and far below the hours.
    many_steps = "{% for a in 'x'*100000 %}{% for b in 'x'*100000 %}{{ b|upper }}{% endfor %}{% endfor %}"
    compiled = sandbox(autoescape=True).from_string(many_steps)
    started = time.monotonic()
    with pytest.raises(RenderFailed, match="longer than 0.05 s"):
        render_or_explain(compiled, {}, Budget(max_steps=10**11, max_output=10**11, seconds=0.05))
    assert time.monotonic() - started < 30.0


def test_ordinary_templates_render_as_before():
    from keel.sandbox import render_or_explain, sandbox

    text = ("{% macro b(x) %}<{{ x }}>{% endmacro %}{% for i in items %}{{ b(i) }}{% endfor %} "
            "{{ name|upper }} {{ 'a' ~ name }} {{ '%5d'|format(3) }} {{ '{:>4}'.format(1) }} "
            "{{ name|replace('o', '0') }} {{ items|join(',') }} {{ name|center(9) }} {{ '%.2f' % 1.5 }}")
    out = render_or_explain(sandbox(autoescape=False).from_string(text), {"items": [1, 2], "name": "bob"})
    assert out == "<1><2> BOB abob     3    1 b0b 1,2    bob    1.50"


def test_notification_and_connector_renders_turn_a_blown_budget_into_their_own_error():
    from keel.connectors.templates import TemplateError, render
    from keel.notify.render import NotificationTemplateError, render_text

    with pytest.raises(NotificationTemplateError, match="budget"):
        render_text(NESTED_LOOPS, {}, "notifications/x.json")
    with pytest.raises(TemplateError, match="budget"):
        render("{{ '%0999999999d' % 1 }}", {})


# ---- validation renders every template against sample data ---------------------------------------------

def _validate(path: Path) -> tuple[int, str]:
    from keel.cli import cli

    result = CliRunner().invoke(cli, ["app", "validate", str(path)])
    # the CLI reports definition errors by raising a ClickException: its message is the report
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def _goal_agility(tmp_path: Path) -> Path:
    target = tmp_path / "goal_agility"
    shutil.copytree(APPS / "goal_agility", target)
    return target


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False))


def test_the_shipped_app_still_validates(tmp_path):
    code, output = _validate(_goal_agility(tmp_path))
    assert code == 0, output


@pytest.mark.parametrize("template,words", [
    (NESTED_LOOPS, "loop steps"),
    ("{{ nosuch.x }}", "'nosuch' is undefined"),
    ("{{ record.no_such_field }}", "no_such_field"),
    ("{{ record.title.__class__ }}", "'__class__'"),
    ("{{ workflow.label.zh }} {{ record.title }} {{ instance.id }} {{ app }}", None),
])
def test_validate_renders_notification_templates_with_the_workflows_data(tmp_path, template, words):
    app = _with_outcome_message(_goal_agility(tmp_path), template)
    code, output = _validate(app)
    if words is None:
        assert code == 0, output
    else:
        assert code != 0 and "notifications/outcome.json: /body/en" in output and words in output, output


def _with_outcome_message(app: Path, body_en: str) -> Path:
    """A message the revision workflow's own notify action sends on approval (so it gets the workflow's
    data: the request record, the workflow, the instance, the decision)."""
    (app / "notifications" / "outcome.json").write_text(json.dumps(
        {"id": "outcome", "subject": {"zh": "已通过：{{ record.reason }}", "en": "Approved"},
         "body": {"zh": "{{ decider.name }}：{{ comment }}", "en": body_en}}, ensure_ascii=False))
    _edit(app / "workflows" / "revision_approval.json",
          lambda d: d["on_approved"].append({"action": "notify", "template": "outcome", "to": ["submitter"]}))
    return app


def test_a_notification_sent_by_an_sla_timer_is_checked_with_the_timers_data(tmp_path):
    app = _goal_agility(tmp_path)
    note = json.loads((app / "notifications" / "goal_changed.json").read_text())
    note.pop("context", None)  # sent by a timer, not by a plugin
    note.update(id="due_soon", subject={"zh": "到期 {{ due_at }}", "en": "Due {{ due_at }} {{ workflow_label.en }}"},
                body={"zh": "{{ record.title }}", "en": "step {{ step }}"})
    (app / "notifications" / "due_soon.json").write_text(json.dumps(note, ensure_ascii=False))
    workflow = app / "workflows" / "revision_approval.json"
    _edit(workflow, lambda d: d["steps"][0].setdefault("sla", {"working_days": 7}).update(remind_template="due_soon"))
    code, output = _validate(app)
    # a timer's message has no `record`: only the timer's own data
    assert code != 0 and "notifications/due_soon.json: /body/zh" in output and "'record' is undefined" in output
    assert "/subject" not in output and "/body/en" not in output


def _connector(app: Path) -> Path:
    path = app / "connectors" / "crm_api.json"
    path.write_text(json.dumps({"id": "crm_api", "label": {"zh": "CRM", "en": "CRM"}, "type": "http_json",
                                "secrets": ["HR_TOKEN"],
                                "config": {"url": "https://crm.example.com/actuals?since={{ vars.since }}",
                                           "headers": {"Authorization": "Bearer {{ secrets.HR_TOKEN }}"}}}))
    return path


def test_a_valid_http_connector_validates(tmp_path):
    app = _goal_agility(tmp_path)
    _connector(app)
    code, output = _validate(app)
    assert code == 0, output


@pytest.mark.parametrize("place,template,words", [
    ("url", "https://hr.example.com/{{ vars.__class__ }}", "'__class__'"),
    ("url", "https://hr.example.com/{{ nosuch.x }}", "'nosuch' is undefined"),
    ("url", "https://hr.example.com/{{ secrets.token }}", "'secrets' is undefined"),
    ("url", "https://hr.example.com/" + NESTED_LOOPS, "loop steps"),
    ("header", "Bearer {{ secrets.HR_TOKEN.__len__ }}", "'__len__'"),
])
def test_validate_checks_connector_templates_for_underscore_names_and_unknown_values(tmp_path, place, template,
                                                                                         words):
    app = _goal_agility(tmp_path)

    def change(d):
        config = d["config"]
        if place == "url":
            config["url"] = template
        else:
            config.setdefault("headers", {})["X-Test"] = template
    _edit(_connector(app), change)
    code, output = _validate(app)
    assert code != 0 and words in output, output


# ---- a template failing at run time never blocks the transition -------------------------------------------

# Every name of the sample context a notify action's template is checked with (notify.samples): the
# real context must have them all, or a template that validated would fail on every approval.
BODY = ("第六个字：{{ record.title[5] }} {{ app }} {{ workflow.id }} {{ workflow.label.zh }} #{{ instance.id }} "
        "{{ instance.status }} {{ instance.state }} {{ record.id }} {{ record.amount }} {{ decision }} "
        "{{ decider.username }} {{ decider.name }} {{ decider.id > 0 }} {{ comment }}")


@pytest.fixture
def wf_world(tmp_path, db_url):
    from keel.auth.tokens import issue_token

    app_dir = tmp_path / "wfapp"
    shutil.copytree(WF_FIXTURE, app_dir)
    # Passes validation (the sample title is long enough) and fails on a real, short title.
    _edit(app_dir / "notifications" / "expense_done.json",
          lambda d: d.update(body={"zh": BODY, "en": BODY}))
    flask_app = make_app(tmp_path, db_url)
    engine = flask_app.extensions["keel"].engine
    apply_fixture(engine, app_dir)
    with engine.begin() as conn:
        ids = build_org(conn)
        tokens = {name: issue_token(conn, uid) for name, uid in ids.items()}
    yield World(flask_app, flask_app.test_client(), engine, ids, tokens)
    engine.dispose()


def _inbox(w: World, who: str) -> list[dict]:
    return w.get("/inbox", who).get_json()["items"]


def test_a_template_failing_at_the_final_approval_falls_back_and_the_approval_commits(wf_world):
    w = wf_world
    iid = w.start("allof", "alice", title="ab")
    assert w.act(iid, "sam").status_code == 200
    r = w.act(iid, "fiona")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["status"] == "approved"
    assert w.instance(iid)["status"] == "approved"

    # the submitter got the engine's built-in text instead of the broken template
    mine = [m for m in _inbox(w, "alice") if m["template"] == "expense_done"]
    assert len(mine) == 1 and mine[0]["subject"] == f"已通过：会签 #{iid}"
    assert "第六个字" not in mine[0]["body"]
    # the administrators are told, in their inbox and in the audit trail
    alerts = [m for m in _inbox(w, "root") if "expense_done" in m["subject"]]
    assert len(alerts) == 1 and "no element 5" in alerts[0]["body"]
    with w.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT detail FROM keel_audit_events WHERE action = "
                                      "'notification.template_failed'")).scalars().all()
    assert len(events) == 1
    detail = events[0] if isinstance(events[0], dict) else json.loads(events[0])
    assert detail["template"] == "expense_done" and "no element 5" in detail["error"]


def test_the_same_template_renders_normally_on_data_it_fits(wf_world):
    w = wf_world
    iid = w.start("allof", "alice", title="Laptop bag")
    w.act(iid, "sam")
    assert w.act(iid, "fiona").get_json()["status"] == "approved"
    mine = [m for m in _inbox(w, "alice") if m["template"] == "expense_done"]
    assert mine[0]["body"] == f"第六个字：p wfapp allof_flow 会签 #{iid} approved approved 1 1200.00 approved fiona Fiona True None"
    assert not [m for m in _inbox(w, "root") if "expense_done" in m["subject"]]
