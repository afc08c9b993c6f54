"""Who is acting: every read and write in Keel takes an Actor, so permission checks have one input."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    roles: frozenset[str]
    is_admin: bool = False
    department_id: int | None = None
    locale: str | None = None
    # What the write is done through, when that matters to a check: "workflow:<app>/<workflow>#<instance>"
    # for a workflow's actions (the only writer of `"changed_by": "workflow"` fields).
    via: str | None = None

    @property
    def is_system(self) -> bool:
        return self.user_id is None


# The system itself (migrations, schema sync, scheduled jobs that act for nobody). Writes by it are
# still audited, with user None and action names that say what ran.
SYSTEM = Actor(user_id=None, username="system", roles=frozenset(), is_admin=True)
WORKFLOW_VIA = "workflow:"


def workflow_actor(app_id: str, workflow_id: str, instance_id: int) -> Actor:
    """The system acting for one workflow request: what its actions write with, so a field that only a
    workflow may change (`"changed_by": "workflow"`) accepts the write and the audit trail names the request."""
    return replace(SYSTEM, via=f"{WORKFLOW_VIA}{app_id}/{workflow_id}#{instance_id}")


def acts_for_workflow(actor: Actor) -> bool:
    return bool(actor.via) and actor.via.startswith(WORKFLOW_VIA)
