"""`keel worker`'s RQ worker. Beside taking dispatches from the queue, every heartbeat (KEEL_JOB_HEARTBEAT
_SECONDS, default 10) it takes back the work of lost workers and re-sends what the queue refused
(`reaper.reap`), so a killed worker's chunk is running again within about a minute even with no
`keel scheduler` around; and it restarts RQ's scheduler (which moves retries waiting out their back-off
into the queue) as soon as Redis is back after an outage, instead of at RQ's ten-minute maintenance.

Its name is unique per start (`unique_name`): RQ refuses a worker whose name a live-looking worker
still holds, and a container restarted after a SIGKILL comes back with the same host name and PID 1.
RQ's worker quits when Redis fails it between two dequeues; `work` starts a new one once Redis answers,
so an outage never leaves a machine without a worker."""
from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
import uuid

import redis
from rq import Worker

from keel.jobs.execute import JobEnv

log = logging.getLogger("keel.jobs")


def unique_name(prefix: str | None, queue_name: str) -> str:
    base = prefix or f"{socket.gethostname()}-{os.getpid()}-{queue_name}"
    return f"{base}-{uuid.uuid4().hex[:8]}"


class KeelWorker(Worker):
    def __init__(self, queues, env: JobEnv, **kwargs):
        beat = max(1, math.ceil(env.heartbeat_seconds))
        # RQ wakes up once per dequeue timeout (worker_ttl - 15) when idle and once per monitoring
        # interval while a job runs: both at least once a heartbeat. A Redis outage is retried with a
        # back-off capped at a heartbeat too (RQ's default grows to a minute).
        kwargs.setdefault("worker_ttl", 15 + beat)
        kwargs.setdefault("job_monitoring_interval", beat)
        super().__init__(queues, **kwargs)
        self.max_connection_wait_time = float(beat)
        self.keel_env = env
        self._keel_pid = os.getpid()
        self._keel_next_beat = 0.0

    def subscribe(self):
        """RQ's listener for commands (stop a job, shut down), waking once a second instead of once a
        minute: RQ's teardown waits for it, and an unlucky minute-long wait made a stopped worker
        overstay its container's stop timeout."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=1.0, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is None:
            self._keel_beat()
        return super().heartbeat(timeout, pipeline=pipeline)

    def maintain_heartbeats(self, job, execution):
        self._keel_beat()  # while a job runs, RQ's heartbeat goes through a pipeline: beat here
        return super().maintain_heartbeats(job, execution)

    def _keel_beat(self) -> None:
        """Reap and check RQ's scheduler, at most once a heartbeat, in this worker's own process only
        (never in the work horse it forks). Nothing here may stop the worker: failures are logged."""
        from keel.jobs.queue import deliver
        from keel.jobs.reaper import reap

        if os.getpid() != self._keel_pid or time.monotonic() < self._keel_next_beat:
            return
        self._keel_next_beat = time.monotonic() + self.keel_env.heartbeat_seconds
        try:
            dispatches = reap(self.keel_env)
            if dispatches:
                deliver(self.keel_env, dispatches)
        except Exception:
            log.exception("worker %s: taking back lost work failed; trying again next heartbeat", self.name)
        try:
            self._restart_scheduler_if_dead()
        except Exception as e:  # Redis still away: the next heartbeat tries again
            log.info("worker %s: RQ scheduler not restarted yet: %s", self.name, e)

    def _restart_scheduler_if_dead(self) -> None:
        # What RQ's own maintenance does every 10 minutes (it reads the same private attribute).
        scheduler = self.scheduler
        if scheduler is not None and (not scheduler._process or not scheduler._process.is_alive()):
            if scheduler.acquire_locks(auto_start=True):
                log.warning("worker %s: RQ scheduler restarted (it had stopped, e.g. Redis was away)", self.name)


def work(env: JobEnv, dispatcher, name_prefix: str | None, *, burst: bool = False, with_scheduler: bool = True,
         logging_level: str = "INFO") -> None:
    """Run a KeelWorker on the dispatcher's queue until it is stopped (or, with `burst`, the queue is
    empty); one that quit because Redis went away is replaced by a new one (a new name) once Redis
    answers again."""
    while True:
        env.worker_name = unique_name(name_prefix, dispatcher.queue_name)
        w = KeelWorker([dispatcher.queue], env, connection=dispatcher.connection, name=env.worker_name)
        try:
            w.work(burst=burst, with_scheduler=with_scheduler, logging_level=logging_level)
        except (redis.ConnectionError, redis.TimeoutError) as e:  # raised by RQ's teardown, Redis gone
            log.error("worker %s stopped: Redis is unreachable (%s)", w.name, e)
        if burst or w._shutdown_requested_date is not None:  # asked to stop (SIGTERM, Ctrl+C, a command)
            return
        log.warning("worker %s quit without being asked to (Redis went away?); a new worker starts once Redis "
                    "answers", w.name)
        _wait_for_redis(dispatcher.connection, env.heartbeat_seconds)


def _wait_for_redis(connection, every: float) -> None:
    # Between two workers nothing needs a warm shutdown: a SIGTERM or Ctrl+C ends the process now.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    while True:
        try:
            connection.ping()
            return
        except redis.RedisError:
            time.sleep(every)
