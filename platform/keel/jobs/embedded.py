"""Jobs without any set-up, for `keel serve` and `keel demo`.

`start_background_services(app)`:
1. KEEL_REDIS_URL set: use that Redis; start a scheduler thread here (workers run separately, e.g.
   `keel worker` or the compose file's worker service).
2. Not set, `redis-server` on PATH: start a private one on a unix socket in the instance folder (no TCP
   port, no persistence), one `keel worker` process and a scheduler thread; all stop at exit. The
   server holds a lock file in the instance folder meanwhile: a second `keel serve` on the same folder
   refuses with a message instead of replacing the first one's socket.
3. Neither: run jobs on threads of this process, with the log line "no Redis: running jobs in process".
"""
from __future__ import annotations

import atexit
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask

from keel.errors import KeelError

log = logging.getLogger("keel.jobs")
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
# The lock file each private redis-server is started under, by its process: released when it stops.
_INSTANCE_LOCKS: dict[subprocess.Popen, int] = {}


class InstanceInUse(KeelError):
    """Another Keel server runs a private redis-server for this instance folder."""


@dataclass
class BackgroundServices:
    mode: str                      # "redis" | "embedded-redis" | "in-process"
    redis_url: str | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    dispatcher: object = None

    def stop(self) -> None:
        self.stop_event.set()
        close = getattr(self.dispatcher, "close", None)
        if close is not None:
            close(wait=False)
        for p in reversed(self.processes):  # the worker before the redis-server it talks to
            _stop_process(p)
        for t in self.threads:
            t.join(timeout=5)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the server process dies, however it
    dies (even SIGKILL), so no private redis-server or worker outlives it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the atexit/SIGTERM clean-up still applies
        pass


def _stop_on_sigterm() -> None:
    """`kill` (SIGTERM) ends Python without running atexit; turn it into a normal exit so the
    services started here are stopped. Only where nobody installed a handler of their own."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _stop_process(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    lock = _INSTANCE_LOCKS.pop(p, None)
    if lock is not None:
        os.close(lock)


def _claim_instance(instance: Path) -> int:
    """Lock the instance folder's `redis.lock` (flock: the kernel releases it when this process dies, so
    a crash leaves no stale lock) and write our pid into it; InstanceInUse names the holder."""
    fd = os.open(instance / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 20).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise InstanceInUse(
            f"Keel is already running on the instance folder {instance} (pid {holder}), with its private "
            f"redis-server; stop it first, or start this one with another KEEL_INSTANCE_PATH "
            f"(or point both at one Redis with KEEL_REDIS_URL)") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    return fd


def _socket_path(instance: Path) -> Path:
    path = instance / "redis.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="keel-redis-")) / "redis.sock"


def ensure_redis(app: Flask, started: list[subprocess.Popen] | None = None) -> str | None:
    """KEEL_REDIS_URL when configured; else the URL of a private redis-server started now (stopped at
    exit; its process is appended to `started`); else None (no redis-server on PATH). InstanceInUse
    when another process runs the private redis-server of this instance folder."""
    url = app.config.get("KEEL_REDIS_URL")
    if url:
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    instance = Path(app.config["KEEL_INSTANCE_PATH"])
    lock = _claim_instance(instance)
    sock = _socket_path(instance)
    if sock.exists():
        sock.unlink()  # left by a server that did not stop cleanly (it holds no lock any more)
    try:
        proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                                 "--save", "", "--appendonly", "no", "--dir", str(sock.parent)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
                                start_new_session=True)  # see _worker_process: Ctrl+C is the server's to handle
    except OSError:
        os.close(lock)
        raise
    _INSTANCE_LOCKS[proc] = lock
    atexit.register(_stop_process, proc)
    url = f"unix://{sock}"
    if not _wait_for(url, proc):
        _stop_process(proc)
        err = proc.stderr.read().decode("utf-8", "replace")[-500:] if proc.stderr else ""
        log.error("a private redis-server did not start (%s); running jobs in process", err.strip())
        return None
    if started is not None:
        started.append(proc)
    log.info("started a private redis-server at %s (pid %s)", url, proc.pid)
    app.config["KEEL_REDIS_URL"] = url
    return url


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 10.0) -> bool:
    from keel.jobs.queue import redis_connection

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            redis_connection(url, timeout=1).ping()
            return True
        except Exception:  # not up yet
            time.sleep(0.05)
    return False


def _worker_process(app: Flask, redis_url: str) -> subprocess.Popen:
    env = dict(os.environ)
    for key in ("KEEL_DATABASE_URL", "KEEL_INSTANCE_PATH", "KEEL_APPS_PATH", "KEEL_ENV", "KEEL_JOB_QUEUE"):
        if app.config.get(key):
            env[key] = str(app.config[key])
    env["KEEL_REDIS_URL"] = redis_url
    # Quiet: it shares the terminal of `keel serve`/`demo`; runs are recorded on the jobs page anyway.
    # Its own session: Ctrl+C in the terminal reaches only the server, which then stops the worker and
    # only after it the redis-server (BackgroundServices.stop). Were they in the terminal's process group,
    # redis-server would quit at the same instant and the stopping worker would print Redis tracebacks.
    proc = subprocess.Popen([sys.executable, "-m", "keel.cli", "worker", "--quiet"], env=env,
                            preexec_fn=_die_with_parent, start_new_session=True)
    atexit.register(_stop_process, proc)
    return proc


def start_background_services(app: Flask, *, worker: bool | None = None,
                              scheduler_interval: float | None = None) -> BackgroundServices:
    """Start what runs jobs for this server (see the module doc). `worker`: start a worker process
    (default: only for a private redis-server). Returns a handle whose `stop()` ends it all."""
    from keel.jobs import jobs_env
    from keel.jobs.queue import InProcessDispatcher, RQDispatcher
    from keel.jobs.scheduler import DEFAULT_INTERVAL, Scheduler

    env = jobs_env(app)
    configured = bool(app.config.get("KEEL_REDIS_URL"))
    services = BackgroundServices(mode="redis" if configured else "embedded-redis")
    url = ensure_redis(app, services.processes)
    if url is None:
        log.warning("no Redis: running jobs in process (install redis-server or set KEEL_REDIS_URL to run "
                    "them on workers)")
        services.mode = "in-process"
        env.dispatcher = InProcessDispatcher(env)
    else:
        services.redis_url = url
        if not isinstance(env.dispatcher, RQDispatcher) or env.dispatcher.url != url:
            env.dispatcher = RQDispatcher(url, app.config.get("KEEL_JOB_QUEUE", "keel"))
        if worker if worker is not None else not configured:
            services.processes.append(_worker_process(app, url))
    services.dispatcher = env.dispatcher
    scheduler = Scheduler(env, env.dispatcher, interval=scheduler_interval or DEFAULT_INTERVAL)
    thread = threading.Thread(target=scheduler.run_forever, args=(services.stop_event,), daemon=True,
                              name="keel-scheduler")
    thread.start()
    services.threads.append(thread)
    atexit.register(services.stop)
    _stop_on_sigterm()
    return services
