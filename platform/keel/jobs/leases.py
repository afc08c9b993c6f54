"""A running chunk's lease: how long the process running it is trusted to be alive.

A claim leases the chunk for `lease_seconds` (3 heartbeats); a thread of the process running the chunk
renews the lease every heartbeat while the chunk runs. A killed worker stops renewing, so its chunk is
taken back (`reaper.reap`) within a lease and a reaper tick, however long the chunk's timeout. The
lease is never renewed past the hard limit of timeout + grace: a chunk still running then is taken back
as timed out, even if its process is alive (a thread cannot be stopped; its late result is discarded).

Renewing is a compare-and-set on the claim (`attempts`), so a chunk that was taken back stops being
renewed, and a renewal never resurrects it."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from keel.storage.job_tables import job_chunks

log = logging.getLogger("keel.jobs")


def hard_limit(env: Any, started: dt.datetime, timeout_seconds: float) -> dt.datetime:
    return started + dt.timedelta(seconds=timeout_seconds + env.lease_grace_seconds)


def lease_until(env: Any, now: dt.datetime, limit: dt.datetime) -> dt.datetime:
    return min(now + dt.timedelta(seconds=env.lease_seconds), limit)


def renew(conn, env: Any, run_id: int, idx: int, attempt: int, limit: dt.datetime) -> bool:
    """Extend the lease of this claim; False when the chunk is no longer this claim's."""
    c = job_chunks.c
    res = conn.execute(job_chunks.update()
                       .where(c.run_id == run_id, c.idx == idx, c.status == "running", c.attempts == attempt)
                       .values(lease_until=lease_until(env, env.clock(), limit)))
    return res.rowcount == 1


class Heartbeat:
    """Renews one claim's lease every `env.heartbeat_seconds` on a thread, while the `with` block runs."""

    def __init__(self, env: Any, run_id: int, idx: int, attempt: int, limit: dt.datetime):
        self.env, self.run_id, self.idx, self.attempt, self.limit = env, run_id, idx, attempt, limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"keel-heartbeat-{run_id}-{idx}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.env.heartbeat_seconds + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.env.heartbeat_seconds):
            if self.env.clock() >= self.limit:
                return  # past timeout + grace: let the lease run out
            try:
                with self.env.engine.begin() as conn:
                    if not renew(conn, self.env, self.run_id, self.idx, self.attempt, self.limit):
                        return  # finished, failed or taken back
            except Exception as e:  # the database busy or away for a moment: the next beat tries again
                log.warning("job run #%s chunk %s: lease not renewed: %s", self.run_id, self.idx, e)
