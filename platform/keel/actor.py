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

    @property
    def is_system(self) -> bool:
        return self.user_id is None


# The system itself (migrations, schema sync, scheduled jobs that act for nobody). Writes by it are
# still audited, with user None and action names that say what ran.
SYSTEM = Actor(user_id=None, username="system", roles=frozenset(), is_admin=True)
