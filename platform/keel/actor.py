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
    # What acts on the user's behalf, when it is not the user at the keyboard: "job:<app>/<job>#<run>" (a
    # job's run, `job_via`), "workflow:<app>/<workflow>#<instance>" (a workflow's actions, the only writer
    # of `"changed_by": "workflow"` fields). Record versions and audit events keep it, so a history names
    # the job or workflow beside the user.
    via: str | None = None

    def acting_via(self, via: str) -> Actor:
        """The same actor, acting through `via` (same permissions)."""
        return replace(self, via=via[:200])

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


def job_via(app: str, job: str, run_id: int) -> str:
    """The `via` of writes a job's run makes: "job:APP/JOB#RUN"."""
    return f"job:{app}/{job}#{run_id}"
