"""Hook implementations of Goal Agility's measures: the snapshot job type, the measures' tables and REST
routes, and the case's history for `keel demo` (after the goal plugin has seeded the goals: trylast)."""
from __future__ import annotations

from keel.hooks import hookimpl


@hookimpl
def keel_job_types():
    from keel_goal_agility.measure.job import GoalSnapshot

    return [GoalSnapshot()]


@hookimpl
def keel_dashboard_widgets():
    from keel_goal_agility.measure.widgets import AlignmentWidget, EffectWidget

    return [AlignmentWidget(), EffectWidget()]


@hookimpl
def keel_startup(app):
    from keel_goal_agility.measure.api import bp
    from keel_goal_agility.measure.pages import bp as pages

    # The tables are created on first use (job, route, demo): the runtime does not exist yet here.
    app.register_blueprint(bp)
    app.register_blueprint(pages)


@hookimpl(trylast=True)
def keel_demo(app, logins):
    from keel_goal_agility.measure.demo import seed_history

    seed_history(app)
