"""The tables of the workflow engine: one row per running or finished approval (an instance), one row per
approver per step visit (a task), and standing delegations. They live on the system metadata, so
`create_system_tables` creates them once `storage.db` imports this module (until then
`keel.workflow.ensure_tables` does).

An instance is pinned to the app version it started with (`app_version`): the engine always reads the
workflow definition of that version, so editing a live workflow changes nothing for requests in flight.
Due times of SLA timers are not here: the timers module keeps its own table."""
from __future__ import annotations

import sqlalchemy as sa

from keel.storage.system import metadata

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


# pending: waiting for approvers; returned: sent back to the submitter for changes (resubmit restarts it);
# approved / rejected / withdrawn: finished (a final state was entered).
INSTANCE_STATUSES = ("pending", "returned", "approved", "rejected", "withdrawn")
FINISHED = ("approved", "rejected", "withdrawn")

# waiting: a later link of a sequential chain; pending: the approver must act; the rest are done.
# transferred / escalated: the task moved to someone else (a new task row carries it on).
TASK_STATUSES = ("waiting", "pending", "approved", "rejected", "sent_back", "withdrawn", "transferred",
                 "escalated", "informed")

wf_instances = sa.Table(
    "keel_wf_instances", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("workflow", sa.String(64), nullable=False),
    sa.Column("app_version", sa.Integer(), nullable=False),  # keel_app_versions.version it is pinned to
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("record_id", sa.BigInteger(), nullable=False),
    sa.Column("submitter_id", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("state", sa.String(64), nullable=False),      # the step or state the instance is in
    # Incremented each time a step is entered; tasks carry the visit they belong to, so a step entered
    # again (send back, resubmission) starts with a clean slate while the old tasks stay on record.
    sa.Column("visit", sa.Integer(), nullable=False, server_default="0"),
    _ts("step_started_at"),
    _ts("started_at", nullable=False),
    _ts("updated_at", nullable=False),
    _ts("finished_at"),
    sa.Column("last_reminded_at", sa.DateTime(timezone=True)),
    sa.Index("ix_keel_wf_instances_record", "app", "entity", "record_id"),
    sa.Index("ix_keel_wf_instances_submitter", "submitter_id", "status"),
)

wf_tasks = sa.Table(
    "keel_wf_tasks", metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("instance_id", sa.ForeignKey("keel_wf_instances.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("visit", sa.Integer(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False, server_default="0"),  # order in a sequential chain
    sa.Column("kind", sa.String(8), nullable=False, server_default="approve"),  # approve | cc
    sa.Column("assignee_id", sa.BigInteger(), nullable=False),
    # Whom the task was first meant for, when it reached the assignee by delegation, transfer or
    # escalation (None: it was always theirs).
    sa.Column("on_behalf_of", sa.BigInteger()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("comment", sa.Text()),
    sa.Column("acted_by", sa.BigInteger()),  # the assignee, or the admin who acted for them
    _ts("created_at", nullable=False),
    _ts("acted_at"),
    sa.Index("ix_keel_wf_tasks_assignee", "assignee_id", "status"),
    sa.Index("ix_keel_wf_tasks_instance", "instance_id", "step", "visit"),
)

wf_delegations = sa.Table(
    "keel_wf_delegations", metadata,
    sa.Column("user_id", sa.ForeignKey("keel_users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("delegate_id", sa.ForeignKey("keel_users.id", ondelete="CASCADE"), nullable=False),
    _ts("until"),  # None: until withdrawn
    _ts("created_at", nullable=False),
)

WORKFLOW_TABLES = (wf_instances, wf_tasks, wf_delegations)
