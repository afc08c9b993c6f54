"""Handing work to workers. A `Dispatcher` sends `Dispatch`es (start a run; run a chunk, maybe after a
back-off) somewhere they will be executed:

- `RQDispatcher`: the RQ queue "keel" on Redis; `keel worker` processes (any number, any machine)
  take them. Retries wait in RQ's scheduled registry (`enqueue_in`): run workers with the scheduler.
- `InProcessDispatcher`: a small thread pool in this process, for an embedded set-up without Redis.

Dispatchers only deliver; correctness lives in the database (see `execute`): a duplicate or a lost
message costs time, never a double write. Hand work over with `deliver`: what the queue refuses is
marked unsent in the database, and the reaper sends it as soon as the queue takes it again."""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from keel.errors import KeelError
from keel.jobs.execute import Dispatch, JobEnv, run_chunk, start_run
from keel.jobs.reaper import reap
from keel.storage.job_tables import job_chunks, job_runs

log = logging.getLogger("keel.jobs")

QUEUE_NAME = "keel"
START_TASK = "keel.jobs.tasks.start_run_task"
CHUNK_TASK = "keel.jobs.tasks.run_chunk_task"
FAILURE_TTL = 7 * 24 * 3600
RESULT_TTL = 3600


class QueueUnavailable(KeelError):
    """Redis cannot be reached (or no queue is configured); the message says why."""

    def __str__(self) -> str:
        return f"job queue unavailable: {self.args[0] if self.args else 'unknown reason'}"


def redis_connection(url: str, timeout: float | None = 2.0):
    """A Redis client that fails fast when the server is down, instead of hanging a web request.
    Workers pass timeout=None: their blocking dequeue waits on the socket."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=timeout)


def redact(url: str) -> str:
    """A Redis URL for messages and logs: the password never appears."""
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


class Dispatcher:
    kind = "none"

    def send(self, d: Dispatch) -> None:
        raise NotImplementedError

    def send_all(self, items: list[Dispatch]) -> None:
        for d in items:
            self.send(d)

    def status(self) -> tuple[bool, str]:
        return True, self.kind


class RQDispatcher(Dispatcher):
    kind = "rq"

    def __init__(self, url: str, queue_name: str = QUEUE_NAME, connection=None):
        self.url, self.queue_name = url, queue_name
        self.connection = connection if connection is not None else redis_connection(url)
        self._queue = None

    @property
    def queue(self):
        if self._queue is None:
            from rq import Queue

            self._queue = Queue(self.queue_name, connection=self.connection)
        return self._queue

    def send(self, d: Dispatch) -> None:
        import redis

        func, args = (START_TASK, (d.run_id,)) if d.chunk is None else (CHUNK_TASK, (d.run_id, d.chunk))
        # Job ids carry the queue name, so a test (or an operator) can find and clear its own keys.
        job_id = f"{re.sub(r'[^A-Za-z0-9_-]', '_', self.queue_name)}-{uuid.uuid4().hex}"
        options = {"args": args, "job_id": job_id, "job_timeout": d.timeout, "result_ttl": RESULT_TTL,
                   "failure_ttl": FAILURE_TTL,
                   "description": f"keel run #{d.run_id}" + ("" if d.chunk is None else f" chunk {d.chunk}")}
        try:
            if d.delay > 0:
                self.queue.enqueue_in(dt.timedelta(seconds=d.delay), func, **options)
            else:
                self.queue.enqueue(func, **options)
        except redis.RedisError as e:
            raise QueueUnavailable(f"{redact(self.url)}: {e}") from e

    def status(self) -> tuple[bool, str]:
        import redis

        try:
            self.connection.ping()
            return True, "ok"
        except redis.RedisError as e:
            return False, f"{redact(self.url)}: {e}"

    def require(self) -> None:
        ok, message = self.status()
        if not ok:
            raise QueueUnavailable(message)


def deliver(env: JobEnv, dispatches: list[Dispatch], dispatcher: Dispatcher | None = None) -> QueueUnavailable | None:
    """Send `dispatches` (after the transaction that recorded them committed). When the queue refuses
    one, it and the rest are marked unsent, for the reaper to send once the queue is back; the error is
    returned (None: all sent)."""
    dispatcher = dispatcher or env.dispatcher
    for i, d in enumerate(dispatches):
        try:
            if dispatcher is None:
                raise QueueUnavailable("no job queue: KEEL_REDIS_URL is not set")
            dispatcher.send(d)
        except QueueUnavailable as e:
            mark_unsent(env, dispatches[i:])
            log.error("%s; %s run(s)/chunk(s) recorded as not sent, sent again once the queue takes them",
                      e, len(dispatches) - i)
            return e
    return None


def mark_unsent(env: JobEnv, dispatches: list[Dispatch]) -> None:
    r, c = job_runs.c, job_chunks.c
    with env.engine.begin() as conn:
        for d in dispatches:
            if d.chunk is None:
                conn.execute(job_runs.update().where(r.id == d.run_id, r.status == "queued").values(enqueued_at=None))
            else:
                conn.execute(job_chunks.update().where(c.run_id == d.run_id, c.idx == d.chunk, c.status == "queued")
                             .values(enqueued_at=None))


class InProcessDispatcher(Dispatcher):
    """Runs dispatches on a few threads of this process (no Redis). A chunk's timeout cannot be
    enforced on a thread; a chunk that overruns its lease is taken back by the reaper and its late
    result is discarded (see `execute`)."""

    kind = "in-process"

    def __init__(self, env: JobEnv, workers: int = 2):
        self.env = env
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keel-job")
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._closed = False

    def send(self, d: Dispatch) -> None:
        if self._closed:
            return
        if d.delay > 0:
            timer = threading.Timer(d.delay, self._submit, (d,))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
        else:
            self._submit(d)

    def _submit(self, d: Dispatch) -> None:
        if not self._closed:
            self._pool.submit(self._execute, d)

    def _execute(self, d: Dispatch) -> None:
        try:
            if d.chunk is None:
                self.send_all(start_run(self.env, d.run_id))
            else:
                self.send_all(run_chunk(self.env, d.run_id, d.chunk).follow_up)
        except Exception:  # a bug or the database gone: logged; the reaper re-sends later
            log.exception("in-process job dispatch %s failed", d)

    def reap(self) -> None:
        self.send_all(reap(self.env))

    def close(self, wait: bool = True) -> None:
        self._closed = True
        with self._lock:
            for t in self._timers:
                t.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=True)


def forget_queue(connection, queue_name: str) -> int:
    """Delete every Redis key RQ made for `queue_name` (its jobs carry the name, see `send`) and its
    entries in RQ's shared sets of queues and workers. For tests and benchmarks sharing one Redis; a
    queue name that is a substring of others would take those along, so use distinctive names."""
    keys = list(connection.scan_iter(match=f"*{queue_name}*", count=1000))
    if keys:
        connection.delete(*keys)
    for shared in ("rq:queues", "rq:workers"):
        members = [m for m in connection.smembers(shared) if queue_name.encode() in m]
        if members:
            connection.srem(shared, *members)
    return len(keys)
