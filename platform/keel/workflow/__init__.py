"""The workflow engine: approvals defined in `workflows/*.json`.

    definition.py  the model of a workflow definition and its checks (`keel app validate`)
    resolvers.py   approver rules (manager_of, role, department, user, fixed; plugins add more)
    actions.py     actions on entering a state or completing a step (set_fields, create_record, notify)
    engine.py      starting an instance and every action on it, one locked transaction each
    steps.py       the machinery under the engine: entering steps, tasks per mode, finishing
    queries.py     a user's tasks, one instance with its timeline
    guards.py      what the record write path asks: frozen and approved records, workflow-kept fields
    delegation.py  standing delegation of a user's new tasks to someone else
    bulk.py        approving many tasks at once, as a background job above the definition's threshold
    notices.py     the engine's side of the inbox and the SLA timers
"""
from __future__ import annotations

import sqlalchemy as sa

from keel.storage import workflow_tables


def ensure_tables(engine: sa.Engine) -> None:
    """Create the workflow tables (a no-op once `create_system_tables` imports workflow_tables itself)."""
    workflow_tables.metadata.create_all(engine, tables=list(workflow_tables.WORKFLOW_TABLES))
