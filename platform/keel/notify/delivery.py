"""Delivery of inbox messages to channels outside Keel: a registry of channel types, the queue of
deliveries (table keel_deliveries) and the sender that works through it.

Why a queue in the database: a message is written to the inbox in the transaction of whatever caused
it (an approval, a timer); the outside world may only hear of it once that transaction committed, and a
robot that is down must neither lose the message nor roll back the approval. So `queue` writes pending
rows in the caller's transaction, and `deliver_pending` — called after commit (the request's teardown,
the timers job) — sends them, each claimed with a lease so two senders never both send one, a crashed
sender's claim expires, and a failure is retried with back-off until `MAX_ATTEMPTS`.

Channels come from the `keel_delivery_channels` hook (the built-ins `robot` and `email` register there
too, in notify/plugin.py); callers pass the registry they were given (`registries.delivery_channels`)."""
from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from keel.errors import KeelError
from keel.storage.notify_tables import deliveries
from keel.storage.system import users

log = logging.getLogger("keel.notify.delivery")

MAX_ATTEMPTS = 6
BACKOFF_SECONDS = (60, 300, 900, 3600, 3 * 3600)
LEASE_SECONDS = 300   # a claim older than this belongs to a sender that died: the row is due again
MAX_ERROR = 2000


class DeliveryError(KeelError):
    """A delivery that failed; `permanent` ones (bad configuration) are not retried."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class DeliveryChannel:
    """A kind of outside channel. Subclass, set `name`, and implement `targets` and `send`."""

    name: str = ""

    def config_problem(self, config: Mapping[str, Any]) -> str | None:
        """Why a channel entry of a definition is unusable (None: it is fine)."""
        return None

    def targets(self, conn: sa.Connection, config: Mapping[str, Any], recipients: list[sa.Row],
                inbox_ids: Mapping[int, int]) -> list[tuple[int | None, dict[str, Any]]]:
        """Where to send one message: (inbox id or None, target) pairs. A group channel returns one
        target; a per-person channel one per recipient (`recipients` are user rows, `inbox_ids` maps a
        user id to that user's inbox row). A target is stored as JSON: names of secrets, never secrets."""
        raise NotImplementedError

    def send(self, target: Mapping[str, Any], payload: Mapping[str, Any], settings: Mapping[str, str]) -> None:
        """Send; raise DeliveryError on failure. `settings`: configuration and secrets (environment)."""
        raise NotImplementedError


def channel_config_problem(config: Any, channels: Mapping[str, DeliveryChannel]) -> str | None:
    """Why one entry of a `channels` list is unusable with the installed `channels`; for definition
    checks and for `queue`."""
    if not isinstance(config, Mapping) or not isinstance(config.get("type"), str):
        return "a channel is an object with a `type`"
    found = channels.get(config["type"])
    if found is None:
        return f"unknown channel type '{config['type']}' (known: {', '.join(sorted(channels))})"
    return found.config_problem(config)


# -- queueing (in the sender's transaction) ------------------------------------------------------------

def queue(conn: sa.Connection, *, app: str | None, channels: Iterable[Mapping[str, Any]],
          installed: Mapping[str, DeliveryChannel], recipient_ids: list[int], inbox_ids: Mapping[int, int],
          payload: Mapping[str, Any], now: dt.datetime) -> list[int]:
    """Pending deliveries of one message on each configured channel. A channel entry that is unusable
    is logged and skipped: the inbox message itself must still be written."""
    channels = list(channels)
    if not channels:
        return []
    rows = conn.execute(sa.select(users.c.id, users.c.email, users.c.locale, users.c.display_name)
                        .where(users.c.id.in_(recipient_ids))).all() if recipient_ids else []
    values = []
    for config in channels:
        problem = channel_config_problem(config, installed)
        if problem:
            log.error("app %s: notification channel %r skipped: %s", app, dict(config), problem)
            continue
        for inbox_id, target in installed[config["type"]].targets(conn, config, rows, inbox_ids):
            values.append({"channel": config["type"], "inbox_id": inbox_id, "app": app, "target": target,
                           "payload": dict(payload), "status": "pending", "attempts": 0,
                           "next_attempt_at": now, "created_at": now})
    ids = []
    for v in values:  # one by one: the ids are needed, and RETURNING of many rows differs per dialect
        ids.append(conn.execute(deliveries.insert().values(**v)).inserted_primary_key[0])
    return ids


# -- sending (after commit) -----------------------------------------------------------------------------

def default_settings() -> Mapping[str, str]:
    return os.environ


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _claim(conn: sa.Connection, delivery_id: int, now: dt.datetime) -> sa.Row | None:
    c = deliveries.c
    claimed = conn.execute(deliveries.update()
                           .where(c.id == delivery_id, c.status == "pending", c.next_attempt_at <= now)
                           .values(attempts=c.attempts + 1,
                                   next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS)))
    if claimed.rowcount != 1:
        return None
    return conn.execute(sa.select(deliveries).where(c.id == delivery_id)).one()


def _record(conn: sa.Connection, row: sa.Row, error: DeliveryError | None, now: dt.datetime) -> str:
    c = deliveries.c
    where = sa.and_(c.id == row.id, c.attempts == row.attempts, c.status == "pending")
    if error is None:
        conn.execute(deliveries.update().where(where).values(status="sent", sent_at=now, last_error=None))
        return "sent"
    message = str(error)[:MAX_ERROR]
    if error.permanent or row.attempts >= MAX_ATTEMPTS:
        conn.execute(deliveries.update().where(where).values(status="failed", last_error=message))
        log.error("delivery #%s (%s) failed for good after %s attempt(s): %s", row.id, row.channel,
                  row.attempts, message)
        return "failed"
    delay = BACKOFF_SECONDS[min(row.attempts - 1, len(BACKOFF_SECONDS) - 1)]
    conn.execute(deliveries.update().where(where).values(
        last_error=message, next_attempt_at=now + dt.timedelta(seconds=delay)))
    log.warning("delivery #%s (%s) attempt %s failed, retry in %ss: %s", row.id, row.channel, row.attempts,
                delay, message)
    return "retry"


def _send(row: sa.Row, settings: Mapping[str, str],
          installed: Mapping[str, DeliveryChannel]) -> DeliveryError | None:
    found = installed.get(row.channel)
    if found is None:
        return DeliveryError(f"no delivery channel '{row.channel}' is installed")
    try:
        found.send(row.target, row.payload, settings)
    except DeliveryError as e:
        return e
    except Exception as e:
        log.exception("delivery channel %s raised", row.channel)
        return DeliveryError(f"{type(e).__name__}: {e}")
    return None


def deliver_pending(target: sa.Engine | sa.Connection, installed: Mapping[str, DeliveryChannel], *,
                    now: dt.datetime | None = None, settings: Mapping[str, str] | None = None,
                    ids: Iterable[int] | None = None, limit: int = 200) -> dict[str, int]:
    """Send due pending deliveries (or only `ids`) through the `installed` channels; returns counts
    {sent, retry, failed}.

    With an Engine every claim and every result is its own transaction and the sending happens outside
    any. With a Connection (a job's transaction) everything is written on it, so a rollback of that
    transaction makes the deliveries due again: sent at least once, possibly twice after a crash."""
    now = now or _now()
    settings = default_settings() if settings is None else settings
    counts = {"sent": 0, "retry": 0, "failed": 0}
    c = deliveries.c
    query = sa.select(c.id).where(c.status == "pending", c.next_attempt_at <= now).order_by(c.id).limit(limit)
    if ids is not None:
        ids = list(ids)
        if not ids:
            return counts
        query = query.where(c.id.in_(ids))
    if isinstance(target, sa.Engine):
        with target.connect() as conn:
            due = conn.execute(query).scalars().all()
        for delivery_id in due:
            with target.begin() as conn:
                row = _claim(conn, delivery_id, now)
            if row is None:
                continue
            error = _send(row, settings, installed)
            with target.begin() as conn:
                counts[_record(conn, row, error, now)] += 1
        return counts
    for delivery_id in target.execute(query).scalars().all():
        row = _claim(target, delivery_id, now)
        if row is not None:
            counts[_record(target, row, _send(row, settings, installed), now)] += 1
    return counts
