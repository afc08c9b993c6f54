"""Who is acting: every read and write in Keel takes an Actor, so permission checks have one input."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    roles: frozenset[str]
    is_admin: bool = False
    department_id: int | None = None
    locale: str | None = None
    # What acts on the user's behalf, when it is not the user at the keyboard: "job:tracker/count#12" (a
    # job's run, see `job_via`).
    # Record versions and audit events keep it, so a history names the job and run beside the user.
    via: str | None = None

    def acting_via(self, via: str) -> Actor:
        """The same actor, acting through `via` (same permissions)."""
        from dataclasses import replace

        return replace(self, via=via[:200])

    @property
    def is_system(self) -> bool:
        return self.user_id is None


# The system itself (migrations, schema sync, scheduled jobs that act for nobody). Writes by it are
# still audited, with user None and action names that say what ran.
SYSTEM = Actor(user_id=None, username="system", roles=frozenset(), is_admin=True)


def job_via(app: str, job: str, run_id: int) -> str:
    """The `via` of writes a job's run makes: "job:APP/JOB#RUN"."""
    return f"job:{app}/{job}#{run_id}"
