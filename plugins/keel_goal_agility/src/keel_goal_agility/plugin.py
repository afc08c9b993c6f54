"""Goal Agility's hook implementations: the goal tree, revisions that change the goal, the cascade, the guard,
the demo case. Each hook hands the work to the module named after it."""
from __future__ import annotations

import keel.hooks as keel_hooks
from keel.hooks import hookimpl
from keel_goal_agility import cascade, rules, writes


@hookimpl
def keel_workflow_actions():
    return [cascade.ApplyRevision(), cascade.RecordDecision()]


@hookimpl
def keel_approver_rules():
    return [rules.ManagerOfOwner()]


@hookimpl
def keel_dashboard_widgets():
    from keel_goal_agility import widgets

    return list(widgets.WIDGETS)


@hookimpl
def keel_record_before_write(event):
    writes.before_write(event)


@hookimpl
def keel_record_written(event):
    writes.fill_department(event)


@hookimpl
def keel_startup(app):
    from keel_goal_agility import api

    app.register_blueprint(api.bp)


@hookimpl
def keel_demo(app, logins):
    from keel_goal_agility import demo

    demo.seed(app)


# The approvers' panel (current → proposed and the impact) needs the workflow engine's review-panel hook;
# implemented only where the engine offers it, so this plugin loads on an engine without it.
if hasattr(keel_hooks, "keel_review_panels"):
    @hookimpl
    def keel_review_panels(conn, app, entity, record, task, actor):
        from keel_goal_agility import panels

        return panels.review_panels(conn, app, entity, record)
