"""The functions RQ workers execute. They carry only ids through Redis (never a database URL or a
secret); the worker process knows its database and job types from its own configuration.

`keel worker` sets the environment with `set_worker_env` before it starts working. RQ's default worker
forks a work horse per job: the child inherits the parent's engine, whose pooled connections must not be
shared between processes, so the first use in a new process drops them (`_for_this_process`)."""
from __future__ import annotations

import os

from keel.jobs.execute import JobEnv, run_chunk, start_run
from keel.jobs.queue import deliver

_ENV: JobEnv | None = None
_PID: int | None = None


def set_worker_env(env: JobEnv) -> None:
    global _ENV, _PID
    _ENV, _PID = env, os.getpid()


class NoJobEnvironment(RuntimeError):
    """A worker process without Keel's job environment: it was started by plain `rq worker`."""


def _for_this_process() -> JobEnv:
    global _PID
    if _ENV is None:
        raise NoJobEnvironment("this worker has no Keel job environment: start workers with `keel worker` "
                               "(it connects the database and the installed job types)")
    if _PID != os.getpid():
        _ENV.engine.dispose(close=False)  # forget the parent's connections, leave them open for it
        _PID = os.getpid()
    assert _ENV is not None
    return _ENV


def _dispatcher(env: JobEnv):
    if env.dispatcher is not None:
        return env.dispatcher
    from rq import get_current_job

    from keel.jobs.queue import RQDispatcher

    job = get_current_job()
    return RQDispatcher("(worker connection)", job.origin, connection=job.connection)


def start_run_task(run_id: int) -> str:
    env = _for_this_process()
    follow_up = start_run(env, run_id)
    deliver(env, follow_up, _dispatcher(env))
    return f"{len(follow_up)} chunk(s) queued"


def run_chunk_task(run_id: int, idx: int) -> str:
    env = _for_this_process()
    outcome = run_chunk(env, run_id, idx)
    deliver(env, outcome.follow_up, _dispatcher(env))
    return outcome.status if outcome.error is None else f"{outcome.status}: {outcome.error}"
